"""Moved to `capture/wal/schema.py` (the schema-change rules are the WAL backend's).

Kept so that `from flusso_engine.capture.schema import expectations` (engine.py) still works until
the engine gets what capture needs of each table through the capture registry; delete it then.
"""

from .wal.schema import Drift, Expected, expectations

__all__ = ["Drift", "Expected", "expectations"]
