"""`PollingCapture`: live changes from a trigger-fed change log, for databases without logical
replication (`wal_level` below logical, no REPLICATION attribute).

`install.py` says what is installed, `poll.py` why polling by snapshots loses nothing and how
positions are made, `stream.py` the poll loop (one poller per slot: a session advisory lock),
`health.py` what `flusso status` shows. The cursor row is the slot's counterpart: its position only
moves by `ack`, never past the engine's limit, so `slotstate.py`'s argument holds unchanged, and a
cursor made again (teardown, a dropped schema) is a new incarnation.

Acknowledging poll k writes its snapshot into the cursor, then deletes the rows of the transactions
visible in it, in batches of `DELETE_BATCH` (a restart re-delivers whatever was not deleted yet:
rows of transactions the cursor's snapshot sees are never delivered again, and are deleted by the
next acknowledgement).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import psycopg
from psycopg import sql

from ...catalog import Catalog
from ...changes import Change, Position, lsn_to_int
from ...config import qualify, split_table
from ...error import SourceError
from ...keys import conninfo
from ...plan import Plan
from ...refusals import connect_failure
from .. import Repairs, refresh
from ..errors import first_line
from ..slots import SlotHealth, SlotInfo
from ..snapshot import SNAPSHOT_PAGE, keyset_snapshot
from .health import Backlog, judge, read_backlog, read_info
from .install import Install
from .stream import Stream

log = logging.getLogger("flusso_engine.capture.polling")

DELETE_BATCH = 5000
DELETE_ROUNDS = 20  # per acknowledgement: a large backlog is removed over several


def recorded_columns(plan: Plan, catalog: Catalog, tables: Sequence[str]) -> dict[str, list[str]]:
    """Per table, the columns its triggers record: its primary key, every index key rooted at it, and
    what resolve reads of its rows (`plan.old_columns`, the set `needs_full_identity` derives)."""
    out: dict[str, list[str]] = {}
    for table in tables:
        found = catalog.get(table)
        cols = list(found.primary_key) if found is not None else []
        for index in plan.indexes.values():
            if index.root == table:
                cols += index.key
        cols += sorted(plan.old_columns.get(table, ()))
        out[table] = list(dict.fromkeys(cols))
    return out


class PollingCapture(Stream):
    """The `ChangeCapture` over flusso's change log (see the module doc)."""

    def __init__(self, dsn: str, slot: str, schema: str, columns: Mapping[str, Sequence[str]],
                 stop: threading.Event, *, poll_interval_s: float = 0.2, slot_wait_s: float = 60.0,
                 long_transaction_s: float = 300.0, watch_interval_s: float = 5.0,
                 reconnect_attempts: int = 8, reconnect_backoff_s: float = 0.5, max_backoff_s: float = 10.0,
                 snapshot_page: int = SNAPSHOT_PAGE, matviews: Sequence[str] = ()) -> None:
        self._dsn = dsn
        self.slot = slot
        self.install = Install(schema, slot, columns)
        self._stop = stop
        self._poll_interval_s = poll_interval_s
        self._slot_wait_s = slot_wait_s
        self._long_transaction_s = long_transaction_s
        self._watch_interval_s = watch_interval_s
        self._reconnect_attempts = reconnect_attempts
        self._backoff_s = reconnect_backoff_s
        self._max_backoff_s = max_backoff_s
        self._snapshot_page = snapshot_page
        self._log = log
        self._state = threading.Lock()
        self._ack_io = threading.Lock()
        self._ack_conn: psycopg.Connection | None = None
        self._acked: Position = 0  # the cursor's position, as this process last wrote or read it
        self._wanted: Position = 0  # the most the caller acknowledged (the limit may hold it back)
        self._limit: Position | None = None
        self._polls: OrderedDict[Position, str] = OrderedDict()  # delivered, unacknowledged: position -> snapshot
        self._fingerprints: dict[str, list] = {}
        self._matviews = sorted(qualify(v) for v in matviews)  # watched for REFRESH (`capture/refresh.py`)
        self.repairs = Repairs()
        self.verify_slot: Callable[[], None] | None = None
        self.reconnects = 0

    # --- connections ---------------------------------------------------------------------------

    def _conninfo(self) -> str:
        return conninfo(self._dsn, connect_timeout=10, keepalives=1, keepalives_idle=30, keepalives_interval=10,
                        keepalives_count=3, application_name="flusso")

    def _connect(self, autocommit: bool = True) -> psycopg.Connection:
        try:
            return psycopg.connect(self._conninfo(), autocommit=autocommit)
        except psycopg.OperationalError as err:
            raise SourceError(connect_failure(self._dsn, err)) from err

    @contextmanager
    def _sql(self) -> Iterator[psycopg.Connection]:
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except psycopg.errors.InsufficientPrivilege as err:
            raise SourceError(f"{what}: {first_line(err)} (capture: polling needs to own the tables, or the "
                              f"TRIGGER privilege on them, and CREATE on the database or on schema "
                              f"{self.install.schema}: `flusso validate` says which)") from err
        except psycopg.errors.LockNotAvailable as err:
            raise SourceError(f"{what}: {first_line(err)} (a long transaction holds a lock on a table whose "
                              "trigger has to be created: end it, or run again when it is done)") from err
        except psycopg.Error as err:
            raise SourceError(f"{what}: {first_line(err)}") from err

    # --- set-up --------------------------------------------------------------------------------

    def prepare(self, tables: Sequence[str]) -> bool:
        """Install (idempotently) the change log, cursor and triggers; True if the cursor was made."""
        self.repairs = Repairs()
        with self._sql() as conn, self._errors(f"installing capture: polling in schema {self.install.schema}"):
            created = self.install.prepare(conn, self.repairs)
            cursor = self.install.cursor(conn)
            slot = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s AND database = "
                                "current_database()", (self.slot,)).fetchone()
        if slot is not None:  # switched from capture: wal: the old slot keeps every WAL segment from here on
            log.warning("replication slot %s still exists (%s) although capture is polling: it keeps WAL for ever; "
                        "drop it once no WAL capture uses it: SELECT pg_drop_replication_slot('%s')",
                        self.slot, "active" if slot[0] else "inactive", self.slot)
        assert cursor is not None
        with self._state:
            self._acked = self._wanted = cursor[1]
        self._fingerprints = self.table_fingerprints(self.watched)
        if created:
            log.info("installed capture: polling for slot %s in schema %s (%d tables)", self.slot,
                     self.install.schema, len(self.install.columns))
        return created

    def snapshot(self, table: str, key: Sequence[str]) -> Iterator[Change]:
        return keyset_snapshot(self._sql, table, key, self._snapshot_page, self._errors)

    def drop_slot(self) -> None:
        with self._sql() as conn:
            self.install.forget(conn)

    def teardown(self) -> None:
        with self._sql() as conn, self._errors("tearing down capture: polling"):
            self.install.teardown(conn)
        log.info("dropped the triggers, change log and cursor of slot %s (schema %s)", self.slot, self.install.schema)

    def close(self) -> None:
        with self._ack_io:
            if self._ack_conn is not None:
                self._ack_conn.close()
                self._ack_conn = None

    # --- acknowledgements ----------------------------------------------------------------------

    def ack(self, position: Position) -> None:
        """Everything at or before `position` is durable downstream: move the cursor to the latest
        delivered poll at or below it (and the limit), then delete what its snapshot sees."""
        with self._state:
            self._wanted = max(self._wanted, position)
        self._apply_ack()

    def set_limit(self, position: Position | None) -> None:
        with self._state:
            self._limit = position
        self._apply_ack()

    @property
    def idle(self) -> Position:
        """An idle change log has nothing to confirm: the cursor moves only with delivered polls."""
        return self._acked

    def _apply_ack(self) -> None:
        with self._state:
            bound = self._wanted if self._limit is None else min(self._wanted, self._limit)
            due = [p for p in self._polls if p <= bound]
            if not due or due[-1] <= self._acked:
                return
            position, snapshot = due[-1], self._polls[due[-1]]
        with self._ack_io:
            try:
                conn = self._ack_conn = self._ack_conn if self._ack_conn is not None and not self._ack_conn.closed \
                    else self._connect()
                conn.execute(sql.SQL("UPDATE {} SET snapshot = %s::pg_snapshot, position = %s, acked_at = now() "
                                     "WHERE slot = %s AND position < %s").format(self.install.cursors),
                             (snapshot, position, self.slot, position))
                with self._state:
                    self._acked = max(self._acked, position)
                    for p in due:
                        self._polls.pop(p, None)
                self._clean(conn, snapshot)
            except (psycopg.Error, SourceError) as err:  # not lost: a later ack, or a restart, delivers again
                log.warning("could not move the polling cursor of slot %s to %s (%s): it is retried at the next "
                            "acknowledgement", self.slot, position, first_line(err))
                if self._ack_conn is not None:
                    self._ack_conn.close()
                    self._ack_conn = None

    def _clean(self, conn: psycopg.Connection, snapshot: str) -> None:
        """Delete the rows of the transactions `snapshot` sees, a batch at a time."""
        statement = sql.SQL(
            "DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE slot = %(slot)s "
            "AND xid < pg_snapshot_xmax(%(s)s::pg_snapshot) AND pg_visible_in_snapshot(xid, %(s)s::pg_snapshot) "
            "LIMIT %(n)s))").format(t=self.install.changes)
        for _ in range(DELETE_ROUNDS):
            done = conn.execute(statement, {"slot": self.slot, "s": snapshot, "n": DELETE_BATCH}).rowcount
            if done < DELETE_BATCH:
                return

    # --- inspection ----------------------------------------------------------------------------

    def current_position(self) -> Position:
        with self._sql() as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return lsn_to_int(row[0])

    def timeline(self) -> int:
        with self._sql() as conn:
            row = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
        assert row is not None
        return int(row[0][:8], 16)

    def slot_info(self) -> SlotInfo | None:
        with self._sql() as conn:
            return read_info(conn, self.install)

    def backlog(self) -> Backlog | None:
        """Unacknowledged rows, the oldest one's age, and the oldest open transaction (the horizon)."""
        with self._sql() as conn:
            return read_backlog(conn, self.install)

    def health(self, warn_lag: int) -> SlotHealth:
        with self._sql() as conn:
            info = read_info(conn, self.install)
            backlog = read_backlog(conn, self.install) if info is not None else None
        return judge(self.slot, info, backlog, self._long_transaction_s)

    @property
    def watched(self) -> list[str]:
        """What the catalog watch fingerprints: the captured tables and the materialized views."""
        return [*self.install.columns, *self._matviews]

    def table_fingerprints(self, tables: Sequence[str]) -> dict[str, list]:
        """Each table's OID, and its partitions with their storage: a change means rows changed that
        no trigger reported (a partition attached, detached or truncated on its own); a materialized
        view's REFRESH the same way (`capture/refresh.py`)."""
        views = [t for t in tables if qualify(t) in self._matviews]
        with self._sql() as conn:
            refreshes = refresh.fingerprints(conn, views)
            rows = conn.execute(
                """SELECT t.name, c.oid::int8,
                          coalesce((SELECT array_agg(i.inhrelid::regclass::text || ':' || p.relfilenode
                                                     ORDER BY i.inhrelid::regclass::text)
                                    FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhrelid
                                    WHERE i.inhparent = c.oid), '{}')
                   FROM unnest(%s::text[], %s::text[], %s::text[]) AS t(name, nsp, rel)
                   JOIN pg_namespace n ON n.nspname = t.nsp JOIN pg_class c ON c.relnamespace = n.oid
                                      AND c.relname = t.rel""",
                (list(tables), [split_table(t)[0] for t in tables], [split_table(t)[1] for t in tables]),
            ).fetchall()
        return {**{name: [oid, list(parts)] for name, oid, parts in rows}, **refreshes}
