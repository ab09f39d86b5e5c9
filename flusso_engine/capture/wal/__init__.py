"""The WAL backend of capture: a pgoutput logical replication slot (`capture.py` says how it works).

What the rest of flusso uses is re-exported here, so `from flusso_engine.capture.wal import
WalCapture, SlotInfo, read_slot` reads the same as when this was one module.
"""

from .base import Repairs
from .capture import WalCapture
from .setup import PUBLISH
from .slot import SlotInfo, WalServer, move_slot, read_slot, remove_slot
from .snapshot import SNAPSHOT_PAGE

__all__ = [
    "PUBLISH",
    "SNAPSHOT_PAGE",
    "Repairs",
    "SlotInfo",
    "WalCapture",
    "WalServer",
    "move_slot",
    "read_slot",
    "remove_slot",
]
