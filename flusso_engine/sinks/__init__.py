"""Where documents go: the Sink protocol, the seeded marker, the write buffer and the flush report."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..changes import DocId


@dataclass(frozen=True)
class SeedMarker:
    """What `_meta.flusso` records: which definition, slot and database an index was seeded from.

    `position` is the WAL position the seeding ran at: a server whose current position is below it
    was restored from an older backup, and every later write would lose its version check.
    `tables` is each of the index's tables as the catalog said then (its OID, and its partitions'
    OIDs and storage): a table replaced under the same name, or partitions attached, detached or
    truncated since, changed rows without a change reaching the slot.

    `slot_incarnation` names the slot itself, not just its name: flusso gives a slot a new random
    incarnation whenever it cannot vouch for it (created, recreated or moved by someone else, a
    restored database; see `slotstate.py`), so a marker of an earlier incarnation reads unseeded.
    A marker written before incarnations existed has none, and reads unseeded once.
    """

    definition_hash: str
    slot: str
    system_identifier: str
    position: int = 0
    tables: Mapping[str, Any] = field(default_factory=dict, compare=False)
    slot_incarnation: str | None = None

    def as_meta(self) -> dict:
        return {
            "definition_hash": self.definition_hash,
            "slot": self.slot,
            "system_identifier": self.system_identifier,
            "position": self.position,
            "tables": dict(self.tables),
            "slot_incarnation": self.slot_incarnation,
        }

    @classmethod
    def from_meta(cls, meta: Any) -> SeedMarker | None:
        """The marker `as_meta` wrote, or None for anything else (absent, hand-edited, older layout)."""
        if not isinstance(meta, Mapping):
            return None
        try:
            return cls(
                definition_hash=str(meta["definition_hash"]),
                slot=str(meta["slot"]),
                system_identifier=str(meta["system_identifier"]),
                position=int(meta.get("position", 0)),
                tables=dict(meta["tables"]) if isinstance(meta.get("tables"), Mapping) else {},
                slot_incarnation=None if meta.get("slot_incarnation") is None else str(meta["slot_incarnation"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def same_seed(self, other: SeedMarker) -> bool:
        """Same definition, slot (name and incarnation) and database: what `is_seeded` checks (the
        position is not compared)."""
        return (self.definition_hash, self.slot, self.system_identifier, self.slot_incarnation) == (
            other.definition_hash,
            other.slot,
            other.system_identifier,
            other.slot_incarnation,
        )


@dataclass
class Rejection:
    index: str
    doc_id: DocId
    reason: str


@dataclass
class FlushReport:
    written: int = 0
    deleted: int = 0
    conflicts: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class PendingWrite:
    index: str
    doc_id: DocId
    doc: dict | str | None  # None: delete; a str is the document's JSON text
    version: int


class WriteBuffer:
    """The writes waiting for the next flush, one per (index, id).

    A document written twice before a flush is sent once: the higher version wins (the lower one
    would be refused by the version check anyway), the later write on a tie.
    """

    def __init__(self) -> None:
        self._writes: dict[tuple[str, DocId], PendingWrite] = {}

    def add(self, index: str, doc_id: DocId, doc: dict | str | None, version: int) -> None:
        key = (index, doc_id)
        old = self._writes.get(key)
        if old is None or old.version <= version:
            self._writes[key] = PendingWrite(index, doc_id, doc, version)

    def writes(self) -> list[PendingWrite]:
        return list(self._writes.values())

    def clear(self) -> None:
        self._writes.clear()

    def __len__(self) -> int:
        return len(self._writes)


class Sink(Protocol):
    """A destination of documents; see DESIGN §2 and §4.

    `is_seeded(index, expected)` takes the marker a seeded index must match (definition hash, slot,
    system identifier; not the position): the engine knows them, the sink only stores markers.

    `read_state` / `write_state` keep small documents of flusso's own (the slot's state, see
    `slotstate.py`) with compare-and-set: `write_state` with the token `read_state` returned (None:
    create) returns the new token, or None when someone else wrote the document in between.
    """

    def ensure_index(self, index: str, mapping: dict) -> None: ...
    def is_seeded(self, index: str, expected: SeedMarker) -> bool: ...
    def seed_marker(self, index: str) -> SeedMarker | None: ...
    def definition_hash(self, index: str) -> str | None: ...
    def mark_seeded(self, index: str, marker: SeedMarker) -> None: ...
    def mark_unseeded(self, index: str) -> None: ...
    def recreate(self, index: str, mapping: dict) -> None: ...
    def refresh(self, index: str) -> None: ...
    def count(self, index: str) -> int: ...
    def write(self, index: str, doc_id: DocId, doc: dict | str | None, version: int) -> None: ...
    def flush(self) -> FlushReport: ...
    def read_state(self, key: str) -> tuple[dict, Any] | None: ...
    def write_state(self, key: str, doc: dict, token: Any) -> Any | None: ...


class DetachableSink(Sink, Protocol):
    """A sink whose buffer can be handed over and sent on another thread (`detach`), so that the
    worker builds the next chunk while the last one is on the wire. Optional: a sink without it is
    flushed in line."""

    def detach(self) -> Callable[[], FlushReport]: ...
