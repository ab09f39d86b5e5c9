"""Schema changes under capture, as the WAL backend meets them (the rules are `schema.py`'s).

A Relation message that shows a definition the engine cannot follow stops the stream, unless the
change was committed before this start (then its tables' indexes are rebuilt: `_schema_changed`).
What sends no message through the slot (a table swapped out of the publication, an identity
changed on a quiet table, partitions attached, detached or truncated) a watcher thread finds by
re-reading the catalog every `watch_interval_s`, on a connection of its own; the stream raises or
yields what it found at its next turn.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
from psycopg import errors, sql

from ...changes import Change, Position, int_to_lsn, lsn_to_int
from ...config import split_table
from ...error import SourceError
from .. import refresh
from .base import WalBase, first_line
from .schema import Drift, Part, describe_partitions, partition_changes, read_state, state_problems


class SchemaWatch(WalBase):
    """The part of `WalCapture` that notices schema changes: in the stream, and by the watcher."""

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
                    self._log.debug("catalog check skipped: %s", first_line(err))
                    if conn is not None:
                        conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()

    def _watch_once(self, conn: psycopg.Connection) -> bool:
        """One re-read; True if it found a reason to stop."""
        assert self._expected is not None
        if not self._tables:  # every index reads materialized views alone: nothing else to watch
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            refreshed = self._refreshed(conn, lsn_to_int(row[0]) if row else 0)
            with self._watch_lock:
                self._watch_resync.extend(refreshed or [])
            return refreshed is None
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
        refreshed = self._refreshed(conn, now.position)
        if refreshed is None:
            return True
        with self._watch_lock:
            self._watch_resync.extend(resync + refreshed)
        self._catalog_state = now
        return False

    def _refreshed(self, conn: psycopg.Connection, position: Position) -> list[tuple[str, Position]] | None:
        """The materialized views refreshed since the last look (`capture/refresh.py`), to rebuild
        from; None (a stop set) when one is gone."""
        if not self._matviews:
            return []
        before, now = self._refreshes, refresh.fingerprints(conn, self._matviews)
        out = []
        for view in refresh.refreshed(before or now, now, self._matviews):
            if view not in now:
                with self._watch_lock:
                    self._watch_error = SourceError(
                        f"materialized view {view} no longer exists (dropped or renamed while flusso was capturing): "
                        "nothing after the last acknowledged change is lost; create it again or fix flusso.yaml, "
                        "then start again"
                    )
                return None
            self._log.warning("materialized view %s was refreshed (no row changes report that): rebuilding the "
                              "indexes that read it", view)
            out.append((view, position))
        self._refreshes = now
        return out

    def _type_name(self, oid: int, modifier: int) -> str:
        try:
            with self._sql() as conn:
                row = conn.execute("SELECT format_type(%s, %s)", (oid, None if modifier < 0 else modifier)).fetchone()
            return str(row[0]) if row else f"type {oid}"
        except (psycopg.Error, SourceError):
            return f"type {oid}"


def partial_old(table: str, op: str) -> Drift:
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
