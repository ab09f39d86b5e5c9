"""Turning row changes into the documents they touch, and building those documents."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
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
    routing: dict[DocId, str | None] | None = None
    """An index with `routing`: each found root row's routing value (None for a NULL); None otherwise."""

    def writes(self, before: Mapping[DocId, Collection[str]] | None = None
               ) -> Iterator[tuple[DocId, dict[str, Any] | str | None, str | None]]:
        """What to send for each id: (id, document or None for a delete, routing).

        Without `routing`, one write per id, unrouted. With it, a document is written under its row's
        routing value, and deleted under every other value it may have been indexed under (`before`:
        the old routing values the batch's changes of the root row carry, or the stored copies'):
        a document whose routing value changed would otherwise live on in two shards. A delete goes
        under those values and the row's own (a plugin dropped the document); with no value known
        there is nothing to delete under (`documents/routed.py` says why that loses nothing).
        """
        for doc_id, doc in self.docs.items():
            if self.routing is None:
                yield doc_id, doc, None
                continue
            now = self.routing.get(doc_id)
            stale = set((before or {}).get(doc_id, ()))
            if doc is None and now is not None:
                stale.add(now)
            elif doc is not None:
                stale.discard(now)  # type: ignore[arg-type]
            for old in sorted(stale):
                yield doc_id, None, old
            if doc is not None:
                yield doc_id, doc, now


class DocumentBuilder(Protocol):
    """Resolve changed rows to document ids, and build documents from the current rows (see
    `documents/sql/`); `mapping` and `definition_hash` come from each index's plan."""

    def mapping(self, index: str) -> dict: ...
    def definition_hash(self, index: str) -> str: ...
    def close(self) -> None: ...
    def resolve(self, changes: Sequence[Change]) -> dict[str, set[DocId]]: ...
    def build(self, index: str, ids: Collection[DocId], after: Collection[int] = ()) -> Built: ...
