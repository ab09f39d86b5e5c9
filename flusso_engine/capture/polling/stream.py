"""The poll loop of `PollingCapture`: one poller per slot, polls by snapshot, reconnects, and the
watch for what no trigger reports.

- **One poller.** The loop holds a session advisory lock named after the slot for as long as it
  runs; a second `flusso run` on the same slot waits up to `source.slot_wait_s`, then stops saying
  which process holds it (`slot_info().active` reads the same lock).
- **Polls** (`poll.py` holds the argument): a REPEATABLE READ transaction whose first statement reads
  the snapshot and the position; the rows come through a server-side cursor, so a large backlog is
  streamed under the queue's back-pressure rather than loaded.
- **Reconnects** keep the last delivered poll's snapshot: a poll cut short by a lost connection is
  taken again whole (the pipeline builds documents from current rows: repeating is harmless).
- **The watch**, every few seconds: a trigger of this slot dropped or disabled stops the engine
  before anything later is acknowledged (changes made meanwhile were not recorded; the next start
  makes it again and rebuilds the indexes that read the table); a table's partitions attached,
  detached or truncated alone, or its storage replaced, become a `resync` change (its indexes rebuild).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import psycopg

from ...changes import Change, Position, commit, lsn_to_int
from ...error import SourceError
from ..errors import first_line, retryable
from .install import Install, trigger_names
from .poll import changes_of, poll_statement

if TYPE_CHECKING:
    from .capture import PollingCapture

LOCK_CLASS = 0x666C7573  # "flus": the advisory lock's first key; the second is hashtext(slot)
FETCH = 2000  # rows per round trip of the poll's cursor


class Stream:
    """Mixed into `PollingCapture`."""

    _stop: threading.Event
    _log: logging.Logger
    slot: str
    install: Install
    _matviews: list[str]
    _polls: OrderedDict[Position, str]
    verify_slot: Callable[[], None] | None

    def stream(self: PollingCapture) -> Iterator[Change]:
        """Changes in transaction groups, until the stop event is set."""
        conn = self._hold()
        statement = poll_statement(self.install.changes, self.install.columns)
        cursor = self.install.cursor(conn)
        if cursor is None:
            conn.close()
            raise SourceError(f"the polling cursor of slot {self.slot} is gone (schema {self.install.schema} "
                              "dropped, or `flusso teardown`): start `flusso run` again; it reinstalls and reseeds")
        prev, last = cursor[0], cursor[1]
        watched = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    if time.monotonic() - watched >= self._watch_interval_s:
                        yield from self._watch(conn, last)
                        watched = time.monotonic()
                    prev, last = yield from self._poll(conn, statement, prev, last)
                except psycopg.Error as err:
                    if not retryable(err):
                        raise SourceError(f"{self._poll_what()}: {first_line(err)}") from err
                    conn.close()
                    conn = self._reconnect(err)
                    continue
                except SourceError as err:  # a connection of its own (the watch's) could not be made
                    if not isinstance(err.__cause__, psycopg.OperationalError):
                        raise
                    conn.close()
                    conn = self._reconnect(err.__cause__)
                    continue
                self._stop.wait(self._poll_interval_s)
        finally:
            conn.close()

    def _poll(self: PollingCapture, conn: psycopg.Connection, statement, prev: str,  # noqa: ANN001
              last: Position) -> Iterator[Change]:
        """One poll; returns the snapshot and position to poll from next (the generator's value)."""
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            row = conn.execute("SELECT pg_current_snapshot()::text, pg_current_wal_lsn()::text").fetchone()
            assert row is not None
            snapshot, position = row[0], lsn_to_int(row[1])
            with conn.cursor(name="flusso_poll") as cur:
                cur.itersize = FETCH
                cur.execute(statement, {"slot": self.slot, "prev": prev})
                rows = iter(cur)
                first = next(rows, None)
                if first is None:
                    return snapshot, last  # nothing new: the next poll compares with this snapshot
                if position <= last:  # no WAL since the last delivered poll: take it again later
                    return prev, last

                def everything() -> Iterator[tuple]:
                    yield first
                    yield from rows

                with self._state:
                    self._polls[position] = snapshot  # before its last marker can be acknowledged
                yield from changes_of(everything(), position, last, self.install.columns)
        return snapshot, position

    def _poll_what(self: PollingCapture) -> str:
        return (f"reading the change log of slot {self.slot} (schema {self.install.schema}) failed, and nothing "
                "after the last flush was acknowledged. If a table the config reads changed (a column dropped, "
                "renamed or retyped), fix flusso.yaml or the table, then start `flusso run` again")

    def _hold(self: PollingCapture) -> psycopg.Connection:
        """A connection holding this slot's advisory lock (waiting up to `slot_wait_s` for a crashed
        run's session to go), checked by the engine's `verify_slot`."""
        conn = self._connect()
        deadline = time.monotonic() + self._slot_wait_s
        while True:
            row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (LOCK_CLASS, self.slot)).fetchone()
            if row and row[0]:
                break
            if time.monotonic() >= deadline or self._stop.is_set():
                info = self.slot_info()
                conn.close()
                holder = f" (PostgreSQL backend pid {info.active_pid})" if info and info.active_pid else ""
                raise SourceError(
                    f'capture: polling for slot "{self.slot}" is in use by another flusso process{holder}: two '
                    "pollers of one slot would each acknowledge the other's changes. Stop the other one (or give "
                    f"this config another slot), then start again; waited {self._slot_wait_s:.0f}s (source.slot_wait_s)"
                )
            time.sleep(0.5)
        if self.verify_slot is not None:
            self.verify_slot()
        return conn

    def _reconnect(self: PollingCapture, err: BaseException) -> psycopg.Connection:
        delay = self._backoff_s
        for attempt in range(1, self._reconnect_attempts + 1):
            self._log.warning("lost the connection to the change log of slot %s (%s); reconnecting (%d/%d)",
                              self.slot, first_line(err),
                              attempt, self._reconnect_attempts)
            if self._stop.wait(delay):
                break
            try:
                conn = self._hold()
            except SourceError as again:
                err = again
                delay = min(delay * 2, self._max_backoff_s)
                continue
            self.reconnects += 1
            return conn
        raise SourceError(
            f"lost the connection to PostgreSQL while polling slot {self.slot} and could not reconnect "
            f"after {self._reconnect_attempts} attempts ({err}); nothing after the last flush was acknowledged: "
            "start `flusso run` again once the database is back"
        )

    def _watch(self: PollingCapture, conn: psycopg.Connection, last: Position) -> Iterator[Change]:
        """Stop on a trigger gone or disabled; a `resync` for a table whose storage changed unreported."""
        have = {(t.table, t.name): t for t in self.install.triggers(conn)}
        for table in self.install.columns:
            for name, truncate in zip(trigger_names(self.slot), (False, True), strict=True):
                found = have.get((table, name))
                if found is None or found.enabled != "A" or found.args != self.install.args(table, truncate):
                    what = "dropped" if found is None else "changed" if found.enabled == "A" else "disabled"
                    raise SourceError(
                        f"the trigger {name} on {table} was {what} while flusso was capturing: changes to {table} "
                        "since then were not recorded; nothing after the last flush was acknowledged. Start "
                        f"`flusso run` again: it makes the trigger again and rebuilds every index that reads {table}"
                    )
        now = self.table_fingerprints(self.watched)
        changed = [t for t in self.watched if now.get(t) != self._fingerprints.get(t)]
        for table in changed:
            if table not in now:
                what = "materialized view" if table in self._matviews else "table"
                raise SourceError(f"{what} {table} no longer exists (dropped or renamed while flusso was capturing); "
                                  "nothing after the last flush was acknowledged: fix flusso.yaml or the database, "
                                  "then start again")
        if changed:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            assert row is not None
            for table in changed:
                what = ("materialized view %s was refreshed" if table in self._matviews
                        else "partitions or storage of %s changed")
                self._log.warning(what + " without row changes: the indexes that read it are rebuilt", table)
                yield Change(table=table, op="resync", position=lsn_to_int(row[0]))
            yield commit(last)
            self._fingerprints.update({t: now[t] for t in changed})
