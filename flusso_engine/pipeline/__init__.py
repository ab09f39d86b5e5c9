"""The execution machinery: a capture thread feeding the bounded queue (`loop.py`), the worker that
turns each batch into flushed documents (`worker.py`), the flushes in flight (`flushes.py`), and
`drive`, which says how far the source may be acknowledged.

Everything here is stopped through `threading.Event`s, never through signals.
"""

from .flushes import Flushes, chunked
from .loop import CaptureThread, drive, handle_retrying
from .worker import Worker

__all__ = ["CaptureThread", "Flushes", "Worker", "chunked", "drive", "handle_retrying"]
