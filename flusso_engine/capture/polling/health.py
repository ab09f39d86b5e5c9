"""What `flusso status`, the Dagster checks and the heartbeat say about polling capture.

There is no WAL to fill a disk with; what grows instead is the change log while nobody acknowledges
it (flusso stopped, or stuck), and what a long-open transaction holds back: its changes arrive only
when it commits, and until then the vacuum horizon (and so the change log's dead rows) waits for it.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from ..slots import Backlog, Reason, SlotHealth, SlotInfo
from .install import Install
from .stream import LOCK_CLASS

STOPPED_BACKLOG_S = 300.0  # unacknowledged rows this old, with no poller: flusso is not running


def read_info(conn: psycopg.Connection, install: Install) -> SlotInfo | None:
    """The cursor as a `SlotInfo` (`plugin` "polling"), None before the first `prepare`."""
    cursor = install.cursor(conn)
    if cursor is None:
        return None
    row = conn.execute(
        "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, current_database(), "
        "(SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::int8::oid "
        " AND objid = (hashtext(%s)::int8 & 4294967295)::oid AND objsubid = 2 AND granted LIMIT 1)",
        (LOCK_CLASS, install.slot),
    ).fetchone()
    assert row is not None
    current, database, pid = int(row[0]), row[1], row[2]
    return SlotInfo(slot=install.slot, plugin="polling", active=pid is not None, active_pid=pid,
                    confirmed_flush_lsn=cursor[1], restart_lsn=None, current=current,
                    lag_bytes=max(0, current - cursor[1]), wal_status=None, slot_type="polling", database=database)


def read_backlog(conn: psycopg.Connection, install: Install) -> Backlog | None:
    cursor = install.cursor(conn)
    if cursor is None:
        return None
    row = conn.execute(sql.SQL(
        "SELECT count(*), count(DISTINCT xid), extract(epoch FROM now() - min(at))::float8, "
        "pg_total_relation_size({name}) FROM {t} WHERE slot = %s AND NOT pg_visible_in_snapshot(xid, %s::pg_snapshot)"
    ).format(t=install.changes, name=sql.Literal(f"{install.schema}.changes")), (install.slot, cursor[0])).fetchone()
    assert row is not None
    horizon = conn.execute(
        "SELECT pid, extract(epoch FROM now() - xact_start)::float8, "
        "coalesce(usename, '?') || ' ' || coalesce(nullif(application_name, ''), 'no application_name') || ', ' "
        "|| coalesce(state, '?') FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND datname = current_database() "
        "AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL) AND xact_start IS NOT NULL "
        "AND coalesce(application_name, '') <> 'flusso' ORDER BY xact_start LIMIT 1"
    ).fetchone()
    return Backlog(rows=int(row[0]), transactions=int(row[1]), oldest_s=row[2], bytes=int(row[3] or 0),
                   horizon_pid=horizon[0] if horizon else None, horizon_s=horizon[1] if horizon else None,
                   horizon_what=horizon[2] if horizon else "")


def judge(slot: str, info: SlotInfo | None, backlog: Backlog | None, long_transaction_s: float) -> SlotHealth:
    reasons: list[Reason] = []
    if info is not None and backlog is not None:
        if not info.active and backlog.rows and (backlog.oldest_s or 0) >= STOPPED_BACKLOG_S:
            reasons.append(Reason(
                "warning", "change_log_growing",
                f"nobody polls slot {slot}, and its change log holds {backlog.rows} unacknowledged rows, the oldest "
                f"{_age(backlog.oldest_s)} old; it grows with every write to the tables flusso reads",
                "start `flusso run` (or the Dagster live_capture job); or `flusso teardown` if this config is gone"))
        if backlog.horizon_s is not None and backlog.horizon_s >= long_transaction_s:
            reasons.append(Reason(
                "warning", "long_transaction",
                f"a transaction has been open for {_age(backlog.horizon_s)} (pid {backlog.horizon_pid}, "
                f"{backlog.horizon_what}): its changes reach the index only when it commits, and until it ends "
                "vacuum cannot remove the change log's acknowledged rows",
                f"end it if it is abandoned: SELECT pg_terminate_backend({backlog.horizon_pid})"))
    level = "warning" if reasons else "ok"
    return SlotHealth(slot=slot, level=level, reasons=reasons, info=info, server=None, backlog=backlog)


def _age(seconds: float | None) -> str:
    s = int(seconds or 0)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
