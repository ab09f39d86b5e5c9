"""What a capture acknowledged, whichever it is: a replication slot's confirmed position (`capture:
wal`) or a polling cursor's (`capture: polling`: its row in `POLLING_SCHEMA.cursors`, named by the
slot), its lag, and the fence a live run ends with (`commit_fence`, `wait_acked`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from flusso_engine.capture.wal import read_slot
from flusso_engine.changes import lsn_to_int

POLLING_SCHEMA = "flusso"  # where a `capture: polling` cursor is (source.polling_schema's default)


def polling_cursor(conn: psycopg.Connection, slot: str) -> tuple[int, str] | None:
    """(position, snapshot) of a `capture: polling` cursor named `slot` in `POLLING_SCHEMA`; None if none."""
    if conn.execute("SELECT to_regclass(%s) IS NULL", (f"{POLLING_SCHEMA}.cursors",)).fetchone()[0]:
        return None
    row = conn.execute(sql.SQL("SELECT position, snapshot::text FROM {} WHERE slot = %s").format(
        sql.Identifier(POLLING_SCHEMA, "cursors")), (slot,)).fetchone()
    return None if row is None else (int(row[0]), row[1])


def slot_lag(dsn: str, slot: str) -> int | None:
    """The slot's lag in WAL bytes; for a polling cursor of that name, the same as `flusso status` shows it
    (the current WAL position minus the cursor's)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        _, info = read_slot(conn, slot, wal_dir=False)
        if info is not None:
            return info.lag_bytes
        cursor = polling_cursor(conn, slot)
        if cursor is None:
            return None
        current = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0]
    return max(0, int(current) - cursor[0])


def wait_confirmed(dsn: str, slot: str, lsn: str, timeout: float) -> float | None:
    """The time (monotonic) the slot's confirmed position reached `lsn`; None after `timeout`."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            _, info = read_slot(conn, slot, wal_dir=False)
            if info is not None and (info.confirmed_flush_lsn or 0) >= lsn_to_int(lsn):
                return time.monotonic()
            time.sleep(0.05)
    return None


@dataclass(frozen=True)
class Fence:
    """A last commit after a run's writes: its WAL position (read after it) and its transaction id."""

    lsn: str
    xid: str


def commit_fence(dsn: str, marker: str, book: int) -> Fence:
    """`marker` into the book's subtitle, in a transaction whose id is kept (`wait_acked` needs it)."""
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE book SET subtitle = %s WHERE id = %s", (marker, book))
        xid = conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
        conn.commit()
        lsn = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
        conn.commit()
    return Fence(lsn, xid)


def wait_acked(dsn: str, slot: str, fence: Fence, timeout: float) -> float | None:
    """The time (monotonic) the capture acknowledged the fence; None after `timeout`. A replication
    slot: its confirmed position at or past the fence's LSN. A polling cursor: its snapshot sees the
    fence's transaction (its position is a WAL position read at a poll, which the WAL other databases
    write may carry past the LSN read after the fence's commit without any poll to deliver)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            _, info = read_slot(conn, slot, wal_dir=False)
            if info is not None:
                if (info.confirmed_flush_lsn or 0) >= lsn_to_int(fence.lsn):
                    return time.monotonic()
            else:
                cursor = polling_cursor(conn, slot)
                if cursor is not None and conn.execute("SELECT pg_visible_in_snapshot(%s::xid8, %s::pg_snapshot)",
                                                       (fence.xid, cursor[1])).fetchone()[0]:
                    return time.monotonic()
            time.sleep(0.05)
    return None
