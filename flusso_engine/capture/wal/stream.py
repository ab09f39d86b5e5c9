"""The stream: START_REPLICATION, then read, decode and hand out changes, reconnecting when lost.

`stream()` is a generator its consumer drives, and the consumer blocks when the queue is full, so
the reading holds the connection's lock (`_io`) only while it takes what libpq has buffered, never
across a `select` or a `yield` (the feedback thread needs it meanwhile: `feedback.py`). A dropped
connection is reopened with backoff (`backoff.py`) up to a bound, from the last flushed position;
transactions at or before it that the server sends again are skipped. A slot still held by another
connection (a crashed run's walsender not yet gone) is waited for, up to `slot_wait_s`.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Iterator

import psycopg
from psycopg import errors, pq, sql

from ...backoff import Attempts, Backoff
from ...changes import Change, Position, commit, int_to_lsn
from ...error import SourceError
from ...refusals import connect_failure
from . import pgoutput
from .base import Lost, Rel, WalBase, first_line, retryable
from .pgoutput import UNCHANGED, Value
from .replication import XLOG_HEADER
from .schema import State, relation_problem
from .watch import partial_old

_DRAIN_MAX = 2000  # messages taken from libpq's buffer per lock hold ...
_DRAIN_BYTES = 4 << 20  # ... and bytes: what a blocked consumer leaves held in memory
_POLL_S = 0.2  # longest wait on the socket before looking at the stop event again

# Connection failures that waiting will not cure. Text is all there is to tell them by: libpq reports
# a connection that failed to open (the server's FATAL during authentication or start-up included)
# as an error message on the connection alone, with no result to carry the server's SQLSTATE, so
# psycopg raises a bare OperationalError whose `sqlstate` is None (psycopg 3.3, libpq 18: a wrong
# password, an unknown database or role, pg_hba.conf and a refused connection all read the same).
_REFUSALS = (
    "authentication failed",
    "pg_hba.conf",
    "does not exist",
    "must be superuser or replication role",
    "permission denied",
)


def refused(err: psycopg.OperationalError) -> bool:
    """Whether a failed connection attempt was the server's refusal rather than the server away."""
    return any(marker in str(err) for marker in _REFUSALS)


class Stream(WalBase):
    """The part of `WalCapture` that streams: the replication connection and the receive loop."""

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
        if self._expected is not None and (self._tables or self._matviews):
            watcher = threading.Thread(
                target=self._watch_loop, args=(done,), name=f"flusso-watch-{self.slot}", daemon=True
            )
            watcher.start()
        # the first connection and `reconnect_attempts` more, in a row (a connection that starts resets it)
        tries = Attempts(Backoff(self._backoff_s, self._max_backoff_s), self._reconnect_attempts + 1, self._stop)
        try:
            while not self._stop.is_set():
                try:
                    if not self._start():
                        return
                    tries.succeeded()
                    yield from self._receive()
                    return
                except Lost as err:
                    self._close()
                    delay = tries.failed()
                    if delay is None:
                        raise SourceError(
                            "lost the replication connection to PostgreSQL and could not get it back after "
                            f"{self._reconnect_attempts} attempts ({err}); nothing after the last ack was "
                            "lost: start again once the database is reachable"
                        ) from err
                    self.reconnects += 1
                    self._log.warning(
                        "replication connection lost (%s); reconnecting in %.1fs (attempt %d of %d)",
                        err, delay, tries.failures, self._reconnect_attempts,
                    )
                    if tries.pause(delay):
                        return
        finally:
            done.set()
            self._finish()
            feeder.join(timeout=5)
            if watcher is not None:
                watcher.join(timeout=5)

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
                if refused(err):
                    raise SourceError(f"replication connection: {connect_failure(self._dsn, err)}") from err
                raise Lost(first_line(err)) from err
            try:
                conn.pgconn.send_query(command.as_bytes(conn))
                res = conn.pgconn.get_result()
            except psycopg.OperationalError as err:
                conn.close()
                raise Lost(first_line(err)) from err
            if res is not None and res.status == pq.ExecStatus.COPY_BOTH:
                break
            err = errors.error_from_result(res) if res is not None else errors.OperationalError("no result")
            conn.close()
            if not isinstance(err, errors.ObjectInUse):
                if retryable(err):
                    raise Lost(first_line(err)) from err
                missing = isinstance(err, errors.UndefinedObject)
                hint = " (prepare() creates it: was it dropped?)" if missing else self._lost_hint()
                raise SourceError(f"START_REPLICATION on slot {self.slot} failed: {first_line(err)}{hint}") from err
            now = time.monotonic()
            if now >= deadline:
                raise SourceError(
                    f'replication slot "{self.slot}" is still in use after waiting {self._slot_wait_s:g}s '
                    f"({first_line(err)}). Another flusso may be running on it, or a crashed run's server "
                    "process has not exited yet: stop the other consumer, or end that server process "
                    "(pg_terminate_backend of the slot's active_pid in pg_replication_slots)"
                ) from err
            if now >= next_log:
                self._log.warning(
                    "replication slot %s is in use (%s); waiting up to %.0fs more for it to be released",
                    self.slot, first_line(err), deadline - now,
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
                raise Lost(first_line(err)) from err
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
                    raise Lost(first_line(err)) from err
            if not batch and not ended:
                try:
                    select.select([sock], [], [], _POLL_S)
                except (OSError, ValueError) as err:
                    raise Lost(str(err)) from err
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
                        yield self._schema_changed(partial_old(rel.table, "UPDATE"), position, xid)
                    yield _update(rel, msg, position, xid)
                elif cls is pgoutput.Delete:
                    rel = self._rel(msg.relation_oid)
                    if rel.full and msg.old_kind != "O":
                        yield self._schema_changed(partial_old(rel.table, "DELETE"), position, xid)
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
                    relations[msg.oid] = Rel(
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

    def _rel(self, oid: int) -> Rel:
        try:
            return self._relations[oid]
        except KeyError:
            raise pgoutput.DecodeError(f"a change to relation {oid} came before its Relation") from None

    def _end_of_copy(self, pg: pq.abc.PGconn) -> None:
        res = pg.get_result()
        if res is not None and res.status == pq.ExecStatus.FATAL_ERROR:
            err = errors.error_from_result(res)
            if isinstance(err, errors.UndefinedObject):  # the publication: the slot cannot vanish while used
                raise SourceError(self._publication_error(first_line(err))) from err
            if not retryable(err):
                raise SourceError(
                    f"replication from slot {self.slot} failed: {first_line(err)}{self._lost_hint()}"
                ) from err
            raise Lost(first_line(err)) from err
        raise Lost("the server ended replication")

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


def _old(rel: Rel, values: tuple[Value, ...], kind: str) -> dict[str, Value]:
    if kind == "K":  # only the identity's columns are real; the server sends the rest as NULL
        return {name: values[i] for i, name in rel.keys}
    return _new(rel, values)


def _new(rel: Rel, values: tuple[Value, ...]) -> dict[str, Value]:
    return dict(zip(rel.names, values, strict=False))


def _update(rel: Rel, msg: pgoutput.Update, position: Position, xid: int) -> Change:
    new = _new(rel, msg.new)
    old = None if msg.old is None or msg.old_kind is None else _old(rel, msg.old, msg.old_kind)
    if old is not None and UNCHANGED in msg.new:
        for name, value in new.items():
            if value is UNCHANGED and name in old and old[name] is not UNCHANGED:
                new[name] = old[name]  # FULL identity sent the old value, which is also the new one
    return Change(rel.table, "update", new=new, old=old, position=position, xid=xid)
