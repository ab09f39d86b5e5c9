"""Capture real pgoutput messages from the PostgreSQL server, for the decoder's offline unit tests.

Run once (needs the server from `make services`); writes `messages.json` beside this file:

    .venv/bin/python tests/data/pgoutput/capture.py

Each step runs some SQL, then emits a non-transactional logical message `flusso-step` naming the
step; the stream is split at those markers, so every step's messages are exactly what its SQL
produced. The raw copy data of one XLogData and one keepalive are kept as well, for the framing.
"""

from __future__ import annotations

import json
import os
import select
import uuid
from pathlib import Path

import psycopg
from psycopg import pq, sql

HERE = Path(__file__).resolve().parent
ADMIN = os.environ.get("FLUSSO_TEST_PG_DSN", "postgresql://postgres:postgres@127.0.0.1:5432/postgres")

SETUP = [
    "CREATE TYPE mood AS ENUM ('sad', 'happy')",
    "CREATE DOMAIN posint AS integer CHECK (VALUE > 0)",
    """CREATE TABLE item (id int PRIMARY KEY, name text, price numeric(10, 2), in_stock bool, tags text[],
        mood mood, qty posint, body text, created timestamptz, ratio float8, big bigint)""",
    "ALTER TABLE item ALTER body SET STORAGE EXTERNAL",
    "CREATE TABLE item_full (id int, code text, note text, PRIMARY KEY (id, code))",
    "ALTER TABLE item_full REPLICA IDENTITY FULL",
    "CREATE TABLE other (id serial PRIMARY KEY)",
    "CREATE PUBLICATION pub FOR TABLE item, item_full, other",
]

STEPS: list[tuple[str, list[str]]] = [
    (
        "insert",
        [
            "BEGIN",
            """INSERT INTO item VALUES (1, 'Ünïcode ''quoted'' | pipe', 12.50, true, '{a,"b c"}', 'happy', 3,
                repeat('x', 5000), '2024-01-02 03:04:05.123456+00', 0.1, 9007199254740993)""",
            "INSERT INTO item (id) VALUES (2)",
            "COMMIT",
        ],
    ),
    ("update", ["UPDATE item SET name = 'renamed' WHERE id = 1"]),
    ("update_key", ["UPDATE item SET id = 10 WHERE id = 2"]),
    ("delete_key", ["DELETE FROM item WHERE id = 10"]),
    ("insert_full", ["INSERT INTO item_full VALUES (1, 'a', 'first')"]),
    ("update_full", ["UPDATE item_full SET note = 'second' WHERE id = 1"]),
    ("delete_full", ["DELETE FROM item_full WHERE id = 1"]),
    ("truncate", ["TRUNCATE item_full, other RESTART IDENTITY CASCADE"]),
    ("truncate_plain", ["TRUNCATE other"]),
    (
        "message",
        [
            "BEGIN",
            "SELECT pg_logical_emit_message(true, 'flusso', 'transactional content')",
            "COMMIT",
            "SELECT pg_logical_emit_message(false, 'flusso', '\\x00ff'::bytea)",
        ],
    ),
    ("origin", ["ORIGIN"]),  # run specially: a session with a replication origin set up
]


def main() -> None:
    dbname = f"flusso_capture_{uuid.uuid4().hex[:8]}"
    origin = f"flusso_capture_origin_{uuid.uuid4().hex[:8]}"
    dsn = psycopg.conninfo.make_conninfo(ADMIN, dbname=dbname)
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for stmt in SETUP:
                conn.execute(stmt)
            conn.execute("SELECT pg_create_logical_replication_slot('capture', 'pgoutput')")
            version = conn.execute("SHOW server_version").fetchone()[0]
            for name, stmts in STEPS:
                if stmts == ["ORIGIN"]:
                    conn.execute("SELECT pg_replication_origin_create(%s)", (origin,))
                    conn.execute("SELECT pg_replication_origin_session_setup(%s)", (origin,))
                    conn.execute("BEGIN")
                    conn.execute("SELECT pg_replication_origin_xact_setup('0/ABCDEF', now())")
                    conn.execute("INSERT INTO item (id, name) VALUES (3, 'from elsewhere')")
                    conn.execute("COMMIT")
                    conn.execute("SELECT pg_replication_origin_session_reset()")
                else:
                    for stmt in stmts:
                        conn.execute(stmt)
                conn.execute("SELECT pg_logical_emit_message(false, 'flusso-step', %s::text)", (name,))
        steps, raw = read_stream(dsn, [n for n, _ in STEPS])
        out = {
            "server_version": version,
            "note": "written by capture.py; each message is the hex of one XLogData payload",
            "steps": [
                {"step": name, "sql": stmts, "messages": steps[name]} for name, stmts in STEPS
            ],
            "raw_copy_data": raw,
        }
        (HERE / "messages.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {HERE / 'messages.json'} ({sum(len(v) for v in steps.values())} messages)")
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s",
                (dbname,),
            )
            admin.execute(
                "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = %s",
                (origin,),
            )
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def read_stream(dsn: str, names: list[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    conn = psycopg.connect(dsn, autocommit=True, replication="database")
    pg = conn.pgconn
    pg.send_query(
        b"START_REPLICATION SLOT capture LOGICAL 0/0 "
        b"(proto_version '1', publication_names 'pub', messages 'true')"
    )
    res = pg.get_result()
    assert res is not None and res.status == pq.ExecStatus.COPY_BOTH, res and res.error_message
    steps: dict[str, list[str]] = {n: [] for n in names}
    raw: dict[str, str] = {}
    current = 0
    try:
        while current < len(names):
            n, data = pg.get_copy_data(1)
            if n == 0:
                select.select([pg.socket], [], [], 5)
                pg.consume_input()
                continue
            body = bytes(data)
            if body[:1] == b"k":
                raw.setdefault("keepalive", body.hex())
                continue
            assert body[:1] == b"w"
            raw.setdefault("xlogdata", body.hex())
            payload = body[25:]
            if payload[:1] == b"M" and b"flusso-step\x00" in payload:
                current += 1
                continue
            steps[names[current]].append(payload.hex())
    finally:
        conn.close()
    return steps, raw


if __name__ == "__main__":
    main()
