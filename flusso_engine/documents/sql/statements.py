"""The SQL that builds documents and walks changes up to their roots, generated from an index's plan.

Each index gets one build statement: the root rows asked for, each turned into its whole document by
`json_build_object` / `json_agg` subqueries that follow the relation tree, so a batch of ids is one
round trip whatever its size or depth. Resolve walks the same joins upwards (`upward`): the join
values of each changed row become arrays, one query per place in the tree where they enter it.

Values from changes are compared as the column's own type (`%s::text[]::bigint[]`): pgoutput gives
the text form, and a cast keeps the foreign-key indexes usable where `col::text = ...` would not.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

from ...catalog import Catalog
from ...config import IndexConfig, qualify, split_table
from ...error import ConfigError, Problem
from ...keys import key_text
from .. import shape
from ..mapping import FINGERPRINT
from ..routes import Entry
from ..tree import Node, index_tree
from . import values

_MAX_PAIRS = 50  # json_build_object takes at most 100 arguments
_ROOT = "r"


class _Aliases:
    """Table aliases unique within one statement (a table can appear at several depths)."""

    def __init__(self) -> None:
        self._n = 0

    def __call__(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"


def _table(name: str) -> sql.Identifier:
    return sql.Identifier(*split_table(name))


def _column_type(catalog: Catalog, table: str, column: str) -> sql.Composable:
    """The column's type as SQL, to cast text values to. format_type()'s output, which the server
    quotes itself where a name needs it (`character varying(17)`, `"My Type"`)."""
    found = catalog.get(table)
    if found is None or column not in found.columns:
        raise ConfigError(
            [Problem("", f'column "{column}" of {table} is not in the database: run `flusso validate`')]
        )
    return sql.SQL(found.columns[column].type_name)


def _equal(left: str, left_cols: Sequence[str], right: str, right_cols: Sequence[str]) -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, a), sql.Identifier(right, b))
        for a, b in zip(left_cols, right_cols, strict=True)
    )


def _matches(catalog: Catalog, table: str, alias: str, columns: Sequence[str]) -> sql.Composable:
    """`alias.columns` equal one of the tuples passed as one text array per column."""
    arrays = [
        sql.SQL("{}::text[]::{}[]").format(sql.Placeholder(), _column_type(catalog, table, c))
        for c in columns
    ]
    if len(columns) == 1:
        return sql.SQL("{} = ANY({})").format(sql.Identifier(alias, columns[0]), arrays[0])
    return sql.SQL("({}) IN (SELECT * FROM unnest({}))").format(
        sql.SQL(", ").join(sql.Identifier(alias, c) for c in columns), sql.SQL(", ").join(arrays)
    )


def key_columns_text(alias: str, key: Sequence[str]) -> sql.Composable:
    """The key columns' text: what pgoutput gives for them, so `_id`s from changes and builds agree
    (`keys.key_text`)."""
    return key_text([sql.Identifier(alias, k) for k in key])


# --- build ------------------------------------------------------------------------------------------


def _object(pairs: list[sql.Composable]) -> sql.Composable:
    """json_build_object of (name, value) pairs, in jsonb chunks past its argument limit."""
    if len(pairs) <= _MAX_PAIRS:
        return sql.SQL("json_build_object({})").format(sql.SQL(", ").join(pairs))
    chunks = [pairs[i : i + _MAX_PAIRS] for i in range(0, len(pairs), _MAX_PAIRS)]
    return sql.SQL("({})::json").format(
        sql.SQL(" || ").join(sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(c)) for c in chunks)
    )


def _pairs(node: Node, alias: str, aliases: _Aliases) -> list[tuple[str, sql.Composable]]:
    """The node's (name, value) pairs read from the row at `alias` (`shape.items`, in order)."""
    fields = shape.values(node)

    def of(items: Sequence[shape.Item]) -> list[tuple[str, sql.Composable]]:
        out: list[tuple[str, sql.Composable]] = []
        for item in items:
            if isinstance(item, shape.Value):
                out.append((item.name, values.value(item, alias, fields)[0]))
            elif isinstance(item, shape.Obj):
                out.append((item.name, _object(_composed(of(item.items)))))
            elif isinstance(item, shape.Child):
                out.append((item.name, _relation(item.node, alias, aliases)))
            else:  # flattened: each of the child's pairs, read from its one row (null without one)
                child, source, where = _source(item.node, alias, aliases)
                out += [
                    (item.prefix + name, sql.SQL("(SELECT {} FROM {} WHERE {})").format(expr, source, where))
                    for name, expr in _pairs(item.node, child, aliases)
                ]
        return out

    return of(shape.items(node))


def _composed(pairs: list[tuple[str, sql.Composable]]) -> list[sql.Composable]:
    return [sql.SQL("{}, {}").format(sql.Literal(name), expr) for name, expr in pairs]


def _document(node: Node, alias: str, aliases: _Aliases) -> sql.Composable:
    """A json object of the node's fields and relations, read from the row at `alias`."""
    return _object(_composed(_pairs(node, alias, aliases)))


def _source(node: Node, parent: str, aliases: _Aliases) -> tuple[str, sql.Composable, sql.Composable]:
    """The child's alias, its FROM (through its join table for a many_to_many) and the WHERE that
    correlates it with the parent row at `parent`."""
    alias = aliases("c")
    if node.through is not None:
        link = aliases("t")
        source = sql.SQL("{} {} JOIN {} {} ON {}").format(
            _table(node.through.table),
            sql.Identifier(link),
            _table(node.table),
            sql.Identifier(alias),
            _equal(alias, node.child_columns, link, node.through.child_side),
        )
        where = _equal(link, node.through.parent_side, parent, node.parent_columns)
    else:
        source = sql.SQL("{} {}").format(_table(node.table), sql.Identifier(alias))
        where = _equal(alias, node.child_columns, parent, node.parent_columns)
    return alias, source, _filtered(where, node, alias)


def _filtered(where: sql.Composable, node: Node, alias: str) -> sql.Composable:
    """`where` and the node's `where:` filter, over its row at `alias` alone (`values.own_row`)."""
    if node.where is None:
        return where
    return sql.SQL("{} AND {}").format(where, values.own_row(node.where, alias))


def _relation(node: Node, parent: str, aliases: _Aliases) -> sql.Composable:
    """A correlated subquery: the child's object (NULL when none) or its ordered array (`[]` when
    none) of objects, or of its one field's values (`variant: scalar`)."""
    alias, source, where = _source(node, parent, aliases)
    if node.variant == "scalar":
        one = shape.scalar_value(node)
        document = values.value(one, alias, shape.values(node))[0]
    else:
        document = _document(node, alias, aliases)
    if not node.is_array:
        return sql.SQL("(SELECT {} FROM {} WHERE {})").format(document, source, where)
    order = sql.SQL("")
    if node.order:
        order = sql.SQL(" ORDER BY {}").format(
            sql.SQL(", ").join(sql.Identifier(alias, c) for c in node.order)
        )
    return sql.SQL("COALESCE((SELECT json_agg({}{}) FROM {} WHERE {}), '[]'::json)").format(
        document, order, source, where
    )


_TEXT = "d"  # the lateral subquery holding a document's JSON text


def _fingerprinted() -> sql.Composable:
    """The document with its fingerprint (`FINGERPRINT`, the md5 of the text without it) as its first
    field: spliced into the text, so the document is written once and never re-parsed."""
    text = sql.Identifier(_TEXT, "t")
    return sql.SQL(
        "('{{\"' || {field} || '\":\"' || md5({t}) || '\"' "
        "|| CASE WHEN {t} = '{{}}' THEN '}}' ELSE ', ' || substr({t}, 2) END)::json"
    ).format(field=sql.Literal(FINGERPRINT), t=text)


def _from_root(index: IndexConfig, tree: Node) -> sql.Composable:
    """The root table and, beside each row, its document's text (`d.t`), made once: `OFFSET 0` keeps
    the planner from pulling the subquery up into the select list, where each of the fingerprint's
    three uses of `d.t` would build the whole document again (three times the build's cost)."""
    return sql.SQL("{} {} CROSS JOIN LATERAL (SELECT ({})::text AS t OFFSET 0) {}").format(
        _table(tree.table), sql.Identifier(_ROOT), _document(tree, _ROOT, _Aliases()), sql.Identifier(_TEXT)
    )


def _routing(index: IndexConfig) -> sql.Composable:
    """The `routing` column's text (its output function's, as capture sends it), before the document."""
    if index.routing is None:
        return sql.SQL("")
    return sql.SQL("{}, ").format(key_text([sql.Identifier(_ROOT, index.routing)]))


def build_statement(index: IndexConfig, catalog: Catalog, tree: Node | None = None) -> sql.Composed:
    """SELECT key texts..., [routing text,] document (with its fingerprint) FROM the root WHERE its key
    is among the ids (one text array per key column)."""
    tree = tree or index_tree(index, catalog)
    return sql.SQL("SELECT {}, {}{} FROM {} WHERE {}").format(
        key_columns_text(_ROOT, index.key),
        _routing(index),
        _fingerprinted(),
        _from_root(index, tree),
        _filtered(_matches(catalog, tree.table, _ROOT, index.key), tree, _ROOT),
    )


def fingerprint_statement(index: IndexConfig, catalog: Catalog, tree: Node | None = None) -> sql.Composed:
    """What `build_statement` selects, with the fingerprint alone in place of the document: what
    `flusso verify` compares with the documents' stored fingerprints, without shipping documents. A
    routed index's is `<md5> <routing>`, as verify reads a stored document's (`verify/search.py`)."""
    tree = tree or index_tree(index, catalog)
    fingerprint = sql.SQL("md5({})").format(sql.Identifier(_TEXT, "t"))
    if index.routing is not None:
        fingerprint = sql.SQL("concat({}, ' ', {})").format(fingerprint, sql.Identifier(_ROOT, index.routing))
    return sql.SQL("SELECT {}, {} FROM {} WHERE {}").format(
        key_columns_text(_ROOT, index.key),
        fingerprint,
        _from_root(index, tree),
        _filtered(_matches(catalog, tree.table, _ROOT, index.key), tree, _ROOT),
    )


def key_page_statement(index: IndexConfig, catalog: Catalog, after: bool) -> sql.Composed:
    """One keyset page of the root's key texts in key order (`after`: those past the last page's key,
    passed as one text per key column); the limit is the last parameter."""
    table = qualify(index.table)
    columns = sql.SQL(", ").join(sql.Identifier(_ROOT, k) for k in index.key)
    conditions = [] if index.where is None else [values.own_row(index.where, _ROOT)]
    if after:
        conditions.insert(0, sql.SQL("({}) > ({})").format(
            columns,
            sql.SQL(", ").join(
                sql.SQL("{}::text::{}").format(sql.Placeholder(), _column_type(catalog, table, k)) for k in index.key
            ),
        ))
    where = sql.SQL(" WHERE {}").format(sql.SQL(" AND ").join(conditions)) if conditions else sql.SQL("")
    return sql.SQL("SELECT {} FROM {} {}{} ORDER BY {} LIMIT {}").format(
        key_columns_text(_ROOT, index.key), _table(table), sql.Identifier(_ROOT), where, columns, sql.Placeholder()
    )


def sample_statement(index: IndexConfig, view: bool = False) -> sql.Composed:
    """The key texts of about `%s` percent of the root's rows (Bernoulli; those its `where` keeps), in
    random order, at most `%s`. A view takes no TABLESAMPLE: its rows are drawn by `random()`."""
    conditions = [] if index.where is None else [values.own_row(index.where, _ROOT)]
    sample = sql.SQL(" TABLESAMPLE BERNOULLI ({})").format(sql.Placeholder())
    if view:
        sample = sql.SQL("")
        conditions.insert(0, sql.SQL("random() * 100 < {}").format(sql.Placeholder()))
    where = sql.SQL(" WHERE {}").format(sql.SQL(" AND ").join(conditions)) if conditions else sql.SQL("")
    return sql.SQL("SELECT {} FROM {} {}{}{} ORDER BY random() LIMIT {}").format(
        key_columns_text(_ROOT, index.key),
        _table(qualify(index.table)),
        sql.Identifier(_ROOT),
        sample,
        where,
        sql.Placeholder(),
    )


# --- resolve ----------------------------------------------------------------------------------------


def descend(path: Sequence[Node], aliases: _Aliases) -> tuple[sql.Composable, str]:
    """FROM the root JOIN down to the last node of `path`; returns the clause and that node's alias."""
    parts: list[sql.Composable] = [sql.SQL("{} {}").format(_table(path[0].table), sql.Identifier(_ROOT))]
    above = _ROOT
    for node in path[1:]:
        alias = aliases("c")
        if node.through is not None:
            link = aliases("t")
            parts.append(
                sql.SQL("JOIN {} {} ON {}").format(
                    _table(node.through.table),
                    sql.Identifier(link),
                    _equal(link, node.through.parent_side, above, node.parent_columns),
                )
            )
            on = _equal(alias, node.child_columns, link, node.through.child_side)
        else:
            on = _equal(alias, node.child_columns, above, node.parent_columns)
        parts.append(sql.SQL("JOIN {} {} ON {}").format(_table(node.table), sql.Identifier(alias), on))
        above = alias
    return sql.SQL(" ").join(parts), above


def upward(index: IndexConfig, catalog: Catalog, entry: Entry) -> sql.Composed:
    """The distinct root key texts of the documents holding a row that matches the entry's values."""
    aliases = _Aliases()
    source, alias = descend(entry.path, aliases)
    table = entry.path[-1].table
    if entry.through is not None and entry.through.through is not None:
        link, through = aliases("t"), entry.through.through
        source = sql.SQL("{} JOIN {} {} ON {}").format(
            source,
            _table(through.table),
            sql.Identifier(link),
            _equal(link, through.parent_side, alias, entry.through.parent_columns),
        )
        alias, table = link, through.table
    return sql.SQL("SELECT DISTINCT {} FROM {} WHERE {}").format(
        key_columns_text(_ROOT, index.key), source, _matches(catalog, table, alias, entry.columns)
    )


def literal_ids(index: IndexConfig, catalog: Catalog, entry: Entry) -> sql.Composed:
    """The root key texts of the values given (a view's base-table columns mapped onto its key),
    cast to the key's types so that they print as the key does: the view is not read, so a row
    that left it is still found (`documents/views.py`)."""
    table = entry.path[0].table
    arrays = [sql.SQL("{}::text[]::{}[]").format(sql.Placeholder(), _column_type(catalog, table, k)) for k in index.key]
    return sql.SQL("SELECT DISTINCT {} FROM unnest({}) AS {}({})").format(
        key_columns_text(_ROOT, index.key),
        sql.SQL(", ").join(arrays),
        sql.Identifier(_ROOT),
        sql.SQL(", ").join(sql.Identifier(k) for k in index.key),
    )
