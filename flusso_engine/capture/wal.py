"""`WalCapture`: live changes from a logical replication slot, over the streaming replication protocol.

One replication connection (psycopg 3's libpq layer, `replication=database`) runs
`START_REPLICATION SLOT ... LOGICAL` with `pgoutput`; `stream()` decodes what arrives into `Change`s,
and `ack()` moves the slot with standby status updates. The design points:

- **Two threads share the connection, under one lock.** `stream()` is a generator that its
  consumer drives, and the consumer blocks when the queue is full (back-pressure), possibly for
  longer than `wal_sender_timeout`. So replies cannot live only inside the generator: a small
  feedback thread sends a status update every `status_interval_s`, and `ack()` sends one at once.
  libpq connections are not thread-safe, so every use of the `PGconn` holds `_io`; the generator
  holds it only while it reads what is already buffered (never across a `select` or a `yield`).
  While the consumer is blocked nothing is read, the socket fills, and the server's walsender
  waits on it while still reading our replies, so the connection lives and memory stays flat.
- **Never more than the caller acked**, except one case the contract asks for: when nothing
  received is still unflushed (no transaction in progress, the last commit yielded is acked), a
  keepalive's WAL end is reported as flushed, so an idle publication never pins WAL. And never
  more than `limit`, when the caller sets one: the highest position it has durably recorded as
  confirmable (`slotstate.py`), so that a slot moved by someone else can be told from this one.
- **Reconnect and resume.** A dropped connection is reopened with backoff up to a bound, starting
  from the last flushed position; transactions at or before it that the server resends are skipped.
- **A slot still held** by another connection (a crashed run's walsender not yet gone) is waited
  for, up to `slot_wait_s`.
- **Stop** is the `threading.Event` handed in: `stream()` notices it within a fraction of a second,
  sends a last status update and returns. An `ack()` that comes after that (the pipeline acks
  what it flushed on the way down) advances the slot with `pg_replication_slot_advance`.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg import errors, pq, sql

from ..changes import Change, Position, commit, int_to_lsn, lsn_to_int
from ..config import qualify, split_table
from ..error import SourceError
from ..keys import conninfo, key_text
from . import pgoutput
from .pgoutput import UNCHANGED, Value
from .replication import XLOG_HEADER, keepalive, standby_status
from .schema import (
    Drift,
    Expected,
    Part,
    State,
    describe_partitions,
    partition_changes,
    read_state,
    relation_problem,
    state_problems,
)

log = logging.getLogger(__name__)

PUBLISH = "insert, update, delete, truncate"
SNAPSHOT_PAGE = 5000
_DRAIN_MAX = 2000  # messages taken from libpq's buffer per lock hold ...
_DRAIN_BYTES = 4 << 20  # ... and bytes: what a blocked consumer leaves held in memory
_POLL_S = 0.2  # longest wait on the socket before looking at the stop event again
_RETRYABLE_CLASSES = ("08", "53", "57")  # connection exception, insufficient resources, operator intervention
_REFUSALS = (  # connection failures that waiting will not cure
    "authentication failed",
    "pg_hba.conf",
    "does not exist",
    "must be superuser or replication role",
    "permission denied",
)


class _Lost(Exception):
    """The replication connection failed in a way a reconnect may cure."""


@dataclass(frozen=True)
class WalServer:
    """What the server says about its WAL, read with the slot: what bounds a slot, where the WAL lives."""

    current: Position  # pg_current_wal_lsn()
    max_slot_wal_keep_size: int | None  # bytes; None when -1 (unset: a slot may keep WAL without bound)
    max_wal_size: int  # bytes
    wal_segment_size: int  # bytes
    data_directory: str | None  # None unless the role may read it (superuser, pg_read_all_settings)
    port: int
    started_at: int  # pg_postmaster_start_time(), epoch seconds: tells this server's data directory apart
    wal_dir_bytes: int | None  # the size of pg_wal; None unless the role may list it (pg_monitor)


@dataclass(frozen=True)
class SlotInfo:
    """What `pg_replication_slots` says about the slot, positions as integers."""

    slot: str
    plugin: str
    active: bool
    active_pid: int | None
    confirmed_flush_lsn: Position | None
    restart_lsn: Position | None
    current: Position  # pg_current_wal_lsn()
    lag_bytes: int | None  # current - confirmed_flush: the WAL the slot keeps from being recycled
    wal_status: str | None  # reserved | extended | unreserved | lost (lost: the slot is unusable)
    safe_wal_size: int | None = None  # bytes of WAL before the slot is invalidated; None when unbounded
    slot_type: str = "logical"
    database: str | None = None

    @property
    def retained_bytes(self) -> int | None:
        """current - restart_lsn: the WAL the server keeps for this slot (None once it was removed)."""
        return None if self.restart_lsn is None else max(0, self.current - self.restart_lsn)


# The one query of the slot and the server's WAL settings (a row even when the slot does not exist).
_SLOT_QUERY = """
SELECT pg_current_wal_lsn()::text, pg_size_bytes(current_setting('max_slot_wal_keep_size')),
       pg_size_bytes(current_setting('max_wal_size')), pg_size_bytes(current_setting('wal_segment_size')),
       (SELECT setting FROM pg_settings WHERE name = 'data_directory'), current_setting('port')::int,
       extract(epoch FROM pg_postmaster_start_time())::bigint, pg_has_role('pg_monitor', 'USAGE'),
       s.slot_name IS NOT NULL, s.plugin, s.slot_type, s.database, s.active, s.active_pid,
       s.confirmed_flush_lsn::text, s.restart_lsn::text, s.wal_status, s.safe_wal_size
FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = %s
"""


def read_slot(conn: psycopg.Connection, slot: str) -> tuple[WalServer, SlotInfo | None]:
    """The server's WAL settings and the slot (None if it does not exist), read-only.

    Everything comes from what an ordinary replication role may read; what needs more (the data
    directory, the size of pg_wal) is None instead of an error.
    """
    row = conn.execute(_SLOT_QUERY, (slot,)).fetchone()
    assert row is not None  # the query always returns one row
    (current, keep, max_wal, segment, data_dir, port, started, monitor,
     exists, plugin, kind, database, active, pid, confirmed, restart, wal_status, safe) = row
    wal_dir = None
    if monitor:
        try:
            with conn.transaction():  # a savepoint: a refusal must not abort the caller's transaction
                wal_dir = conn.execute("SELECT coalesce(sum(size), 0)::bigint FROM pg_ls_waldir()").fetchone()[0]
        except errors.InsufficientPrivilege:  # a managed service's restricted pg_monitor
            wal_dir = None
    current_i = lsn_to_int(current)
    server = WalServer(
        current=current_i, max_slot_wal_keep_size=None if keep < 0 else int(keep), max_wal_size=int(max_wal),
        wal_segment_size=int(segment), data_directory=data_dir, port=port, started_at=int(started),
        wal_dir_bytes=None if wal_dir is None else int(wal_dir),
    )
    if not exists:
        return server, None
    confirmed_i = lsn_to_int(confirmed) if confirmed else None
    info = SlotInfo(
        slot=slot,
        plugin=plugin,
        active=bool(active),
        active_pid=pid,
        confirmed_flush_lsn=confirmed_i,
        restart_lsn=lsn_to_int(restart) if restart else None,
        current=current_i,
        lag_bytes=None if confirmed_i is None else max(0, current_i - confirmed_i),
        wal_status=wal_status,
        safe_wal_size=None if safe is None else int(safe),
        slot_type=kind,
        database=database,
    )
    return server, info


@dataclass(frozen=True, slots=True)
class _Rel:
    """A Relation message reduced to what building rows needs."""

    table: str
    names: tuple[str, ...]
    keys: tuple[tuple[int, str], ...]  # (position, name) of the identity's columns
    full: bool = False  # the config needs whole old rows of this table


@dataclass
class Repairs:
    """What the last `prepare` had to put right: changes may have been missed while it was wrong."""

    publication_created: bool = False  # it did not exist (or was FOR ALL TABLES) and was created
    tables_added: set[str] = field(default_factory=set)  # configured tables the publication lacked
    identity_set: set[str] = field(default_factory=set)  # tables (or a partition of them) set to FULL
    slot_advanced: bool = False  # moved past WAL it could not decode without the publication


class WalCapture:
    """The `ChangeCapture` over a pgoutput logical replication slot."""

    def __init__(
        self,
        dsn: str,
        slot: str,
        publication: str,
        stop: threading.Event,
        full_identity: set[str] | frozenset[str] = frozenset(),
        slot_wait_s: float = 60.0,
        logger: logging.Logger | None = None,
        *,
        status_interval_s: float = 10.0,
        reconnect_attempts: int = 8,
        reconnect_backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        snapshot_page: int = SNAPSHOT_PAGE,
        expected: Mapping[str, Expected] | None = None,
        baseline: Position = 0,
        watch_interval_s: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self.slot = slot
        self.publication = publication
        self._stop = stop
        self._full_identity = {qualify(t) for t in full_identity}
        self._slot_wait_s = slot_wait_s
        self._log = logger or log
        self._status_interval_s = status_interval_s
        self._reconnect_attempts = reconnect_attempts
        self._backoff_s = reconnect_backoff_s
        self._max_backoff_s = max_backoff_s
        self._snapshot_page = snapshot_page

        self._io = threading.Lock()  # every use of the replication PGconn
        self._state = threading.Lock()  # the positions below
        self._conn: psycopg.Connection | None = None
        self._streaming = False
        self._acked: Position = 0  # the most the caller has acknowledged
        self._idle: Position = 0  # a keepalive's WAL end, taken when nothing received was unflushed
        self._sent: Position = 0  # the last position reported to the server
        self._last_yielded: Position = 0  # end LSN of the last commit marker handed out
        self._limit: Position | None = None  # never report more than this (None: no limit)
        self._relations: dict[int, _Rel] = {}
        self.reconnects = 0  # connections lost and reopened, for tests and observers
        # Schema changes under capture (see `schema.py`): what the config needs of each table; the
        # WAL position before the catalog the engine runs on was read (a change to a table's definition
        # committed before it is in that catalog already); the catalog as `prepare` left it.
        self._expected = dict(expected) if expected is not None else None
        self._baseline = baseline
        self._watch_interval_s = watch_interval_s
        self._tables: list[str] = []
        self._catalog_state: State | None = None
        self._watch_lock = threading.Lock()
        self._watch_error: SourceError | None = None
        self._watch_resync: list[tuple[str, Position]] = []
        self.repairs = Repairs()
        # called once the slot is ours (after START_REPLICATION, before anything is read), at the
        # first start and after every reconnect: raises to refuse a slot that is not the one followed
        self.verify_slot: Callable[[], None] | None = None

    # --- set-up and inspection ------------------------------------------------------------------

    def prepare(self, tables: Sequence[str]) -> bool:
        """Create what capture needs, idempotently: the publication for exactly `tables`, REPLICA
        IDENTITY FULL on the `full_identity` tables, and the slot. True iff the slot had to be
        created (the caller then treats every index as unseeded: changes may have been missed).

        The publication comes first: pgoutput reads it through the slot's historic snapshot, so a
        publication created after the slot would be missing for the WAL in between.
        """
        wanted = list(dict.fromkeys(qualify(t) for t in tables))
        if not wanted:
            raise ValueError("prepare() needs at least one table to publish")
        self.repairs = Repairs()
        self._tables = wanted
        with self._sql() as conn:
            (level,) = conn.execute("SHOW wal_level").fetchone() or ("",)
            if level != "logical":
                raise SourceError(
                    f"wal_level is {level!r}, but capture needs 'logical': set wal_level = logical in "
                    "postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and restart PostgreSQL"
                )
            self._ensure_publication(conn, wanted)
            self._ensure_identity(conn)
            created = self._ensure_slot(conn)
            if self.repairs.publication_created and not created:
                self._skip_unpublished(conn)
            self._catalog_state = read_state(conn, self.publication, wanted)
            return created

    def _skip_unpublished(self, conn: psycopg.Connection) -> None:
        """The publication was just created for a slot that already existed: PostgreSQL (up to 17)
        cannot decode the slot's WAL from before the publication with it ("publication does not
        exist" on every start), and what changed in between was never captured anyway. So the slot
        moves to the current WAL position (its changes from here on are all decodable) and the engine
        reseeds every index from rows read after that: exact, and no slot drop."""
        (lsn,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone() or ("0/0",)
        for _ in range(100):
            try:
                conn.execute(
                    "SELECT pg_replication_slot_advance(slot_name, %s::pg_lsn) FROM pg_replication_slots "
                    "WHERE slot_name = %s AND confirmed_flush_lsn < %s::pg_lsn",
                    (lsn, self.slot, lsn),
                )
                break
            except errors.ObjectInUse:  # a crashed run's walsender still exiting
                time.sleep(0.1)
            except psycopg.Error as err:
                raise SourceError(
                    f"publication {self.publication} had to be created for the existing slot {self.slot}, "
                    f"and the slot could not be moved past the changes it cannot decode ({_first_line(err)}): "
                    "run `flusso run --recreate-slot` (or `flusso teardown`, then `flusso run`): every index "
                    "is reseeded"
                ) from None
        else:
            raise SourceError(
                f'replication slot "{self.slot}" stays in use: it could not be moved past the WAL from before '
                f"publication {self.publication} was created; stop its other consumer, then start again"
            )
        self.repairs.slot_advanced = True
        self._log.warning(
            "publication %s did not exist (dropped?): moved slot %s to %s, past the WAL it cannot decode; "
            "the changes in between were not captured, so every index is reseeded",
            self.publication, self.slot, lsn,
        )

    def _ensure_publication(self, conn: psycopg.Connection, tables: list[str]) -> None:
        name = sql.Identifier(self.publication)
        targets = sql.SQL(", ").join(sql.Identifier(*split_table(t)) for t in tables)
        row = conn.execute(
            "SELECT oid, puballtables, pubinsert AND pubupdate AND pubdelete AND pubtruncate, pubviaroot "
            "FROM pg_publication WHERE pubname = %s",
            (self.publication,),
        ).fetchone()
        with _sql_errors(f"publication {self.publication}"):
            if row is not None and row[1]:
                conn.execute(sql.SQL("DROP PUBLICATION {}").format(name))
                self._log.info("publication %s was FOR ALL TABLES; recreating it for flusso's tables", name)
                row = None
            if row is None:
                conn.execute(
                    sql.SQL(
                        "CREATE PUBLICATION {} FOR TABLE {} "
                        "WITH (publish = {}, publish_via_partition_root = true)"
                    ).format(name, targets, sql.Literal(PUBLISH))
                )
                self._log.info("created publication %s for %d tables", self.publication, len(tables))
                self.repairs.publication_created = True
                return
            oid, _, all_actions, via_root = row
            current = conn.execute(
                "SELECT n.nspname || '.' || c.relname, pr.prattrs IS NOT NULL OR pr.prqual IS NOT NULL "
                "FROM pg_publication_rel pr JOIN pg_class c ON c.oid = pr.prrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE pr.prpubid = %s",
                (oid,),
            ).fetchall()
            (schemas,) = conn.execute(
                "SELECT count(*) FROM pg_publication_namespace WHERE pnpubid = %s", (oid,)
            ).fetchone() or (0,)
            narrowed = any(filtered for _, filtered in current)
            self.repairs.tables_added = set(tables) - {t for t, _ in current}
            if {t for t, _ in current} != set(tables) or schemas or narrowed:
                conn.execute(sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(name, targets))
                self._log.info(
                    "publication %s now covers exactly flusso's %d tables", self.publication, len(tables)
                )
            if not (all_actions and via_root):
                options = sql.SQL("ALTER PUBLICATION {} SET (publish = {}, publish_via_partition_root = on)")
                conn.execute(options.format(name, sql.Literal(PUBLISH)))
                self._log.info("publication %s now publishes %s", self.publication, PUBLISH)

    def _ensure_identity(self, conn: psycopg.Connection) -> None:
        if not self._full_identity:
            return
        # every partition too: PostgreSQL does not pass a partitioned table's identity down, and a
        # change through a root publication carries the old row its partition's identity logged
        rows = conn.execute(
            "WITH RECURSIVE tree(top, relid, level) AS ("
            " SELECT n.nspname || '.' || c.relname, c.oid, 0 FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p') AND n.nspname || '.' || c.relname = ANY(%s)"
            " UNION ALL SELECT tree.top, i.inhrelid, tree.level + 1 FROM pg_inherits i"
            " JOIN tree ON i.inhparent = tree.relid JOIN pg_class k ON k.oid = i.inhrelid AND k.relispartition) "
            "SELECT tree.top, pn.nspname, pc.relname, pc.relreplident FROM tree "
            "JOIN pg_class pc ON pc.oid = tree.relid JOIN pg_namespace pn ON pn.oid = pc.relnamespace "
            "ORDER BY 1, tree.level, 3",
            (sorted(self._full_identity),),
        ).fetchall()
        missing = sorted(self._full_identity - {r[0] for r in rows})
        if missing:
            raise SourceError(f"cannot set REPLICA IDENTITY FULL: table {', '.join(missing)} does not exist")
        for table, schema, name, ident in rows:
            if ident == "f":
                continue
            what = table if f"{schema}.{name}" == table else f"partition {schema}.{name} of {table}"
            with _sql_errors(what):
                target = sql.Identifier(schema, name)
                conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(target))
            self.repairs.identity_set.add(table)
            self._log.info(
                "set REPLICA IDENTITY FULL on %s: its old rows are needed to find the documents it leaves",
                what,
            )

    def _ensure_slot(self, conn: psycopg.Connection) -> bool:
        row = conn.execute(
            "SELECT plugin, slot_type, database = current_database(), wal_status "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (self.slot,),
        ).fetchone()
        if row is not None:
            plugin, kind, same_db, wal_status = row
            if kind != "logical" or plugin != "pgoutput" or not same_db:
                raise SourceError(
                    f'replication slot "{self.slot}" exists but is not a pgoutput logical slot of this '
                    f"database ({kind}, plugin {plugin}): choose another source.slot, or drop it"
                )
            if wal_status != "lost":
                return False
            self._log.warning(
                "replication slot %s was invalidated by PostgreSQL (wal_status lost: the WAL it still "
                "needed was removed, see max_slot_wal_keep_size), so the changes since its last confirmed "
                "position are gone: dropping and recreating it; every index it feeds is rebuilt",
                self.slot,
            )
            self._drop_slot(conn)
        try:
            with _sql_errors(f"replication slot {self.slot}"):
                conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (self.slot,))
        except SourceError as err:
            if isinstance(err.__cause__, errors.DuplicateObject):
                return False  # created concurrently by another start
            raise
        self._log.info("created logical replication slot %s (pgoutput)", self.slot)
        return True

    def system_identifier(self) -> int:
        """The cluster's identity: a restored or different server has another one."""
        with self._sql() as conn:
            row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        assert row is not None
        return int(row[0])

    def timeline(self) -> int:
        """The WAL timeline the server writes on now (a point-in-time restore or a promotion starts a
        new one). Read from the current WAL file's name: `pg_control_checkpoint()` lags behind a
        promotion until the next checkpoint."""
        with self._sql() as conn:
            row = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
        assert row is not None
        return int(row[0][:8], 16)

    def current_position(self) -> Position:
        with self._sql() as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return lsn_to_int(row[0])

    def slot_info(self) -> SlotInfo | None:
        """The slot as the server sees it, or None if it does not exist."""
        return self.wal_state()[1]

    def wal_state(self) -> tuple[WalServer, SlotInfo | None]:
        """The server's WAL settings and the slot, for health reports (`read_slot`)."""
        with self._sql() as conn:
            return read_slot(conn, self.slot)

    def teardown(self) -> None:
        """Drop the slot (ending the server process that holds it, if any) and the publication."""
        with self._sql() as conn:
            self._drop_slot(conn)
            conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(self.publication)))
            self._log.info("dropped replication slot %s and publication %s", self.slot, self.publication)

    def _drop_slot(self, conn: psycopg.Connection) -> None:
        deadline = time.monotonic() + 10
        while True:
            row = conn.execute(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)
            ).fetchone()
            if row is None:
                return
            if row[0] is not None:
                conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
            try:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
                return
            except errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise SourceError(f'replication slot "{self.slot}" stays in use: not dropped') from None
                time.sleep(0.1)
            except errors.UndefinedObject:
                return

    # --- snapshot --------------------------------------------------------------------------------

    def snapshot(self, table: str, key: Sequence[str]) -> Iterator[Change]:
        """Every row's key, in key order, as `insert`s at position 0.

        Keyset pagination (`WHERE (k1, k2) > (...) ORDER BY k1, k2 LIMIT n`) walks the key's index
        page by page in short statements, so no long transaction pins the database. Only the key
        columns are read, as the text pgoutput would send for them (`keys.key_text`): the builder
        rebuilds each document from the current rows anyway.
        """
        qualified = qualify(table)
        schema, name = split_table(qualified)
        # Qualified column references: a bare `ORDER BY id` would sort by the output column `id::text`.
        cols = [sql.Identifier(schema, name, k) for k in key]
        names = list(key)
        select_list = key_text(cols)
        order = sql.SQL(", ").join(cols)
        source = sql.Identifier(schema, name)
        first = sql.SQL("SELECT {} FROM {} ORDER BY {} LIMIT %s").format(select_list, source, order)
        after = sql.SQL("SELECT {} FROM {} WHERE ({}) > ({}) ORDER BY {} LIMIT %s").format(
            select_list, source, order, sql.SQL(", ").join(sql.Placeholder() * len(cols)), order
        )
        with self._sql() as conn:
            last: tuple | None = None
            while True:
                with _sql_errors(f"table {qualified}"):
                    if last is None:
                        rows = conn.execute(first, (self._snapshot_page,)).fetchall()
                    else:
                        rows = conn.execute(after, (*last, self._snapshot_page)).fetchall()
                for r in rows:
                    yield Change(qualified, "insert", new=dict(zip(names, r, strict=True)))
                if len(rows) < self._snapshot_page:
                    return
                last = rows[-1]

    # --- streaming -------------------------------------------------------------------------------

    def stream(self) -> Iterator[Change]:
        """Live changes in commit order, each transaction closed by a `commit` marker, until stop."""
        with self._state:
            if self._streaming:
                raise RuntimeError("stream() is already running on this WalCapture")
            self._streaming = True
        done = threading.Event()
        feeder = threading.Thread(
            target=self._feedback_loop, args=(done,), name=f"flusso-feedback-{self.slot}", daemon=True
        )
        feeder.start()
        watcher = None
        if self._expected is not None and self._tables:
            watcher = threading.Thread(
                target=self._watch_loop, args=(done,), name=f"flusso-watch-{self.slot}", daemon=True
            )
            watcher.start()
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    if not self._start():
                        return
                    failures = 0
                    yield from self._receive()
                    return
                except _Lost as err:
                    self._close()
                    failures += 1
                    if failures > self._reconnect_attempts:
                        raise SourceError(
                            "lost the replication connection to PostgreSQL and could not get it back after "
                            f"{self._reconnect_attempts} attempts ({err}); nothing after the last ack was "
                            "lost: start again once the database is reachable"
                        ) from None
                    self.reconnects += 1
                    delay = min(self._backoff_s * 2 ** (failures - 1), self._max_backoff_s)
                    self._log.warning(
                        "replication connection lost (%s); reconnecting in %.1fs (attempt %d of %d)",
                        err, delay, failures, self._reconnect_attempts,
                    )
                    if self._stop.wait(delay):
                        return
        finally:
            done.set()
            self._finish()
            feeder.join(timeout=5)
            if watcher is not None:
                watcher.join(timeout=5)

    def ack(self, position: Position) -> None:
        """Everything at or before `position` is durable downstream: report it to the server."""
        with self._state:
            if position <= self._acked:
                return
            self._acked = position
        with self._io:
            if self._conn is not None:
                self._send_locked(self._flushed())
                return
            streaming = self._streaming
        if not streaming:  # stream() has returned: no connection to report on
            self._advance_slot(self._flushed())

    @property
    def acked(self) -> Position:
        return self._acked

    @property
    def idle(self) -> Position:
        """The WAL end the last idle keepalive offered to confirm (`limit` may hold it back)."""
        return self._idle

    @property
    def limit(self) -> Position | None:
        return self._limit

    def set_limit(self, position: Position | None) -> None:
        """Report no position beyond `position` to the server (see the module doc); raising it
        sends what it now allows at once."""
        with self._state:
            self._limit = position
        with self._io:
            if self._conn is not None and self._flushed() > self._sent:
                self._send_locked(self._flushed())

    def _flushed(self) -> Position:
        position = max(self._acked, self._idle)
        limit = self._limit
        return position if limit is None else min(position, limit)

    def _start(self) -> bool:
        """Open the replication connection and START_REPLICATION, waiting for a held slot.

        False if the stop event was set while waiting.
        """
        deadline = time.monotonic() + self._slot_wait_s
        next_log = 0.0
        start_at = self._flushed()
        command = sql.SQL(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '1', publication_names {})"
        ).format(sql.Identifier(self.slot), sql.SQL(int_to_lsn(start_at)), sql.Literal(self.publication))
        while True:
            try:
                conn = psycopg.connect(self._conninfo(), autocommit=True, replication="database")
            except psycopg.OperationalError as err:
                if any(marker in str(err) for marker in _REFUSALS):
                    raise SourceError(f"cannot open a replication connection: {_first_line(err)}") from None
                raise _Lost(_first_line(err)) from None
            try:
                conn.pgconn.send_query(command.as_bytes(conn))
                res = conn.pgconn.get_result()
            except psycopg.OperationalError as err:
                conn.close()
                raise _Lost(_first_line(err)) from None
            if res is not None and res.status == pq.ExecStatus.COPY_BOTH:
                break
            err = errors.error_from_result(res) if res is not None else errors.OperationalError("no result")
            conn.close()
            if not isinstance(err, errors.ObjectInUse):
                if _retryable(err):
                    raise _Lost(_first_line(err))
                missing = isinstance(err, errors.UndefinedObject)
                hint = " (prepare() creates it: was it dropped?)" if missing else self._lost_hint()
                raise SourceError(f"START_REPLICATION on slot {self.slot} failed: {_first_line(err)}{hint}")
            now = time.monotonic()
            if now >= deadline:
                raise SourceError(
                    f'replication slot "{self.slot}" is still in use after waiting {self._slot_wait_s:g}s '
                    f"({_first_line(err)}). Another flusso may be running on it, or a crashed run's server "
                    "process has not exited yet: stop the other consumer, or end that server process "
                    "(pg_terminate_backend of the slot's active_pid in pg_replication_slots)"
                )
            if now >= next_log:
                self._log.warning(
                    "replication slot %s is in use (%s); waiting up to %.0fs more for it to be released",
                    self.slot, _first_line(err), deadline - now,
                )
                next_log = now + 10
            if self._stop.wait(min(0.5, deadline - now)):
                return False
        with self._io:
            self._conn = conn
            self._send_locked(self._flushed())
        if self.verify_slot is not None:
            try:
                self.verify_slot()  # the slot is held by this connection now: nobody can swap it
            except psycopg.OperationalError as err:
                self._close()
                raise _Lost(_first_line(err)) from None
            except BaseException:
                self._close()
                raise
        self._log.info("streaming from slot %s at %s", self.slot, int_to_lsn(start_at))
        return True

    def _receive(self) -> Iterator[Change]:
        """Read, decode and hand out changes until the stop event is set (or the connection fails)."""
        conn = self._conn
        assert conn is not None
        pg = conn.pgconn
        sock = pg.socket
        stop = self._stop
        io = self._io
        relations = self._relations
        decode = pgoutput.decode
        in_txn = False  # received a Begin whose commit marker is not yet handed out
        skipping = False  # inside a transaction already acked (resent after a reconnect)
        position: Position = 0
        xid = 0
        while not stop.is_set():
            if self._watch_error is not None or self._watch_resync:
                yield from self._watched()
            with io:
                try:
                    pg.consume_input()
                    batch, ended = _drain(pg)
                except psycopg.OperationalError as err:
                    raise _Lost(_first_line(err)) from None
            if not batch and not ended:
                try:
                    select.select([sock], [], [], _POLL_S)
                except (OSError, ValueError) as err:
                    raise _Lost(str(err)) from None
                continue
            for data in batch:
                if stop.is_set():
                    return
                if data[0] == 0x6B:  # k: a keepalive (anything else is an XLogData's payload)
                    self._on_keepalive(data, in_txn)
                    continue
                msg = decode(data)
                cls = type(msg)
                if skipping and cls is not pgoutput.Begin and cls is not pgoutput.Relation:
                    if cls is pgoutput.Commit:
                        skipping = False
                    continue
                if cls is pgoutput.Insert:
                    rel = self._rel(msg.relation_oid)
                    yield Change(rel.table, "insert", new=_new(rel, msg.new), position=position, xid=xid)
                elif cls is pgoutput.Update:
                    rel = self._rel(msg.relation_oid)
                    if rel.full and msg.old_kind != "O":
                        yield self._schema_changed(_partial_old(rel.table, "UPDATE"), position, xid)
                    yield _update(rel, msg, position, xid)
                elif cls is pgoutput.Delete:
                    rel = self._rel(msg.relation_oid)
                    if rel.full and msg.old_kind != "O":
                        yield self._schema_changed(_partial_old(rel.table, "DELETE"), position, xid)
                    yield Change(rel.table, "delete", old=_old(rel, msg.old, msg.old_kind), position=position,
                                 xid=xid)
                elif cls is pgoutput.Begin:
                    if msg.final_lsn < self._flushed():
                        skipping = True  # committed at or before what is acked: resent after a reconnect
                    else:
                        in_txn, position, xid = True, msg.final_lsn, msg.xid
                elif cls is pgoutput.Commit:
                    in_txn = False
                    self._last_yielded = msg.end_lsn
                    yield commit(msg.end_lsn, xid)
                elif cls is pgoutput.Relation:
                    relations[msg.oid] = _Rel(
                        table=msg.qualified,
                        names=tuple(c.name for c in msg.columns),
                        keys=tuple((i, c.name) for i, c in enumerate(msg.columns) if c.is_key),
                        full=self._expected is not None and msg.qualified in self._full_identity,
                    )
                    if self._expected is not None and not skipping:
                        drift = relation_problem(msg, self._expected, self._catalog_state or State.of(True, {}),
                                                 self._type_name)
                        if drift is not None:
                            yield self._schema_changed(drift, position, xid)
                elif cls is pgoutput.Truncate:
                    for oid in msg.relation_oids:
                        yield Change(self._rel(oid).table, "truncate", position=position, xid=xid)
                # Type, Origin, LogicalMessage: nothing to do
            if ended:  # the server ended the COPY: an error, or its shutdown
                self._end_of_copy(pg)

    def _schema_changed(self, drift: Drift, position: Position, xid: int) -> Change:
        """A change made under a definition the engine cannot follow. After this engine's catalog was
        read (`baseline`): stop here, so that neither it nor anything after it is acknowledged. Before
        it (a change redelivered after a restart: the catalog, and the config validated against it,
        are newer than the change): the engine rebuilds the indexes that use the table, unless they
        were seeded after the change anyway."""
        lsn = int_to_lsn(position)
        if position > self._baseline:
            raise SourceError(
                f"{drift.what} (first seen in the change at {lsn}, transaction {xid}). flusso stopped before "
                f"acknowledging that change, so nothing from there on is lost: {drift.fix}"
            )
        self._log.warning(
            "a change committed at %s, before this start, was made when %s: rebuilding the indexes that use "
            "%s unless they were seeded after it",
            lsn, drift.what, drift.table,
        )
        return Change(drift.table, "resync", position=position, xid=xid)

    def _watched(self) -> Iterator[Change]:
        """What the catalog watcher found: a stop (raised), or tables whose indexes need a rebuild."""
        with self._watch_lock:
            error, self._watch_error = self._watch_error, None
            resync, self._watch_resync = self._watch_resync, []
        if error is not None:
            raise error
        for table, position in resync:
            yield Change(table, "resync", position=position)

    def _watch_loop(self, done: threading.Event) -> None:
        """Re-read the configured tables' catalog state every `watch_interval_s`, on a connection of
        its own (see `schema.py`): what sends no message through the slot is seen here."""
        conn: psycopg.Connection | None = None
        try:
            while not done.wait(self._watch_interval_s):
                try:
                    if conn is None or conn.closed or conn.broken:
                        conn = psycopg.connect(self._conninfo(), autocommit=True)
                        conn.execute("SET lock_timeout = '2s'")
                    if self._watch_once(conn):
                        return
                except psycopg.Error as err:  # the database away: the replication connection handles that
                    self._log.debug("catalog check skipped: %s", _first_line(err))
                    if conn is not None:
                        conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()

    def _watch_once(self, conn: psycopg.Connection) -> bool:
        """One re-read; True if it found a reason to stop."""
        assert self._expected is not None
        now = read_state(conn, self.publication, self._tables)
        before = self._catalog_state
        if before is None:
            self._catalog_state = now
            return False
        problems = state_problems(now, self._expected, before)
        if problems:
            text = "; ".join(str(p) for p in problems)
            with self._watch_lock:
                self._watch_error = SourceError(
                    f"the catalog changed under capture: {text}. flusso stopped; nothing after its last "
                    "acknowledged change is lost"
                )
            return True
        resync = []
        for name, table in now.tables.items():
            attached, detached, truncated = partition_changes(before.tables.get(name), table)
            attached = [p for p in attached if not _empty(conn, p)]  # created empty: rows to come are captured
            detached = [p for p in detached if not _empty(conn, p)]
            if attached or detached or truncated:
                self._log.warning(
                    "%s (no row changes reach the slot for that): rebuilding the indexes that use %s",
                    describe_partitions(name, attached, detached, truncated), name,
                )
                resync.append((name, now.position))
        with self._watch_lock:
            self._watch_resync.extend(resync)
        self._catalog_state = now
        return False

    def _type_name(self, oid: int, modifier: int) -> str:
        try:
            with self._sql() as conn:
                row = conn.execute("SELECT format_type(%s, %s)", (oid, None if modifier < 0 else modifier)).fetchone()
            return str(row[0]) if row else f"type {oid}"
        except (psycopg.Error, SourceError):
            return f"type {oid}"

    def table_fingerprints(self, tables: Sequence[str]) -> dict[str, list]:
        """What the seeded marker records of `tables`: OIDs, partitions and their storage (`schema.py`)."""
        with self._sql() as conn:
            state = read_state(conn, self.publication, tables)
        return {name: t.fingerprint() for name, t in state.tables.items() if t is not None}

    def drop_slot(self) -> None:
        """Drop the slot (ending the server process that holds it): `flusso run --recreate-slot`."""
        with self._sql() as conn:
            self._drop_slot(conn)

    def _rel(self, oid: int) -> _Rel:
        try:
            return self._relations[oid]
        except KeyError:
            raise pgoutput.DecodeError(f"a change to relation {oid} came before its Relation") from None

    def _on_keepalive(self, data: bytes, in_txn: bool) -> None:
        ka = keepalive(data)
        with self._state:
            if not in_txn and self._last_yielded <= self._acked and ka.wal_end > self._idle:
                # Everything before wal_end has been received and everything received is acked: the
                # WAL up to there holds nothing for us (other tables, other databases, empty xacts).
                self._idle = ka.wal_end
            position = self._flushed()
        if ka.reply_requested or position > self._sent:
            with self._io:
                self._send_locked(position)

    def _send_locked(self, position: Position) -> None:
        """Send a standby status update; the caller holds `_io`. A failure is left for the reader."""
        conn = self._conn
        if conn is None:
            return
        try:
            conn.pgconn.put_copy_data(standby_status(position))
            conn.pgconn.flush()
        except psycopg.OperationalError as err:
            self._log.debug("status update not sent: %s", _first_line(err))
            return
        self._sent = position

    def _feedback_loop(self, done: threading.Event) -> None:
        """Keep the walsender from timing out while the consumer is blocked (see the module doc)."""
        while not done.wait(self._status_interval_s):
            with self._io:
                self._send_locked(self._flushed())

    def _end_of_copy(self, pg: pq.abc.PGconn) -> None:
        res = pg.get_result()
        if res is not None and res.status == pq.ExecStatus.FATAL_ERROR:
            err = errors.error_from_result(res)
            if isinstance(err, errors.UndefinedObject):  # the publication: the slot cannot vanish while used
                raise SourceError(self._publication_error(_first_line(err)))
            if not _retryable(err):
                raise SourceError(
                    f"replication from slot {self.slot} failed: {_first_line(err)}{self._lost_hint()}"
                )
            raise _Lost(_first_line(err))
        raise _Lost("the server ended replication")

    def _publication_error(self, error: str) -> str:
        try:
            with self._sql() as conn:
                exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s",
                                      (self.publication,)).fetchone() is not None
        except SourceError:
            exists = False
        if not exists:
            return (f"replication from slot {self.slot} failed: {error}: publication {self.publication} was "
                    "dropped. Start flusso again: it recreates the publication, moves the slot past the changes "
                    "it could not read and rebuilds every index")
        return (f"replication from slot {self.slot} failed: {error}, although publication {self.publication} "
                "exists now: it was created again after the slot's position, and PostgreSQL cannot decode the "
                "slot's older WAL with it. The slot cannot continue: run `flusso run --recreate-slot` (or "
                "`flusso teardown`, then `flusso run`), which reseeds every index")

    def _lost_hint(self) -> str:
        """What to do when the slot was invalidated; "" when it was not (or cannot be read)."""
        try:
            info = self.slot_info()
        except SourceError:
            return ""
        if info is None or info.wal_status != "lost":
            return ""
        return (
            f". The slot was invalidated (wal_status lost: PostgreSQL removed WAL it still needed, see "
            f"max_slot_wal_keep_size) and the changes since its last confirmed position are gone. "
            f"Start `flusso run` again: it recreates slot {self.slot} and rebuilds every index it feeds "
            f"(or run `flusso teardown --yes`, then `flusso run`)"
        )

    def _close(self) -> None:
        with self._io:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _finish(self) -> None:
        """Report the flushed position one last time, close, and hand later acks to SQL."""
        with self._io:
            conn = self._conn
            if conn is not None:
                self._send_locked(self._flushed())
                self._conn = None
                conn.close()
            with self._state:
                self._streaming = False
            position, sent = self._flushed(), self._sent
        if position > sent:
            self._advance_slot(position)

    def _advance_slot(self, position: Position) -> None:
        """Move an inactive slot's confirmed position with SQL (after stream() has returned)."""
        lsn = int_to_lsn(position)
        try:
            with self._sql() as conn:
                for _ in range(30):
                    try:
                        conn.execute(
                            "SELECT pg_replication_slot_advance(slot_name, %s::pg_lsn) "
                            "FROM pg_replication_slots "
                            "WHERE slot_name = %s AND confirmed_flush_lsn < %s::pg_lsn",
                            (lsn, self.slot, lsn),
                        )
                        self._sent = max(self._sent, position)
                        return
                    except errors.ObjectInUse:  # our walsender is still exiting, or someone else streams
                        time.sleep(0.1)
        except (psycopg.Error, SourceError) as err:
            self._log.warning(
                "could not advance slot %s to %s (%s): changes after its confirmed position will be "
                "delivered again on the next start",
                self.slot, lsn, _first_line(err),
            )
            return
        self._log.warning("slot %s is in use elsewhere; its position was not advanced to %s", self.slot, lsn)

    # --- connections -----------------------------------------------------------------------------

    def _conninfo(self) -> str:
        """The DSN plus defaults that suit a long-lived connection, unless the DSN sets them, and the
        pinned settings that make pgoutput's and the snapshot's key texts the same (`keys.SESSION`)."""
        return conninfo(
            self._dsn,
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
            application_name="flusso",
        )

    @contextmanager
    def _sql(self) -> Iterator[psycopg.Connection]:
        """A short-lived ordinary connection (autocommit) for set-up, inspection and snapshots."""
        try:
            conn = psycopg.connect(self._conninfo(), autocommit=True)
        except psycopg.OperationalError as err:
            raise SourceError(f"cannot connect to PostgreSQL: {_first_line(err)}") from None
        try:
            yield conn
        finally:
            conn.close()


# --- helpers -------------------------------------------------------------------------------------


def _drain(pg: pq.abc.PGconn) -> tuple[list[bytes], bool]:
    """The complete messages libpq has buffered (at most `_DRAIN_MAX`), and whether the COPY ended.

    An XLogData comes back as its pgoutput payload alone (copied once, without the header), a
    keepalive whole: pgoutput messages start with an upper-case letter, a keepalive with `k`.
    """
    out: list[bytes] = []
    size = 0
    while len(out) < _DRAIN_MAX and size < _DRAIN_BYTES:
        n, data = pg.get_copy_data(1)
        if n > 0:
            out.append(bytes(data[XLOG_HEADER:]) if data[0] == 0x77 else bytes(data))
            size += n
        elif n == 0:
            break
        else:  # -1: the server ended the COPY (-2 raises OperationalError)
            return out, True
    return out, False


def _old(rel: _Rel, values: tuple[Value, ...], kind: str) -> dict[str, Value]:
    if kind == "K":  # only the identity's columns are real; the server sends the rest as NULL
        return {name: values[i] for i, name in rel.keys}
    return _new(rel, values)


def _new(rel: _Rel, values: tuple[Value, ...]) -> dict[str, Value]:
    return dict(zip(rel.names, values, strict=False))


def _update(rel: _Rel, msg: pgoutput.Update, position: Position, xid: int) -> Change:
    new = _new(rel, msg.new)
    old = None if msg.old is None or msg.old_kind is None else _old(rel, msg.old, msg.old_kind)
    if old is not None and UNCHANGED in msg.new:
        for name, value in new.items():
            if value is UNCHANGED and name in old and old[name] is not UNCHANGED:
                new[name] = old[name]  # FULL identity sent the old value, which is also the new one
    return Change(rel.table, "update", new=new, old=old, position=position, xid=xid)


def _partial_old(table: str, op: str) -> Drift:
    return Drift(table, f"an {op} of {table} came without its whole old row, so the document it leaves cannot "
                 "be found: the REPLICA IDENTITY of the table, or of the partition the row is in, is not FULL",
                 "start flusso again: it sets REPLICA IDENTITY FULL again (on every partition) and rebuilds "
                 "the indexes that use the table")


def _empty(conn: psycopg.Connection, part: Part) -> bool:
    """True if the partition holds no row (False if it is gone, or locked: a rebuild then)."""
    try:
        row = conn.execute(
            sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(*split_table(part.name)))
        ).fetchone()
    except (errors.UndefinedTable, errors.LockNotAvailable, errors.InsufficientPrivilege):
        return False
    return bool(row and row[0])


def _retryable(err: psycopg.Error) -> bool:
    state = err.sqlstate or ""
    return not state or state.startswith(_RETRYABLE_CLASSES)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextmanager
def _sql_errors(what: str) -> Iterator[None]:
    """Turn a database's refusal during set-up into a `SourceError` that says what to do."""
    try:
        yield
    except errors.InsufficientPrivilege as err:
        raise SourceError(
            f"{what}: {_first_line(err)} (the source user needs to own the tables, or be a superuser, "
            "to create the publication and set replica identity; or create them beforehand)"
        ) from err
    except psycopg.Error as err:
        raise SourceError(f"{what}: {_first_line(err)}") from err
