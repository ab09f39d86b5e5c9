"""What `flusso validate` checks of the documents' tables: tables, columns, keys, joins, read access.

The config names tables and columns; the catalog (`catalog.py`, read once) says what exists. Each
rule is a pure function of the two, so it reads on its own, and every problem carries the path of
the config entry it is about and ends with what to do. The server's side (settings, slot,
publication, replica identity) is the capture backend's to check (`capture/wal/checks.py`);
`validate.py` runs both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..catalog import Catalog, Column, Table
from ..config import FlussoConfig, RelationConfig, did_you_mean, qualify, relation_path, split_table
from ..config.fields import field_column
from ..error import Problem
from ..keys import KEY_FIX, key_type_problem
from .routes import index_routes, routing_columns
from .tree import index_tree

_PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_RESERVED = frozenset("all user role table select from where order group column check default".split())
_COMPARABLE_CATEGORIES = frozenset("BDINSTV")  # PostgreSQL compares across types within these


# --- the relations, with their paths in the file -----------------------------------------------


@dataclass(frozen=True)
class Edge:
    """A relation with where it sits: its path in the file and the table it hangs from."""

    path: str  # indexes.books.relations.reviews
    parent: str  # qualified table of the index root or the enclosing relation
    relation: RelationConfig

    @property
    def table(self) -> str:
        return qualify(self.relation.table)

    @property
    def through(self) -> str | None:
        return qualify(self.relation.through.table) if self.relation.through else None


def edges(config: FlussoConfig) -> Iterator[Edge]:
    """Every relation of every index, depth first, with its parent table."""

    def below(path: str, parent: str, relations: Mapping[str, RelationConfig]) -> Iterator[Edge]:
        for name, rel in relations.items():
            edge = Edge(f"{path}.relations.{name}", parent, rel)
            yield edge
            yield from below(edge.path, edge.table, rel.relations)

    for index_name, index in config.indexes.items():
        yield from below(relation_path(index_name), qualify(index.table), index.relations)


def old_row_columns(config: FlussoConfig, catalog: Catalog | None = None) -> dict[str, set[str]]:
    """For each table, the columns a change's row must carry to find its documents.

    These are the columns resolve reads of a changed row (`documents.routes.index_routes`: the same
    lookups `needs_full_identity` judges the replica identity by): a root's key, a child's join
    columns to its parent (the child side of `on`; for a many_to_many, the columns the join table
    references), a join table's parent side. A join table's child side is added too: validation
    has always refused it as a generated column and named it among the columns old rows carry.
    The roots come first, in the order `flusso validate` lists problems in. The columns depend on
    the config alone; `catalog` only settles the order of arrays, which does not matter here.
    """
    catalog = catalog if catalog is not None else Catalog()
    needed: dict[str, set[str]] = {}
    for index in config.indexes.values():
        needed.setdefault(qualify(index.table), set())
    for name, index in config.indexes.items():
        for route in index_routes(name, index, catalog):
            needed.setdefault(route.table, set()).update(route.columns)
        for node, _ in index_tree(index, catalog).walk():
            if node.through is not None:
                needed.setdefault(node.through.table, set()).update(node.through.child_side)
    for table, columns in routing_columns(config.indexes).items():
        needed.setdefault(table, set()).update(columns)
    return needed


def first_paths(config: FlussoConfig) -> dict[str, str]:
    """Each table's first place in the file, to point a problem about the table itself at."""
    paths: dict[str, str] = {}
    for index_name, index in config.indexes.items():
        paths.setdefault(qualify(index.table), f"{relation_path(index_name)}.table")
        for i, dep in enumerate(index.depends_on):
            paths.setdefault(qualify(dep.table), f"{relation_path(index_name)}.depends_on[{i}].table")
    for edge in edges(config):
        if edge.through is not None:
            paths.setdefault(edge.through, f"{edge.path}.through.table")
        paths.setdefault(edge.table, f"{edge.path}.table")
        for i, dep in enumerate(edge.relation.depends_on):
            paths.setdefault(qualify(dep.table), f"{edge.path}.depends_on[{i}].table")
    return paths


# --- tables, columns and keys ------------------------------------------------------------------


def schema_problems(config: FlussoConfig, catalog: Catalog, relations: Mapping[str, str]) -> list[Problem]:
    """Tables, columns and keys the config names but the database lacks.

    `relations` maps every qualified table and view name in the database to its kind ("table" or
    "view"), for suggestions.
    """
    problems: list[Problem] = []
    for index_name, index in config.indexes.items():
        base = relation_path(index_name)
        table = _table(catalog, relations, f"{base}.table", index.table, problems)
        if table is None:
            continue
        problems += _columns(table, f"{base}.key", index.key)
        problems += _field_columns(table, base, index.fields)
        if index.routing is not None:
            problems += _routing_problems(table, f"{base}.routing", index.routing)
        if not _missing(table, index.key):
            if table.kind == "table" and not table.is_unique(index.key):  # a view's key is its author's word
                problems.append(Problem(f"{base}.key", _not_unique(table, index.key)))
            problems += _key_problems(table, f"{base}.key", index.key)
    for edge in edges(config):
        problems += _edge_problems(edge, catalog, relations)
    problems += _generated_problems(config, catalog)
    return problems


def _generated_problems(config: FlussoConfig, catalog: Catalog) -> list[Problem]:
    """Keys and join columns that are generated: logical replication leaves them out of every
    change, so the change could not be matched to its documents."""
    paths = first_paths(config)
    problems = []
    for name, columns in old_row_columns(config, catalog).items():
        table = catalog.get(name)
        for column in sorted(columns & table.columns.keys()) if table is not None else ():
            if table.columns[column].generated:
                problems.append(
                    Problem(
                        paths[name],
                        f"{name}.{column} is a generated column, and logical replication does not send "
                        "generated columns, so changes to its rows could not be matched to their "
                        "documents: key and join on a plain column instead (one that a trigger fills, "
                        "if it must be computed)",
                    )
                )
    return problems


def _edge_problems(edge: Edge, catalog: Catalog, relations: Mapping[str, str]) -> list[Problem]:
    problems: list[Problem] = []
    rel, base = edge.relation, edge.path
    parent = catalog.get(edge.parent)
    child = _table(catalog, relations, f"{base}.table", rel.table, problems)
    if rel.through is not None:
        through = _table(catalog, relations, f"{base}.through.table", rel.through.table, problems)
        problems += _join(f"{base}.through.parent", parent, through, rel.through.parent)
        problems += _join(f"{base}.through.child", through, child, rel.through.child)
    elif rel.on:
        problems += _join(f"{base}.on", parent, child, rel.on)
    if child is None:
        return problems
    problems += _field_columns(child, base, rel.fields)
    problems += _columns(child, f"{base}.order_by", rel.order_by)
    problems += _columns(child, f"{base}.key", rel.key or [])
    if rel.is_array and not rel.key and child.kind != "table":
        problems.append(Problem(f"{base}.key", (
            f"{child.qualified} is a {child.kind}, which has no primary key to order and identify {_last(base)} "
            "by: add key: [the view columns that identify one of its rows]"
        )))
    elif rel.is_array and not rel.key and not child.primary_key:
        problems.append(
            Problem(
                f"{base}.key",
                f"{child.qualified} has no primary key to order and identify {_last(base)} by: add "
                f"key: [columns that identify a row] to this relation, or give the table a primary key "
                f"(ALTER TABLE {sql_table(child.qualified)} ADD PRIMARY KEY (...))",
            )
        )
    if not rel.is_array and rel.on and not _missing(child, rel.on.values()):
        target = list(rel.on.values())
        if child.kind == "table" and not child.is_unique(target) and not (rel.key and set(rel.key) <= set(target)):
            problems.append(
                Problem(
                    f"{base}.on",
                    f"{_cols(target)} is not unique in {child.qualified}, so several rows could match "
                    f"one {rel.type} object: add a unique index (CREATE UNIQUE INDEX ON "
                    f"{sql_table(child.qualified)} ({', '.join(map(sql_name, target))})), or make the relation an "
                    "array (one_to_many)",
                )
            )
    return problems


def _table(
    catalog: Catalog, relations: Mapping[str, str], path: str, name: str, problems: list[Problem]
) -> Table | None:
    table = catalog.get(name)
    if table is not None:
        return table
    qualified = qualify(name)
    if relations.get(qualified) == "view":
        problems.append(
            Problem(
                path,
                f"{qualified} is a view, not a table: logical replication carries tables only: "
                "name the table(s) it reads",
            )
        )
        return None
    bare = split_table(qualified)[1]
    same_name = [r for r in relations if split_table(r)[1] == bare and relations[r] == "table"]
    best = (
        same_name[0]
        if same_name
        else did_you_mean(qualified, [r for r, k in relations.items() if k == "table"])
    )
    hint = f" (did you mean {best}?)" if best else ": create it or fix the name"
    problems.append(Problem(path, f"table {qualified} does not exist{hint}"))
    return None


def _missing(table: Table, columns: Iterable[str]) -> list[str]:
    return [c for c in columns if c not in table.columns]


def _column_problem(table: Table, column: str) -> str:
    best = did_you_mean(column, table.columns)
    if best:
        return f'column "{column}" does not exist in {table.qualified} (did you mean "{best}"?)'
    shown = ", ".join(list(table.columns)[:12]) + (", ..." if len(table.columns) > 12 else "")
    return f'column "{column}" does not exist in {table.qualified}: use one of its columns ({shown})'


def _columns(table: Table, path: str, columns: Iterable[str]) -> list[Problem]:
    return [Problem(path, _column_problem(table, c)) for c in _missing(table, columns)]


def _field_columns(table: Table, base: str, fields: Mapping[str, Any]) -> list[Problem]:
    """The column a column or path field reads (an expression's are `field_checks.py`'s)."""
    return [
        Problem(f"{base}.fields.{name}" + ("" if isinstance(spec, str) else ".path"), _column_problem(table, column))
        for name, spec in fields.items()
        if (column := field_column(spec)) is not None and column not in table.columns
    ]


def _join(path: str, left: Table | None, right: Table | None, pairs: Mapping[str, str]) -> list[Problem]:
    """`pairs` maps a column of `left` to one of `right`: both must exist and be comparable."""
    problems: list[Problem] = []
    if left is not None:
        problems += _columns(left, path, pairs.keys())
    if right is not None:
        problems += _columns(right, path, pairs.values())
    if problems or left is None or right is None:
        return problems
    for a, b in pairs.items():
        ca, cb = left.columns[a], right.columns[b]
        if not _comparable(ca, cb):
            problems.append(
                Problem(
                    path,
                    f"{left.qualified}.{a} ({ca.type_name}) and {right.qualified}.{b} ({cb.type_name}) "
                    "cannot be joined, their types differ: join columns of the same type",
                )
            )
    return problems


def _comparable(a: Column, b: Column) -> bool:
    """Whether PostgreSQL can compare the two columns without a cast (int4 = int8 yes, uuid = text no)."""
    if (a.element_type is None) != (b.element_type is None):
        return False
    if a.base_type == b.base_type:
        return True
    return a.category == b.category and a.category in _COMPARABLE_CATEGORIES


def _key_problems(table: Table, path: str, key: list[str]) -> list[Problem]:
    """Key columns whose values cannot make a document id: a type without one text per value
    (`keys.key_type_problem`), or NULL allowed (a unique index lets many rows be NULL, and a NULL
    key has no id at all)."""
    problems = []
    for name in key:
        column = table.columns[name]
        reason = key_type_problem(column)
        if reason is not None:
            problems.append(
                Problem(
                    path,
                    f"{table.qualified}.{name} is {column.type_name}, which cannot be part of a document "
                    f"id ({reason}): {KEY_FIX}",
                )
            )
    # a view's columns never say NOT NULL: a view row with a NULL key simply has no document
    nullable = [c for c in key if not table.columns[c].not_null] if table.kind == "table" else []
    if nullable:
        columns = ", ".join(f"ALTER COLUMN {sql_name(c)} SET NOT NULL" for c in nullable)
        problems.append(
            Problem(
                path,
                f"{_cols(nullable)} of {table.qualified} may be NULL, and a row whose key is NULL has no "
                f"document id (a unique index lets any number of rows be NULL): make the key NOT NULL "
                f"(ALTER TABLE {sql_table(table.qualified)} {columns}) once no row holds a NULL there, or use "
                "the primary key",
            )
        )
    return problems


def _routing_problems(table: Table, path: str, column: str) -> list[Problem]:
    """`routing` names a column of the root that is never NULL (a document without a routing value
    would be refused by the index, `_routing` being required, and so would the delete of its previous
    version), of a type whose values print one way (a key's rule, `keys.py`: the old value capture
    sends must be the text the document was routed by)."""
    if column not in table.columns:
        return _columns(table, path, [column])
    found = table.columns[column]
    if (reason := key_type_problem(found)) is not None:  # its old value must print as its build's does
        return [Problem(path, f"{table.qualified}.{column} is {found.type_name}, which cannot route documents "
                              f"({reason}): route by a column of a type with one text per value (text, an "
                              "integer, uuid, date, an enum)")]
    if found.not_null:
        return []
    return [Problem(path, f'column "{column}" of {table.qualified} may be NULL, and every document needs a '
                          f"routing value: make it NOT NULL (ALTER TABLE {sql_table(table.qualified)} ALTER COLUMN "
                          f"{sql_name(column)} SET NOT NULL) once no row holds a NULL there, or route by another "
                          "column")]


def _not_unique(table: Table, key: list[str]) -> str:
    if table.primary_key:
        fix = f"use its primary key (key: [{', '.join(table.primary_key)}]), or add a unique index"
    else:
        fix = "add a primary key or a unique index"
    return (
        f"{_cols(key)} is not unique in {table.qualified} (no primary key or unique index covers it), "
        f"so two rows could claim one document id: {fix} "
        f"(CREATE UNIQUE INDEX ON {sql_table(table.qualified)} ({', '.join(map(sql_name, key))}))"
    )


def _cols(columns: Iterable[str]) -> str:
    return "(" + ", ".join(columns) + ")"


def _last(path: str) -> str:
    return path.rpartition(".")[2]


def sql_name(name: str) -> str:
    """A name as it should be typed in a hint's SQL: plain when it can be, quoted when it must be."""
    return name if _PLAIN_NAME.match(name) and name not in _RESERVED else '"' + name.replace('"', '""') + '"'


def sql_table(table: str) -> str:
    """A qualified table name as it should be typed in a hint's SQL."""
    return ".".join(map(sql_name, split_table(table)))

