"""Custom routing (`routing: <column>` on an index): the routing values a document may have been
indexed under, so that it never lives on in two shards.

Every write of a routed index carries the root row's current value of the column (the build
statement selects it beside the document: `Built.routing`), and every delete the value the
document was indexed under. The argument that no copy is left behind:

- A document is indexed under another value than its row's current one only if an UPDATE changed
  the column since (or the row was deleted, or left the `where`). That change's old row carries the
  old value: the column is among the root's `old_columns` (`routes.routing_columns`), so the
  replica-identity derivation gives the root REPLICA IDENTITY FULL unless the column is in its
  primary key, and polling's triggers record it. The batch holding the change therefore deletes
  the document under the old value (`Built.writes`) at the version of the build that writes it
  under the new one.
- The delete and the write are on two shards, each with its own versions, so their order in the
  bulk request does not matter; a crash between them leaves the batch unacknowledged, and its
  redelivery rebuilds from current rows and sends both again. A late older write under the old
  value is refused by the delete's tombstone, as for any delete (`gc_deletes`).
- A build that finds no row for an id whose batch holds no change of its root row (a child's change
  found it) has no value to delete under, and needs none: the row was deleted or filtered out by a
  transaction of an earlier batch (which deleted the document) or of a later one (which will, from
  its old row).
- A rebuild writes every document under its current value into a new generation; copies under old
  values stay behind in the old generation, which the swap retires. `flusso verify` compares the
  stored `_routing` too, and its repair deletes copies under other values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..changes import UNCHANGED, Change, DocId, Row, doc_id
from ..config import qualify

if TYPE_CHECKING:
    from ..plan import Plan

Before = dict[DocId, set[str]]


def _texts(row: Row | None, columns: Sequence[str]) -> list[str] | None:
    if row is None:
        return None
    values = [row.get(c) for c in columns]
    if any(v is None or v is UNCHANGED for v in values):
        return None
    return [v if isinstance(v, str) else str(v) for v in values]


def routed_indexes(plan: Plan) -> dict[str, tuple[str, list[str], str]]:
    """Each routed index: its root table, key and routing column."""
    return {name: (p.root, p.key, p.config.routing) for name, p in plan.indexes.items()
            if p.config.routing is not None and not p.config.depends_on}


def previous_routings(plan: Plan, changes: Sequence[Change]) -> dict[str, Before]:
    """Per routed index, the routing values the batch's changes of root rows carry, by document id:
    each image's (new and old) value under that image's key, the values a document may be indexed
    under before this batch's builds."""
    routed = routed_indexes(plan)
    out: dict[str, Before] = {}
    if not routed:
        return out
    for change in changes:
        if change.op not in ("insert", "update", "delete"):
            continue
        table = qualify(change.table)
        for index, (root, key, column) in routed.items():
            if table != root:
                continue
            for row in (change.new, change.old):
                keys, value = _texts(row, key), _texts(row, [column])
                if keys is not None and value is not None:
                    out.setdefault(index, {}).setdefault(doc_id(keys), set()).add(value[0])
    return out
