"""The one query of a slot's state, and the slot's own lifecycle: advance, drop.

`pg_replication_slots` is read here and nowhere else (set-up, teardown, the engine's check at each
reconnect, `flusso status`, `flusso validate` and the benchmarks all call `read_slot`), so what a
slot looks like to flusso has one definition.
"""

from __future__ import annotations

import time

import psycopg
from psycopg import errors

from ...changes import lsn_to_int
from ...error import SourceError
from ..slots import SlotInfo, WalServer

_SLOT_QUERY = """
SELECT pg_current_wal_lsn()::text, pg_size_bytes(current_setting('max_slot_wal_keep_size')),
       pg_size_bytes(current_setting('max_wal_size')), pg_size_bytes(current_setting('wal_segment_size')),
       (SELECT setting FROM pg_settings WHERE name = 'data_directory'), current_setting('port')::int,
       extract(epoch FROM pg_postmaster_start_time())::bigint, pg_has_role('pg_monitor', 'USAGE'),
       s.slot_name IS NOT NULL, s.plugin, s.slot_type, s.database, s.active, s.active_pid,
       s.confirmed_flush_lsn::text, s.restart_lsn::text, s.wal_status, s.safe_wal_size,
       (SELECT count(*) FROM pg_replication_slots)
FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = %s
"""


def read_slot(conn: psycopg.Connection, slot: str, *, wal_dir: bool = True) -> tuple[WalServer, SlotInfo | None]:
    """The server's WAL settings and the slot (None if it does not exist), read-only.

    Everything comes from what an ordinary replication role may read; what needs more (the data
    directory, the size of pg_wal) is None instead of an error. `wal_dir=False` skips listing
    pg_wal (a second query), for callers that only want the slot, often.
    """
    row = conn.execute(_SLOT_QUERY, (slot,)).fetchone()
    assert row is not None  # the query always returns one row
    (current, keep, max_wal, segment, data_dir, port, started, monitor,
     exists, plugin, kind, database, active, pid, confirmed, restart, wal_status, safe, used) = row
    wal_dir_bytes = None
    if monitor and wal_dir:
        try:
            with conn.transaction():  # a savepoint: a refusal must not abort the caller's transaction
                wal_dir_bytes = conn.execute("SELECT coalesce(sum(size), 0)::bigint FROM pg_ls_waldir()").fetchone()[0]
        except errors.InsufficientPrivilege:  # a managed service's restricted pg_monitor
            wal_dir_bytes = None
    current_i = lsn_to_int(current)
    server = WalServer(
        current=current_i, max_slot_wal_keep_size=None if keep < 0 else int(keep), max_wal_size=int(max_wal),
        wal_segment_size=int(segment), data_directory=data_dir, port=port, started_at=int(started),
        wal_dir_bytes=None if wal_dir_bytes is None else int(wal_dir_bytes), slots_used=int(used),
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


def move_slot(conn: psycopg.Connection, slot: str, lsn: str, tries: int) -> bool:
    """Move an inactive slot's confirmed position up to `lsn` (`pg_replication_slot_advance`); a slot
    already there or beyond, or gone, is left as it is. While another process holds the slot
    (`ObjectInUse`: a walsender still exiting, or another consumer), try again every 0.1 s, `tries`
    times in all: False if it stayed held. Any other error is raised."""
    target = lsn_to_int(lsn)

    def done() -> bool:
        _, info = read_slot(conn, slot, wal_dir=False)
        return info is None or info.confirmed_flush_lsn is None or info.confirmed_flush_lsn >= target

    for _ in range(tries):
        if done():
            return True
        try:
            conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, lsn))
            return True
        except errors.UndefinedObject:  # dropped since it was read
            return True
        except errors.InvalidParameterValue:  # moved beyond `lsn` since it was read (never backwards)
            if done():
                return True
            raise
        except errors.ObjectInUse:
            time.sleep(0.1)
    return False


def remove_slot(conn: psycopg.Connection, slot: str, wait_s: float = 10.0) -> None:
    """Drop the slot if it exists, ending the server process that holds it, if any."""
    deadline = time.monotonic() + wait_s
    while True:
        _, info = read_slot(conn, slot, wal_dir=False)
        if info is None:
            return
        if info.active_pid is not None:
            conn.execute("SELECT pg_terminate_backend(%s)", (info.active_pid,))
        try:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            return
        except errors.ObjectInUse as err:
            if time.monotonic() > deadline:
                raise SourceError(f'replication slot "{slot}" stays in use: not dropped') from err
            time.sleep(0.1)
        except errors.UndefinedObject:
            return
