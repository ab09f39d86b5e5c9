"""The SQL document builder: resolve changes to root ids, and build documents, with generated SQL.

Each index gets one build statement (generated once): the root rows asked for, each turned into its
whole document by `json_build_object` / `json_agg` subqueries that follow the relation tree, so a
batch of ids is one round trip whatever its size or depth. Resolve walks the same joins upwards: the
join values of each changed row (old and new) become arrays, one query per place in the tree where
they enter it, never one per row.

Values from changes are compared as the column's own type (`%s::text[]::bigint[]`): pgoutput gives
the text form, and a cast keeps the foreign-key indexes usable where `col::text = ...` would not.
Root keys come back as their output function's text, the rendering pgoutput sends (`keys`), in a
session with the settings that rendering depends on pinned.
Statements are prepared on first use: they run again and again, and planning the build statement
costs a few milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.string import TextLoader

from ..capture.pgoutput import UNCHANGED
from ..catalog import Catalog
from ..changes import Change, DocId, Row, doc_id, lsn_to_int, split_doc_id
from ..config import FlussoConfig, IndexConfig, qualify, split_table
from ..error import ConfigError, Problem, SourceError
from ..keys import key_text, pin_session, same_text
from ..sinks.marker import mapping_definition_hash
from . import Built
from .mapping import index_mapping
from .tree import Node, index_tree
from .visibility import batch_xids, sees

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


def _key_text(alias: str, key: Sequence[str]) -> sql.Composable:
    """The key columns' text: what pgoutput gives for them, so `_id`s from changes and builds agree
    (`keys.key_text`)."""
    return key_text([sql.Identifier(alias, k) for k in key])


# --- build ------------------------------------------------------------------------------------------


def _document(node: Node, alias: str, aliases: _Aliases) -> sql.Composable:
    """A json object of the node's fields and relations, read from the row at `alias`."""
    pairs = [
        sql.SQL("{}, {}").format(sql.Literal(f), sql.Identifier(alias, c)) for f, c in node.fields.items()
    ]
    pairs += [
        sql.SQL("{}, {}").format(sql.Literal(c.name), _relation(c, alias, aliases)) for c in node.children
    ]
    if len(pairs) <= _MAX_PAIRS:
        return sql.SQL("json_build_object({})").format(sql.SQL(", ").join(pairs))
    chunks = [pairs[i : i + _MAX_PAIRS] for i in range(0, len(pairs), _MAX_PAIRS)]
    return sql.SQL("({})::json").format(
        sql.SQL(" || ").join(sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(c)) for c in chunks)
    )


def _relation(node: Node, parent: str, aliases: _Aliases) -> sql.Composable:
    """A correlated subquery: the child's object (NULL when none) or its ordered array (`[]` when none)."""
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


def build_statement(index: IndexConfig, catalog: Catalog) -> sql.Composed:
    """SELECT key texts..., document FROM the root WHERE its key is among the ids (one text array
    per key column)."""
    tree = index_tree(index, catalog)
    return sql.SQL("SELECT {}, {} FROM {} {} WHERE {}").format(
        _key_text(_ROOT, index.key),
        _document(tree, _ROOT, _Aliases()),
        _table(tree.table),
        sql.Identifier(_ROOT),
        _matches(catalog, tree.table, _ROOT, index.key),
    )


# --- resolve ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """Where a changed row's values enter an index's tree: they equal `columns` of the last row of
    `path` (root first), or of `through`, the join table below it. No path: they are the root key."""

    index: str
    path: tuple[Node, ...] = ()
    columns: tuple[str, ...] = ()
    through: Node | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        """The entry's identity: changes entering at one entry share one query."""
        return (self.index, self.path[-1].path if self.path else None, self.columns, self.through is not None)


@dataclass(frozen=True)
class Route:
    """Changes to `table` reach an index at `entry`, with the values of `columns` of their rows."""

    table: str
    columns: tuple[str, ...]
    entry: Entry


def _descend(path: Sequence[Node], aliases: _Aliases) -> tuple[sql.Composable, str]:
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


def _upward(index: IndexConfig, catalog: Catalog, entry: Entry) -> sql.Composed:
    """The distinct root key texts of the documents holding a row that matches the entry's values."""
    aliases = _Aliases()
    source, alias = _descend(entry.path, aliases)
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
        _key_text(_ROOT, index.key), source, _matches(catalog, table, alias, entry.columns)
    )


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


def index_routes(name: str, index: IndexConfig, catalog: Catalog) -> list[Route]:
    """Every way a row change reaches this index's root ids.

    A change to the root is its own id. A change to a child is found by the parent columns its join
    values equal: when the parent is the root, those columns are its key and the child's columns
    print their values exactly as the key's do (int FK to a bigint key; not varchar to char(5), nor
    a numeric without a scale), that is the id itself; otherwise one query walks from there up to
    the root, which gives the root key's own text. A many_to_many child enters at its join
    table's child side; a change to the join table enters at the parent.
    """
    tree = index_tree(index, catalog)
    by_key = Entry(name)
    routes = [Route(tree.table, tuple(index.key), by_key)]

    def at_parent(ancestors: tuple[Node, ...], node: Node, table: str, columns: tuple[str, ...]) -> None:
        """`columns` of `table` pair with `node.parent_columns` of the parent (`ancestors[-1]`)."""
        pairs = dict(zip(node.parent_columns, columns, strict=True))
        at_root = len(ancestors) == 1 and set(pairs) == set(index.key)
        if at_root and _prints_as_key(catalog, tree.table, table, pairs):
            routes.append(Route(table, tuple(pairs[k] for k in index.key), by_key))
        else:
            routes.append(Route(table, columns, Entry(name, ancestors, node.parent_columns)))

    for node, ancestors in tree.walk():
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
    """The tables (qualified) that need REPLICA IDENTITY FULL for resolve to find old parents.

    Resolve reads a changed row's join-to-parent columns (a root's key) from its old row too. With
    the default identity, pgoutput sends an UPDATE's old row only when the key changed, and a
    DELETE's with the key columns only: enough exactly when those columns are all in the primary
    key. Otherwise (`review.book_id`; `book_author.book_id` is fine: part of its key) a moved or
    deleted row's old parent would be missed. The columns a row uses to reach its own children do
    not matter: a child that moves is found from the child's own change. A table with REPLICA
    IDENTITY NOTHING sends no old row at all. Tables missing from the catalog are validation's.
    """
    needed: dict[str, set[str]] = {}
    for name, index in config.indexes.items():
        for route in index_routes(name, index, catalog):
            needed.setdefault(route.table, set()).update(route.columns)
    out = set()
    for table, columns in needed.items():
        found = catalog.get(table)
        if found is None:
            continue
        columns &= found.columns.keys()  # a missing column is validation's to report
        if found.replica_identity == "n" or not columns <= set(found.primary_key):
            out.add(found.qualified)
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _values(row: Row | None, columns: Sequence[str]) -> tuple[str, ...] | None:
    """The columns' values as text, or None if the row lacks one (an identity that did not send it,
    an unchanged TOASTed value: the old row has it) or one is NULL (which joins nothing)."""
    if row is None:
        return None
    out = []
    for column in columns:
        value = row.get(column)
        if value is None or value is UNCHANGED:
            return None
        out.append(_text(value))
    return tuple(out)


def _rows(change: Change) -> Iterable[Row | None]:
    """The row images that locate a change: the new row, and the old one (the parent it left)."""
    if change.op == "insert":
        return (change.new,)
    if change.op == "update":
        return (change.new, change.old)
    if change.op == "delete":
        return (change.old,)
    return ()  # commit markers; truncate is the engine's (it recreates or reseeds the index)


# --- the builder ------------------------------------------------------------------------------------


_POSITION = "SELECT pg_current_wal_lsn()::text, pg_current_snapshot()::text"
_SNAPSHOT = "SELECT pg_current_snapshot()::text"


class _Wait:
    """Retries a snapshot until it sees `xids`, with a short growing pause, for a bounded time."""

    LIMIT_S = 30.0

    def __init__(self, xids: Collection[int]) -> None:
        self.xids = xids
        self.pause = 0.0005
        self.deadline = 0.0

    def sees(self, snapshot: str) -> bool:
        if not self.xids or sees(snapshot, self.xids):
            return True
        now = time.monotonic()
        if not self.deadline:
            self.deadline = now + self.LIMIT_S
        elif now > self.deadline:
            raise SourceError(
                f"transactions {sorted(self.xids)[:5]} reached the slot but stayed invisible to new "
                f"snapshots for {self.LIMIT_S:.0f}s (snapshot {snapshot}): is the server overloaded?"
            )
        time.sleep(self.pause)
        self.pause = min(self.pause * 2, 0.05)
        return False


class SqlDocumentBuilder:
    """The DocumentBuilder over PostgreSQL. Keeps one connection of its own (from a DSN, or a function
    that opens one), reconnecting on the next call after it broke; not thread-safe (one pipeline
    worker uses it).

    Documents come back as dicts; with `raw_json` as the JSON text PostgreSQL wrote (a str), which a
    sink can put in a bulk body as is: parsing and re-serializing costs more than building them.
    `statements` counts the statements resolve and build ran, for tests and metrics: a batch costs
    the same number whatever its size.
    """

    def __init__(
        self,
        config: FlussoConfig,
        catalog: Catalog,
        connect: str | Callable[[], psycopg.Connection],
        raw_json: bool = False,
    ) -> None:
        self._config = config
        self._connect = (lambda: psycopg.connect(connect)) if isinstance(connect, str) else connect
        self._raw_json = raw_json
        self._conn: psycopg.Connection | None = None
        self._mappings = {name: index_mapping(index, catalog) for name, index in config.indexes.items()}
        self._statements = {name: build_statement(index, catalog) for name, index in config.indexes.items()}
        self._routes: dict[str, list[Route]] = {}
        self._queries: dict[tuple, sql.Composed] = {}  # by entry key; none for the root key itself
        for name, index in config.indexes.items():
            for route in index_routes(name, index, catalog):
                self._routes.setdefault(route.table, []).append(route)
                if route.entry.path and route.entry.key not in self._queries:
                    self._queries[route.entry.key] = _upward(index, catalog, route.entry)
        self.statements = 0

    def mapping(self, index: str) -> dict:
        return self._mappings[index]

    def definition_hash(self, index: str) -> str:
        digest = mapping_definition_hash(self._mappings[index])
        assert digest is not None, "index_mapping always writes the definition hash"
        return digest

    def build(self, index: str, ids: Collection[DocId], after: Collection[int] = ()) -> Built:
        """The documents for `ids` (None where the root row is gone) from one REPEATABLE READ snapshot,
        whose WAL position, read first, versions the writes. The snapshot sees every transaction in
        `after` (xids of the batch): see `visibility`."""
        key = self._config.indexes[index].key
        docs: dict[DocId, Any] = dict.fromkeys(ids)
        parts = [split_doc_id(i, len(key)) for i in docs]
        columns = [list(c) for c in zip(*(p for p in parts if len(p) == len(key)), strict=True)]
        if not columns:  # nothing asked, or no id with as many parts as the key: none can exist
            return Built(docs, 0, 0)
        waited = _Wait(after)
        while True:
            with self._session("building documents of " + index) as conn, conn.transaction():
                lsn, snapshot = conn.execute(_POSITION).fetchone()
                self.statements += 1
                if not waited.sees(snapshot):
                    continue  # leaves the transaction, takes a new snapshot
                rows = conn.execute(self._statements[index], columns, prepare=True).fetchall()
                self.statements += 1
                position = lsn_to_int(lsn)
                break
        for *key_texts, doc in rows:
            if None in key_texts:
                continue  # a NULL key has no document (validate refuses nullable keys)
            found = doc_id(key_texts)
            if found in docs:
                docs[found] = doc
        return Built(docs, position, queries=2)

    def resolve(self, changes: Sequence[Change]) -> dict[str, set[DocId]]:
        """Every index's ids that these changes can have touched: at most one query per entry point
        into a tree that the batch reaches."""
        found: dict[tuple, tuple[Entry, set[tuple[str, ...]]]] = {}
        for change in changes:
            rows = _rows(change)
            for route in self._routes.get(qualify(change.table), ()) if rows else ():
                for row in rows:
                    values = _values(row, route.columns)
                    if values is not None:
                        found.setdefault(route.entry.key, (route.entry, set()))[1].add(values)
        out: dict[str, set[DocId]] = {}
        pending = []
        for key, (entry, values) in found.items():
            if key in self._queries:
                pending.append((entry.index, self._queries[key], values))
            else:
                out.setdefault(entry.index, set()).update(doc_id(v) for v in values)
        if pending:
            with self._session("resolving changes") as conn:
                waited = _Wait(batch_xids(changes))
                while not waited.sees(conn.execute(_SNAPSHOT).fetchone()[0]):
                    self.statements += 1
                for index, query, values in pending:
                    params = [list(c) for c in zip(*values, strict=True)]
                    rows = conn.execute(query, params, prepare=True).fetchall()
                    self.statements += 1
                    out.setdefault(index, set()).update(doc_id(r) for r in rows if None not in r)
        return out

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> SqlDocumentBuilder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _session(self, doing: str) -> Iterator[psycopg.Connection]:
        """The connection (a new one if there is none or it broke); a lost connection becomes a
        SourceError, and the next call connects again."""
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self.close()
                self._conn = self._open()
            yield self._conn
        except psycopg.OperationalError as err:
            self.close()
            raise SourceError(f"PostgreSQL failed while {doing}: {err}") from err

    def _open(self) -> psycopg.Connection:
        conn = self._connect()
        conn.autocommit = True  # resolve's queries stand alone; build opens its own transaction
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        # The build statement runs its subqueries once per parent row. The planner would JIT-compile
        # it (its cost is high, its run short: compiling took longer than running at 1,000 ids) and
        # price a one-page table's seq scan, or a hash over it, below an index probe, then repeat it
        # for every row: keyed lookups (memoized) are what these queries want.
        conn.execute("SET jit = off")
        conn.execute("SET enable_seqscan = off")
        pin_session(conn)  # key texts and document values render the same in every session (`keys`)
        if self._raw_json:
            conn.adapters.register_loader("json", TextLoader)
        return conn
