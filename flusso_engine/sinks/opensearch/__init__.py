"""The OpenSearch backend of the sink part: `OpenSearchSink`, composed of the modules beside it
(see `sink.py`). Everything outside this folder imports from here."""

from .bulk import MAX_ID_BYTES
from .client import client_kwargs, redact_url
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
    "gc_deletes_s",
    "letter_id",
    "redact_url",
    "retry_window_s",
]
