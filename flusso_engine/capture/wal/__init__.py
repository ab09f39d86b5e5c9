"""The WAL backend of capture: a pgoutput logical replication slot (`capture.py` says how it works).

What the rest of flusso uses is re-exported here, so `from flusso_engine.capture.wal import
WalCapture, SlotInfo, read_slot` reads the same as when this was one module.
"""

from typing import Any

from .base import Repairs
from .capture import WalCapture
from .schema import expectations
from .setup import PUBLISH
from .slot import SlotInfo, WalServer, move_slot, read_slot, remove_slot
from .snapshot import SNAPSHOT_PAGE

__all__ = [
    "PUBLISH",
    "create",
    "SNAPSHOT_PAGE",
    "Repairs",
    "SlotInfo",
    "WalCapture",
    "WalServer",
    "move_slot",
    "read_slot",
    "remove_slot",
]


def create(context: Any) -> WalCapture:
    """The capture registry's factory for `source.capture: wal` (the engine's `_make_capture` today).

    `context` carries the config, the catalog and the plan it was read against, the DSN, capture's
    own stop event and the WAL position read just before the catalog (`baseline`).
    """
    source = context.config.source
    return WalCapture(
        context.dsn,
        slot=source.slot,
        publication=source.publication,
        stop=context.capture_stop,
        full_identity=set(context.plan.full_identity),
        slot_wait_s=source.slot_wait_s,
        expected=expectations(context.plan, context.catalog),
        baseline=context.baseline,
        matviews=sorted(context.plan.matviews),
    )
