"""How a row change reaches an index's documents: the routes from each table up to the root ids.

Resolve (in the SQL builder) follows them; the replica identity each table needs (which old
values the slot must send) and what capture checks in a Relation message follow from them too, so
they are derived once, in the index's plan (`flusso_engine/plan.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..catalog import Catalog
from ..config import FlussoConfig, IndexConfig, qualify
from ..keys import same_text
from .tree import Node, index_tree


@dataclass(frozen=True)
class Entry:
    """Where a changed row's values enter an index's tree: they equal `columns` of the last row of
    `path` (root first), or of `through`, the join table below it. No path: they are the root key."""

    index: str
    path: tuple[Node, ...] = ()
    columns: tuple[str, ...] = ()
    through: Node | None = None
    literal: bool = False  # the values are the root key's, only cast to print as it (a view's base table)

    @property
    def key(self) -> tuple[Any, ...]:
        """The entry's identity: changes entering at one entry share one query."""
        return (self.index, self.path[-1].path if self.path else None, self.columns, self.through is not None,
                self.literal)


@dataclass(frozen=True)
class Route:
    """Changes to `table` reach an index at `entry`, with the values of `columns` of their rows."""

    table: str
    columns: tuple[str, ...]
    entry: Entry


def _prints_as_key(catalog: Catalog, root: str, table: str, pairs: dict[str, str]) -> bool:
    """Whether the values of `table`'s columns (`pairs`: root key column -> column) are the root
    key's own text as they are (`keys.same_text`), so that they can stand for the id unqueried."""
    above, below = catalog.get(root), catalog.get(table)
    if above is None or below is None:
        return False
    return all(
        k in above.columns and c in below.columns and same_text(above.columns[k], below.columns[c])
        for k, c in pairs.items()
    )


def index_routes(name: str, index: IndexConfig, catalog: Catalog, tree: Node | None = None) -> list[Route]:
    """Every way a row change reaches this index's root ids.

    A change to the root is its own id. A change to a child is found by the parent columns its join
    values equal: when the parent is the root, those columns are its key and the child's columns
    print their values exactly as the key's do (int FK to a bigint key; not varchar to char(5), nor
    a numeric without a scale), that is the id itself; otherwise one query walks from there up to
    the root, which gives the root key's own text. A many_to_many child enters at its join
    table's child side; a change to the join table enters at the parent.
    """
    tree = tree or index_tree(index, catalog)
    by_key = Entry(name)
    routes = [] if tree.depends_on else [Route(tree.table, tuple(index.key), by_key)]

    def at_parent(ancestors: tuple[Node, ...], node: Node, table: str, columns: tuple[str, ...]) -> None:
        """`columns` of `table` pair with `node.parent_columns` of the parent (`ancestors[-1]`)."""
        pairs = dict(zip(node.parent_columns, columns, strict=True))
        at_root = len(ancestors) == 1 and set(pairs) == set(index.key)
        if at_root and _prints_as_key(catalog, tree.table, table, pairs):
            routes.append(Route(table, tuple(pairs[k] for k in index.key), by_key))
        else:
            routes.append(Route(table, columns, Entry(name, ancestors, node.parent_columns)))

    def of_view(node: Node, ancestors: tuple[Node, ...]) -> None:
        """A view's base tables instead of the view (`views.py`: onto the key the tree needs, else
        through the view's current rows)."""
        for dep in node.depends_on:
            direct = dep.onto(node.child_columns if ancestors else index.key)
            if direct is None:
                routes.append(Route(dep.table, dep.base_columns, Entry(name, (*ancestors, node), dep.view_columns)))
            elif not ancestors:
                pairs = dict(zip(index.key, direct, strict=True))
                exact = _prints_as_key(catalog, tree.table, dep.table, pairs)
                routes.append(Route(dep.table, direct, by_key if exact else Entry(name, (tree,), tuple(index.key),
                                                                                   literal=True)))
            elif node.through is None:
                at_parent(ancestors, node, dep.table, direct)
            else:
                routes.append(Route(dep.table, direct, Entry(name, ancestors, node.through.child_side, node)))

    for node, ancestors in tree.walk():
        if node.depends_on:
            of_view(node, ancestors)
            if node.through is not None:  # the join table is a table: its own changes enter as ever
                at_parent(ancestors, node, node.through.table, node.through.parent_side)
            continue
        if not ancestors:
            continue
        if node.through is None:
            at_parent(ancestors, node, node.table, node.child_columns)
        else:
            at_parent(ancestors, node, node.through.table, node.through.parent_side)
            entry = Entry(name, ancestors, node.through.child_side, node)
            routes.append(Route(node.table, node.child_columns, entry))
    return routes


def needs_full_identity(config: FlussoConfig, catalog: Catalog) -> set[str]:
    """The tables (qualified) that need REPLICA IDENTITY FULL: see `full_identity`."""
    routes = [r for name, index in config.indexes.items() for r in index_routes(name, index, catalog)]
    return full_identity(routes, catalog, routing_columns(config.indexes))


def routing_columns(indexes: Mapping[str, IndexConfig]) -> dict[str, set[str]]:
    """Per root table, the `routing` columns of the indexes rooted there. Not a route (no document is
    found by it), but its old value is needed like a route's: a document is deleted under the
    routing it was indexed under, which a root row's DELETE, or an UPDATE of the column, carries
    only in its old row (`routed.py`)."""
    out: dict[str, set[str]] = {}
    for index in indexes.values():
        if index.routing is not None and not index.depends_on:
            out.setdefault(qualify(index.table), set()).add(index.routing)
    return out


def old_columns(routes: list[Route], routed: Mapping[str, set[str]] | None = None) -> dict[str, set[str]]:
    """Per table, the columns resolve reads from its rows, the old ones too, and the `routing`
    columns (`routing_columns`) whose old values the writes need."""
    needed: dict[str, set[str]] = {}
    for route in routes:
        needed.setdefault(route.table, set()).update(route.columns)
    for table, columns in (routed or {}).items():
        needed.setdefault(table, set()).update(columns)
    return needed


def full_identity(routes: list[Route], catalog: Catalog, routed: Mapping[str, set[str]] | None = None) -> set[str]:
    """The tables (qualified) that need REPLICA IDENTITY FULL for resolve to find old parents.

    Resolve reads a changed row's join-to-parent columns (a root's key) from its old row too. With
    the default identity, pgoutput sends an UPDATE's old row only when the key changed, and a
    DELETE's with the key columns only: enough exactly when those columns are all in the primary
    key. Otherwise (`review.book_id`; `book_author.book_id` is fine: part of its key) a moved or
    deleted row's old parent would be missed. The columns a row uses to reach its own children do
    not matter: a child that moves is found from the child's own change. A table with REPLICA
    IDENTITY NOTHING sends no old row at all. A root's `routing` column counts the same way (a
document is deleted under its old value). Tables missing from the catalog are validation's.
    """
    out = set()
    for table, columns in old_columns(routes, routed).items():
        found = catalog.tables.get(table)
        if found is None:
            continue  # a view (its base tables' routes are judged instead), or missing: validation's
        columns &= found.columns.keys()  # a missing column is validation's to report
        if found.replica_identity == "n" or not columns <= set(found.primary_key):
            out.add(found.qualified)
    return out
