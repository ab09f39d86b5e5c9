"""One snapshot for several sessions: a backfill builds its key ranges on K connections at once, all
from the same exported snapshot (`pg_export_snapshot()` / `SET TRANSACTION SNAPSHOT`).

Why one snapshot: the keys a page reads and the documents built for them then agree (a key read is
never built as a delete), and every document of the fill carries the same version, the position
read with the snapshot. Why not one snapshot for the whole fill: a document built from a snapshot
is written after it, and a delete committed meanwhile is protected only by its tombstone, which
OpenSearch keeps for `index.gc_deletes` (sized for the retries plus a minute for the build before
them: `sinks/opensearch/indexes.py`). So the exported snapshot is taken again once it is
`MAX_AGE_S` old, and the exporting transaction, the only long one, never pins vacuum for longer.
Each build imports the snapshot in a short transaction of its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg

from ...changes import Position, lsn_to_int
from ...error import SourceError

MAX_AGE_S = 20.0  # well inside the minute `gc_deletes` leaves a build before its write


@dataclass
class Exported:
    """An exported snapshot, held open by its connection until no build uses it."""

    id: str
    position: Position  # pg_current_wal_lsn() read by the exporting transaction: the fill's versions
    taken: float
    conn: psycopg.Connection
    users: int = 0
    retired: bool = field(default=False)


class SharedSnapshots:
    """The current exported snapshot, taken again when it is `max_age` old or broke. Thread-safe:
    each build `use`s one; a replaced snapshot's transaction ends when its last user is done."""

    def __init__(self, connect: Callable[[], psycopg.Connection], max_age: float = MAX_AGE_S) -> None:
        self._connect = connect
        self._max_age = max_age
        self._lock = threading.Lock()
        self._current: Exported | None = None
        self.taken = 0  # snapshots exported so far

    @contextmanager
    def use(self) -> Iterator[Exported]:
        with self._lock:
            current = self._current
            if current is None or time.monotonic() - current.taken >= self._max_age:
                if current is not None:
                    self._retire(current)
                current = self._current = self._export()
            current.users += 1
        try:
            yield current
        finally:
            with self._lock:
                current.users -= 1
                if current.retired and current.users == 0:
                    _end(current)

    def broken(self, snapshot: Exported) -> None:
        """A build could not use `snapshot` (a lost connection): the next `use` exports another."""
        with self._lock:
            if self._current is snapshot:
                self._current = None
                self._retire(snapshot)

    def close(self) -> None:
        with self._lock:
            if self._current is not None:
                self._retire(self._current)
                self._current = None

    def _retire(self, snapshot: Exported) -> None:
        snapshot.retired = True
        if snapshot.users == 0:
            _end(snapshot)

    def _export(self) -> Exported:
        try:
            conn = self._connect()
            conn.autocommit = False
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            lsn, snapshot_id = conn.execute("SELECT pg_current_wal_lsn()::text, pg_export_snapshot()").fetchone()
        except psycopg.OperationalError as err:
            raise SourceError(f"PostgreSQL failed while exporting the backfill's snapshot: {err}") from err
        self.taken += 1
        return Exported(snapshot_id, lsn_to_int(lsn), time.monotonic(), conn)


def _end(snapshot: Exported) -> None:
    """End the exporting transaction (it only read) and its connection."""
    try:
        snapshot.conn.close()
    except psycopg.Error:
        pass  # a broken connection ended it already
