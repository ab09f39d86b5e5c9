"""Where documents go: the Sink protocol, the seeded marker and the flush report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..changes import DocId


@dataclass(frozen=True)
class SeedMarker:
    """What `_meta.flusso` records: which definition, slot and database an index was seeded from."""

    definition_hash: str
    slot: str
    system_identifier: str
    position: int = 0

    def as_meta(self) -> dict:
        return {
            "definition_hash": self.definition_hash,
            "slot": self.slot,
            "system_identifier": self.system_identifier,
            "position": self.position,
        }


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


class Sink(Protocol):
    def ensure_index(self, index: str, mapping: dict) -> None: ...
    def is_seeded(self, index: str) -> bool: ...
    def mark_seeded(self, index: str, marker: SeedMarker) -> None: ...
    def mark_unseeded(self, index: str) -> None: ...
    def recreate(self, index: str, mapping: dict) -> None: ...
    def count(self, index: str) -> int: ...
    def write(self, index: str, doc_id: DocId, doc: dict | None, version: int) -> None: ...
    def flush(self) -> FlushReport: ...
