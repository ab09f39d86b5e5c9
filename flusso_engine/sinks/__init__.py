"""Where documents go: the Sink protocol, the write buffer and the flush report; the seeded marker
and the layout of `_meta.flusso` are in `marker.py`.

The part's door: the engine and the other parts import from here (and the documents part, which
puts the definition hash into the mapping it derives, from `marker.py`), never from a backend. The
backends are folders beside it (`opensearch/`, `stdout/`), each implementing `Sink`."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..changes import DocId
from ..error import SinkError
from .marker import SeedMarker

if TYPE_CHECKING:
    from ..documents import Built

GENERATION_SEPARATOR = "__g"  # a generation of index `books` is the physical index `books__g<N>`

__all__ = [
    "GENERATION_SEPARATOR",
    "alias_of",
    "AliasMoved",
    "DeadLetter",
    "DeadLetterSink",
    "DetachableSink",
    "FlushReport",
    "GenerationSink",
    "PendingWrite",
    "Rejection",
    "SeedMarker",
    "Sink",
    "WriteBuffer",
    "write_built",
]


def alias_of(name: str) -> str:
    """The index (alias) a physical generation belongs to; any other name is returned as it is."""
    base, sep, number = name.rpartition(GENERATION_SEPARATOR)
    return base if sep and base and number.isdigit() else name


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
    routing: str | None = None  # the index's `routing` value the document goes (or went) under


class WriteBuffer:
    """The writes waiting for the next flush, one per (index, id, routing).

    A document written twice before a flush is sent once: the higher version wins (the lower one
    would be refused by the version check anyway), the later write on a tie. Under two routings
    they are two documents (two shards, each with its own version): both are sent.
    """

    def __init__(self) -> None:
        self._writes: dict[tuple[str, DocId, str | None], PendingWrite] = {}

    def add(self, index: str, doc_id: DocId, doc: dict | str | None, version: int,
            routing: str | None = None) -> None:
        key = (index, doc_id, routing)
        old = self._writes.get(key)
        if old is None or old.version <= version:
            self._writes[key] = PendingWrite(index, doc_id, doc, version, routing)

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
    def write(self, index: str, doc_id: DocId, doc: dict | str | None, version: int,
              routing: str | None = None) -> None: ...
    def flush(self) -> FlushReport: ...
    def read_state(self, key: str) -> tuple[dict, Any] | None: ...
    def write_state(self, key: str, doc: dict, token: Any) -> Any | None: ...
    def close(self) -> None: ...


def write_built(sink: Sink, index: str, built: Built, before: Mapping[DocId, Collection[str]] | None = None) -> int:
    """Buffer a build's writes into `index` (`Built.writes`: a routed document under its routing, and
    deleted under the values it was indexed under before); returns how many. A sink is given
    `routing` only when there is one, so a sink of an index without routing need not take it."""
    n = 0
    for doc_id, doc, routing in built.writes(before):
        if routing is None:
            sink.write(index, doc_id, doc, built.position)
        else:
            sink.write(index, doc_id, doc, built.position, routing)
        n += 1
    return n


class DetachableSink(Sink, Protocol):
    """A sink whose buffer can be handed over and sent on another thread (`detach`), so that the
    worker builds the next chunk while the last one is on the wire. Optional: a sink without it is
    flushed in line."""

    def detach(self) -> Callable[[], FlushReport]: ...


@dataclass(frozen=True)
class DeadLetter:
    """A rejected document as its dead letter records it (without the document itself)."""

    index: str
    doc_id: DocId
    reason: str
    failed_at: str
    letter_id: str


@runtime_checkable
class DeadLetterSink(Sink, Protocol):
    """A sink that keeps the documents it rejected (`failures.item_rejection: dead_letter`), for
    `flusso dead-letters` to list and replay. Optional: only the OpenSearch sink keeps them."""

    def dead_letters(self, index: str) -> list[DeadLetter]: ...
    def remove_dead_letters(self, index: str, letters: Sequence[DeadLetter]) -> None: ...


class AliasMoved(SinkError):
    """The alias was not where a swap expected it: someone else swapped it first."""


@runtime_checkable
class GenerationSink(Sink, Protocol):
    """A sink whose indexes are aliases over physical generations, so that a reseed builds the next
    generation beside the serving one and swaps (`generations.py`, `rebuild.py`). Optional: a sink
    without it (stdout) rebuilds in place."""

    def alias_target(self, alias: str) -> str | None: ...
    def generation_names(self, alias: str) -> dict[str, dict]: ...
    def create_generation(self, name: str, mapping: dict, generation: int) -> None: ...
    def finish_generation(self, name: str, mapping: dict) -> None: ...
    def swap_alias(self, alias: str, new: str, old: str | None) -> None: ...
    def set_generation_state(self, name: str, state: str) -> None: ...
    def delete_index(self, name: str) -> None: ...
    def read_states(self, keys: list[str]) -> dict[str, tuple[dict, Any]]: ...
