"""Where changes come from: the `ChangeCapture` protocol, everything the engine asks of a capture.

A backend is a folder below this one (`wal/`, `polling/`), whose `create(context)` the registry calls for
`source.capture: <name>`. Types every part may read are here and in `slots.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..changes import Change, Position
from ..error import Problem
from .slots import SlotHealth, SlotInfo


@dataclass
class Repairs:
    """What the last `prepare` had to put right: changes may have been missed while it was wrong."""

    publication_created: bool = False  # it did not exist (or was FOR ALL TABLES) and was created
    tables_added: set[str] = field(default_factory=set)  # configured tables the publication lacked
    identity_set: set[str] = field(default_factory=set)  # tables (or a partition of them) set to FULL
    slot_advanced: bool = False  # moved past WAL it could not decode without the publication
    # any backend: table -> why its changes may have been missed (e.g. a trigger that had to be made again)
    missed: dict[str, str] = field(default_factory=dict)


@dataclass
class Findings:
    """What a backend's `checks.py` found for `flusso validate`: problems block a run; notes say what
    `run` will set up."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class ChangeCapture(Protocol):
    """Live changes in commit order (each transaction closed by a `commit` marker), the backfill's
    snapshot of root keys, and acknowledgements; plus what the engine needs to know that the source
    it follows is the one the indexes were fed from (positions, timeline, the slot's identity)."""

    repairs: Repairs  # what the last `prepare` had to put right
    verify_slot: Callable[[], None] | None  # called once the slot is held, at every (re)connect

    def prepare(self, tables: Sequence[str]) -> bool:
        """Idempotent set-up (slot, publication, replica identity); True if the slot had to be created."""
        ...

    def stream(self) -> Iterator[Change]: ...
    def snapshot(self, table: str, key: Sequence[str]) -> Iterator[Change]: ...

    def ack(self, position: Position) -> None:
        """Everything at or before `position` is durable downstream."""
        ...

    def set_limit(self, position: Position) -> None:
        """Never confirm past `position` (the slot's durable bound, `slotstate.py`)."""
        ...

    @property
    def idle(self) -> Position:
        """The furthest position an idle stream could confirm (keepalives past everything acked)."""
        ...

    def current_position(self) -> Position: ...
    def timeline(self) -> int: ...
    def slot_info(self) -> SlotInfo | None: ...
    def health(self, warn_lag: int) -> SlotHealth: ...

    # Optional: `backlog() -> slots.Backlog | None`, for a capture with a change log of its own
    # (polling): `report_lag` adds it to the lag report (the log line, Dagster's heartbeat).

    def table_fingerprints(self, tables: Sequence[str]) -> Mapping[str, Any]:
        """Each table's identity now (OID, partitions, storage): a change means rows changed unseen."""
        ...

    def drop_slot(self) -> None: ...
    def teardown(self) -> None: ...
    def close(self) -> None: ...
