"""`SqlDocumentBuilder`: resolve changes to root ids, and build documents, with the statements of
`statements.py`, prepared on first use (they run again and again, and planning the build statement
costs a few milliseconds)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.string import TextLoader

from ...catalog import Catalog
from ...changes import UNCHANGED, Change, DocId, Position, Row, doc_id, lsn_to_int, split_doc_id
from ...config import FlussoConfig, qualify
from ...error import SourceError
from ...keys import pin_session
from ...plan import Plan, make_plan
from .. import Built
from ..routes import Entry, Route
from ..visibility import batch_xids, sees
from .shared import Exported, SharedSnapshots
from .statements import (
    build_statement,
    fingerprint_statement,
    key_page_statement,
    literal_ids,
    sample_statement,
    upward,
)


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


def _found(docs: dict[DocId, Any], rows: Iterable[Sequence[Any]], position: Position, queries: int,
           routed: bool) -> Built:
    """`docs` (every id asked, None) filled with the documents the build statement returned; with
    `routed`, each row's routing value (selected before its document) too."""
    routing: dict[DocId, str | None] | None = {} if routed else None
    for *key_texts, doc in rows:
        value = key_texts.pop() if routed else None
        if None in key_texts:
            continue  # a NULL key has no document (validate refuses nullable keys)
        found = doc_id(key_texts)
        if found in docs:
            docs[found] = doc
            if routing is not None:
                routing[found] = value
    return Built(docs, position, queries=queries, routing=routing)


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
        plan: Plan | None = None,
    ) -> None:
        self._config = config
        self._connect = (lambda: psycopg.connect(connect)) if isinstance(connect, str) else connect
        self._raw_json = raw_json
        self._conn: psycopg.Connection | None = None
        self.plan = plan or make_plan(config, catalog)
        self._statements = {name: build_statement(p.config, catalog, p.tree) for name, p in self.plan.indexes.items()}
        self._routed = {name for name, p in self.plan.indexes.items() if p.config.routing is not None}
        self._catalog = catalog
        self._fingerprints: dict[str, sql.Composed] = {}  # made on first use: only `verify` needs them
        self._routes: dict[str, list[Route]] = {}
        self._queries: dict[tuple, sql.Composed] = {}  # by entry key; none for the root key itself
        for p in self.plan.indexes.values():
            for route in p.routes:
                self._routes.setdefault(route.table, []).append(route)
                if route.entry.path and route.entry.key not in self._queries:
                    query = literal_ids if route.entry.literal else upward
                    self._queries[route.entry.key] = query(p.config, catalog, route.entry)
        self.statements = 0

    def mapping(self, index: str) -> dict:
        return self.plan.index(index).mapping

    def definition_hash(self, index: str) -> str:
        return self.plan.index(index).definition_hash

    def build(self, index: str, ids: Collection[DocId], after: Collection[int] = ()) -> Built:
        """The documents for `ids` (None where the root row is gone) from one REPEATABLE READ snapshot,
        whose WAL position, read first, versions the writes. The snapshot sees every transaction in
        `after` (xids of the batch): see `visibility`."""
        docs: dict[DocId, Any] = dict.fromkeys(ids)
        columns = self._columns(index, docs)
        if not columns:  # nothing asked, or no id with as many parts as the key: none can exist
            return Built(docs, 0, 0, routing={} if index in self._routed else None)
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
        return _found(docs, rows, position, 2, index in self._routed)

    # --- building from a shared snapshot (a parallel backfill: `shared.py`) ----------------------------

    def fork(self) -> SqlDocumentBuilder:
        """Another builder with the same plan and statements and a connection of its own, for
        another thread."""
        other = copy.copy(self)
        other._conn, other.statements, other._fingerprints = None, 0, {}
        return other

    def shared_snapshots(self) -> SharedSnapshots:
        """Exported snapshots for `build_in` and `key_page` on any fork (see `shared.py`)."""
        return SharedSnapshots(self._connect)

    def build_in(self, snapshot: Exported, index: str, ids: Collection[DocId]) -> Built:
        """`build` from the exported `snapshot` (imported in a short transaction), versioned by its
        position."""
        docs: dict[DocId, Any] = dict.fromkeys(ids)
        columns = self._columns(index, docs)
        if not columns:
            return Built(docs, snapshot.position, 0, routing={} if index in self._routed else None)
        with self._in(snapshot, "building documents of " + index) as conn:
            rows = conn.execute(self._statements[index], columns, prepare=True).fetchall()
        self.statements += 2
        return _found(docs, rows, snapshot.position, 2, index in self._routed)

    @contextmanager
    def _in(self, snapshot: Exported, doing: str) -> Iterator[psycopg.Connection]:
        with self._session(doing) as conn, conn.transaction():
            try:
                conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot.id)))
            except psycopg.errors.InvalidParameterValue as err:  # its exporter is gone
                raise SourceError(f"the backfill's shared snapshot {snapshot.id} is gone ({err}): "
                                  "taking another") from err
            yield conn

    def _columns(self, index: str, docs: Collection[DocId]) -> list[list[str]]:
        key = self._config.indexes[index].key
        parts = [split_doc_id(i, len(key)) for i in docs]
        return [list(c) for c in zip(*(p for p in parts if len(p) == len(key)), strict=True)]

    def fingerprints(self, index: str, ids: Collection[DocId]) -> tuple[dict[DocId, str], Position]:
        """The fingerprint a fresh build of each of `ids` would carry (ids whose root row is gone are
        absent), from one snapshot, and that snapshot's WAL position: `build` without the documents."""
        config = self._config.indexes[index]
        parts = [split_doc_id(i, len(config.key)) for i in ids]
        columns = [list(c) for c in zip(*(p for p in parts if len(p) == len(config.key)), strict=True)]
        if index not in self._fingerprints:
            self._fingerprints[index] = fingerprint_statement(config, self._catalog, self.plan.index(index).tree)
        with self._session("fingerprinting documents of " + index) as conn, conn.transaction():
            lsn = conn.execute(_POSITION).fetchone()[0]
            rows = conn.execute(self._fingerprints[index], columns, prepare=True).fetchall() if columns else []
        self.statements += 2
        return {doc_id(r[:-1]): r[-1] for r in rows if None not in r[:-1]}, lsn_to_int(lsn)

    def key_page(self, index: str, after: DocId | None, limit: int, snapshot: Exported | None = None) -> list[DocId]:
        """The next `limit` root ids in key order after `after` (keyset pagination: each page is one
        short statement, never a long transaction), from `snapshot` when given."""
        config = self._config.indexes[index]
        statement = key_page_statement(config, self._catalog, after is not None)
        params = [*(split_doc_id(after, len(config.key)) if after is not None else ()), limit]
        with (self._in(snapshot, "reading keys of " + index) if snapshot is not None
              else self._session("reading keys of " + index)) as conn:
            rows = conn.execute(statement, params, prepare=True).fetchall()
        self.statements += 1
        return [doc_id(r) for r in rows]

    def sample_ids(self, index: str, n: int) -> list[DocId]:
        """About `n` random root ids (a Bernoulli sample sized from the table's estimated rows)."""
        config = self._config.indexes[index]
        root = qualify(config.table)
        with self._session("sampling keys of " + index) as conn:
            estimate = conn.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass",
                                    [root]).fetchone()[0]
            percent = 100.0 if estimate <= 0 else min(100.0, 100.0 * 2 * n / estimate)
            statement = sample_statement(config, view=root in self._catalog.views)
            rows = conn.execute(statement, [percent, n]).fetchall()
            if len(rows) < n and percent < 100.0:  # an unlucky or stale estimate: take them all
                rows = conn.execute(statement, [100.0, n]).fetchall()
        self.statements += 2
        return [doc_id(r) for r in rows]

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
