"""PostgreSQL's own account of a measurement: pg_stat_statements, reset before and read after, its
statements grouped by who sends them (flusso's build and resolve, the writers' DML, the rest).

Needs `shared_preload_libraries = 'pg_stat_statements'` (services/postgres.sh sets it when it
creates the cluster; an older cluster needs it added and a restart): without it `reset` returns
False and `read` None, and the report says so. The walsender's decoding is not a statement: it shows
in the postgres process group's CPU only.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

# (group, pattern on the normalized statement text); the first match wins
GROUPS: list[tuple[str, str]] = [
    ("bench: its own probes",
     r"pg_replication_slots|pg_stat_statements|pg_database|pg_current_xact_id|pg_current_wal_insert_lsn"),
    ("build: snapshot position", r"pg_current_snapshot|pg_current_wal_lsn"),
    ("build: documents", r"json_build_object|jsonb_build_object|json_agg"),
    ("writers: DML", r"^\s*(INSERT|UPDATE|DELETE)\b"),
    ("resolve / other SELECT", r"^\s*(WITH|SELECT)\b"),
]


def group_of(query: str) -> str:
    for name, pattern in GROUPS:
        if re.search(pattern, query, re.IGNORECASE):
            return name
    return "other"


def reset(dsn: str) -> bool:
    """Empty the statistics (and create the extension in this database); False when not loaded."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT pg_stat_statements_reset()")
        return True
    except psycopg.Error:
        return False


def read(dsn: str, per: float, top: int = 5) -> dict[str, Any] | None:
    """Execution time and calls by group, per 1,000 of `per` (the changes measured), and the `top`
    statements by time; None when pg_stat_statements is not loaded."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT query, calls, total_exec_time, total_plan_time, rows FROM pg_stat_statements "
                "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchall()
    except psycopg.Error:
        return None
    groups: dict[str, dict[str, float]] = {}
    for query, calls, exec_ms, plan_ms, _ in rows:
        g = groups.setdefault(group_of(query), {"calls": 0, "ms": 0.0})
        g["calls"] += calls
        g["ms"] += exec_ms + plan_ms
    scale = 1000 / per if per else 0.0
    return {
        "per_1000_changes": {name: {"calls": round(g["calls"] * scale, 1), "ms": round(g["ms"] * scale, 1)}
                             for name, g in sorted(groups.items(), key=lambda kv: -kv[1]["ms"])},
        "top": [{"query": " ".join(q.split())[:160], "calls": c, "ms": round(e + p, 1), "rows": r}
                for q, c, e, p, r in sorted(rows, key=lambda row: -(row[2] + row[3]))[:top]],
    }
