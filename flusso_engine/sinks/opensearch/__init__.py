"""The OpenSearch backend of the sink part (see `sink.py`)."""

from .sink import (
    DEAD_LETTER_MAPPING,
    DEAD_LETTER_SUFFIX,
    MAX_ID_BYTES,
    STATE_MAPPING,
    DeadLetter,
    OpenSearchSink,
    client_kwargs,
    gc_deletes_s,
    letter_id,
    redact_url,
    retry_window_s,
)

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
