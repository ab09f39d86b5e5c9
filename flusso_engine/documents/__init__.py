"""Turning row changes into the documents they touch, and building those documents."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..changes import Change, DocId, Position


@dataclass
class Built:
    """Documents by id (None: the root row is gone, delete it) and the snapshot's WAL position.

    A document is a dict, or the JSON text PostgreSQL wrote (a str) from a builder made with
    `raw_json`: sinks send that as it is, without parsing and serializing it again.
    """

    docs: dict[DocId, dict[str, Any] | str | None]
    position: Position
    queries: int = field(default=0)


class DocumentBuilder(Protocol):
    """Resolve changed rows to document ids, and build documents from the current rows (see
    `documents/sql/`); `mapping` and `definition_hash` come from each index's plan."""

    def mapping(self, index: str) -> dict: ...
    def definition_hash(self, index: str) -> str: ...
    def close(self) -> None: ...
    def resolve(self, changes: Sequence[Change]) -> dict[str, set[DocId]]: ...
    def build(self, index: str, ids: Collection[DocId], after: Collection[int] = ()) -> Built: ...
