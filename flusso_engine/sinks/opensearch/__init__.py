"""The OpenSearch backend of the sink part: `OpenSearchSink`, composed of the modules beside it
(see `sink.py`). Everything outside this folder imports from here, or asks the registry for
`create` by the config's `sink.type: opensearch`."""

from __future__ import annotations

from typing import Any

from ...redact import redact_url
from .bulk import MAX_ID_BYTES
from .client import client_kwargs
from .deadletters import DEAD_LETTER_MAPPING, DEAD_LETTER_SUFFIX, DeadLetter, letter_id
from .indexes import gc_deletes_s, retry_window_s
from .sink import OpenSearchSink
from .state import STATE_MAPPING

__all__ = [
    "DEAD_LETTER_MAPPING",
    "DEAD_LETTER_SUFFIX",
    "MAX_ID_BYTES",
    "STATE_MAPPING",
    "DeadLetter",
    "OpenSearchSink",
    "client_kwargs",
    "create",
    "gc_deletes_s",
    "letter_id",
    "redact_url",
    "retry_window_s",
]


def create(context: Any) -> OpenSearchSink:
    """The registry's factory (`sink.type: opensearch`); `context` is the run's `registry.Context`.

    The client's pool holds a connection for the worker's thread and one for every flush in flight
    (`batch.flushes_in_flight`): they may all send at once, and a smaller pool throws connections
    away ("Connection pool is full") and opens them again.
    """
    return OpenSearchSink(context.config.sink, context.failures, stop=context.stop,
                          connections=context.batch.in_flight + 1)
