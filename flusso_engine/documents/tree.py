"""An index's relation tree, resolved against the catalog: the one shape build, resolve and mapping walk.

The config says how tables join in the user's terms (`on: {parent column: child column}`, `through`);
a `Node` says the same as column tuples that line up position by position, with the order of its
arrays settled, so the SQL generators never re-read the config.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..catalog import Catalog
from ..config import IndexConfig, RelationConfig, qualify
from ..config.fields import PathField, SqlField, TransformConfig, field_column
from .views import Dependency, dependencies


@dataclass(frozen=True)
class Through:
    """A many_to_many's join table: `parent_side` pairs with the parent's columns, `child_side`
    with the child's."""

    table: str
    parent_side: tuple[str, ...]
    child_side: tuple[str, ...]


@dataclass(frozen=True)
class Node:
    """The root (`relation` None, `path` ()) or one relation, with the join to its parent.

    A child row belongs to a parent row when `parent.parent_columns = child.child_columns`
    (directly, or through the join table: `parent.parent_columns = through.parent_side` and
    `through.child_side = child.child_columns`).
    """

    path: tuple[str, ...]
    table: str
    fields: dict[str, str | PathField | SqlField]
    mapping: dict[str, dict[str, Any]]
    relation: RelationConfig | None
    parent_columns: tuple[str, ...]
    child_columns: tuple[str, ...]
    through: Through | None
    order: tuple[str, ...]
    children: tuple[Node, ...]
    transform: TransformConfig | None = None
    where: str | None = None
    expression_columns: tuple[str, ...] = ()
    depends_on: tuple[Dependency, ...] = ()  # the table is a view: its base tables (`views.py`)

    @property
    def name(self) -> str:
        return self.path[-1] if self.path else ""

    @property
    def variant(self) -> str:
        """object (an object or an array of them), scalar (an array of values) or flatten."""
        return self.relation.variant if self.relation is not None else "object"

    @property
    def prefix(self) -> str:
        """A flattened relation's prefix in its parent (`<name>_` unless given)."""
        given = self.relation.prefix if self.relation is not None else None
        return given if given is not None else f"{self.name}_"

    @property
    def field_columns(self) -> list[str]:
        """The columns the fields and the `where` read: by name, and those the expressions appear to
        name (`named_columns`), so that capture's schema checks watch them too."""
        named = [c for spec in self.fields.values() if (c := field_column(spec)) is not None]
        return list(dict.fromkeys([*named, *self.expression_columns]))

    @property
    def is_array(self) -> bool:
        return self.relation is not None and self.relation.is_array

    def walk(self) -> Iterator[tuple[Node, tuple[Node, ...]]]:
        """Every node below and including this one, with its ancestors (root first)."""
        yield from _walk(self, ())


def _walk(node: Node, ancestors: tuple[Node, ...]) -> Iterator[tuple[Node, tuple[Node, ...]]]:
    yield node, ancestors
    for child in node.children:
        yield from _walk(child, (*ancestors, node))


_LITERAL = re.compile(r"'(?:[^']|'')*'")
_NAME = re.compile(r'"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*)')


def named_columns(expressions: list[str], table: str, catalog: Catalog) -> tuple[str, ...]:
    """The table's columns that the expressions name: identifiers outside string literals, not
    called as functions nor after `.` or `::` (a type). An over-estimate is harmless (capture then
    watches a column more); flusso does not parse SQL, and `flusso validate` runs each expression."""
    found = catalog.get(table)
    if found is None:
        return ()
    out: list[str] = []
    for text in expressions:
        text = _LITERAL.sub("''", text)
        for m in _NAME.finditer(text):
            name = m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2).lower()
            before, after = text[: m.start()].rstrip(), text[m.end() :].lstrip()
            if before.endswith((".", "::")) or after.startswith("("):
                continue
            if name in found.columns and name not in out:
                out.append(name)
    return tuple(out)


def _expressions(fields: dict[str, Any], where: str | None) -> list[str]:
    return [s.sql for s in fields.values() if isinstance(s, SqlField)] + ([where] if where else [])


def _order(rel: RelationConfig, catalog: Catalog) -> tuple[str, ...]:
    """`order_by`, then the child's key (relation `key`, else its primary key) so that ties, and
    arrays without an `order_by`, always come out in the same order."""
    table = catalog.get(rel.table)
    key = rel.key or (table.primary_key if table is not None else [])
    return tuple(dict.fromkeys([*rel.order_by, *key]))


def _relation_node(path: tuple[str, ...], rel: RelationConfig, catalog: Catalog) -> Node:
    if rel.through is not None:
        t = rel.through
        parent_cols, child_cols = tuple(t.parent), tuple(t.child.values())
        through = Through(qualify(t.table), tuple(t.parent.values()), tuple(t.child))
    else:
        on = rel.on or {}
        parent_cols, child_cols, through = tuple(on), tuple(on.values()), None
    return Node(
        path=path,
        table=qualify(rel.table),
        fields=dict(rel.fields),
        mapping=dict(rel.mapping),
        relation=rel,
        parent_columns=parent_cols,
        child_columns=child_cols,
        through=through,
        order=_order(rel, catalog) if rel.is_array else (),
        children=tuple(_relation_node((*path, n), r, catalog) for n, r in rel.relations.items()),
        transform=rel.transform,
        where=rel.where,
        expression_columns=named_columns(_expressions(rel.fields, rel.where), qualify(rel.table), catalog),
        depends_on=dependencies(rel.depends_on),
    )


def index_tree(index: IndexConfig, catalog: Catalog) -> Node:
    return Node(
        path=(),
        table=qualify(index.table),
        fields=dict(index.fields),
        mapping=dict(index.mapping),
        relation=None,
        parent_columns=(),
        child_columns=(),
        through=None,
        order=(),
        children=tuple(_relation_node((n,), r, catalog) for n, r in index.relations.items()),
        transform=index.transform,
        where=index.where,
        expression_columns=named_columns(_expressions(index.fields, index.where), qualify(index.table), catalog),
        depends_on=dependencies(index.depends_on),
    )
