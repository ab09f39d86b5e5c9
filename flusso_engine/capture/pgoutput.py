"""The value a live change may carry for a column the server did not send, where it was first defined.

The pgoutput decoder is the WAL backend's (`capture/wal/pgoutput.py`); `UNCHANGED` is every
capture's (`changes.py`). Kept so that `from flusso_engine.capture.pgoutput import UNCHANGED` still
works; new code imports it from `flusso_engine.changes`.
"""

from ..changes import UNCHANGED, Value

__all__ = ["UNCHANGED", "Value"]
