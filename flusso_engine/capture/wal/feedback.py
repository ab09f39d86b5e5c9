"""Acks and standby status updates: how far the slot may move, and telling the server.

The position reported is the most the caller acked, or an idle keepalive's WAL end when nothing
received is unflushed, and never more than `limit` (see `capture.py`). A feedback thread sends it
every `status_interval_s` while the consumer is blocked, so the walsender never times out; `ack`
sends at once. After `stream()` has returned, an ack moves the slot with SQL (`Setup._advance_slot`).
"""

from __future__ import annotations

import threading

import psycopg

from ...changes import Position
from .base import WalBase, first_line
from .replication import keepalive, standby_status


class Feedback(WalBase):
    """The part of `WalCapture` that acknowledges: positions, status updates, the feedback thread."""

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
            self._log.debug("status update not sent: %s", first_line(err))
            return
        self._sent = position

    def _feedback_loop(self, done: threading.Event) -> None:
        """Keep the walsender from timing out while the consumer is blocked (see the module doc)."""
        while not done.wait(self._status_interval_s):
            with self._io:
                self._send_locked(self._flushed())

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

