"""Every supported root key type, end to end: backfill, live insert, update, key change and delete
reach the same document ids, and the index ends equal to a fresh build with no ghost left.

One database holds a small `item_<type>` table per key type, each with a one_to_many `part_<type>`
child whose foreign key has the same type (plus two children of another type than their root's key:
varchar under char(5), integer under bigint); one config has an index per table and one `flusso run`
follows them all. The database's own defaults (TimeZone, DateStyle, IntervalStyle) differ from the
ones flusso pins, so an id rendered in an unpinned session would differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from flusso_engine.config import load_config

from .e2e import Flusso, index_docs, wait_converged, write_config


@dataclass(frozen=True)
class KeyType:
    name: str
    sql_type: str  # the root key's type
    a: str  # backfilled, updated, then its key changed to b
    b: str  # inserted live (with a part), then deleted; then a takes its key
    c: str | None = None  # backfilled and left alone (None: the type has only two values)
    child_type: str | None = None  # the child's foreign key type, when not the root key's
    ids: tuple[str, ...] = ()  # the ids a user sees at the end, when worth spelling out


TYPES = [
    KeyType("int2", "smallint", "1", "2", "-3"),
    KeyType("int4", "integer", "10", "20", "2147483647"),
    KeyType("int8", "bigint", "9007199254740993", "-1", "42", ids=("-1", "42")),
    KeyType("numeric", "numeric", "1.50", "2", "-3.250", ids=("-3.250", "2")),
    KeyType("numeric62", "numeric(6,2)", "1.5", "2", "-3.25", ids=("-3.25", "2.00")),
    KeyType("text", "text", "a|b\\c", "plain", "tail "),
    KeyType("varchar", "varchar(20)", "x|y", "v", "w"),
    KeyType("bpchar", "char(5)", "ab", "cd", "e", ids=("cd   ", "e    ")),
    KeyType("uuid", "uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "00000000-0000-0000-0000-000000000001",
            "ffffffff-ffff-ffff-ffff-ffffffffffff"),
    KeyType("bool", "boolean", "true", "false", ids=("f",)),
    KeyType("date", "date", "2024-05-01", "0044-03-15 BC", "2000-02-29", ids=("0044-03-15 BC", "2000-02-29")),
    KeyType("time", "time", "12:34:56.789", "00:00", "23:59:59"),
    KeyType("timestamp", "timestamp", "2024-05-01 12:00:00", "1999-12-31 23:59:59.5", "2024-02-29 00:00:00"),
    KeyType("timestamptz", "timestamptz", "2024-05-01 12:00:00+02", "2024-05-01 09:00:00-05",
            "2024-01-01 00:00:00+00", ids=("2024-01-01 00:00:00+00", "2024-05-01 14:00:00+00")),
    KeyType("interval", "interval", "1 day 02:00:00", "3 mons", "-1 years", ids=("-1 years", "3 mons")),
    KeyType("inet", "inet", "10.0.0.1", "::1", "192.168.0.0/24", ids=("192.168.0.0/24", "::1")),
    KeyType("cidr", "cidr", "10.0.0.0/8", "2001:db8::/32", "192.168.1.0/24"),
    KeyType("macaddr", "macaddr", "08:00:2b:01:02:03", "08-00-2B-01-02-04", "ffffffffffff"),
    KeyType("enum", "mood", "happy", "sad", "meh"),
    KeyType("bpchar_varchar", "char(5)", "ab", "cd", "e", child_type="varchar(5)"),
    KeyType("int8_int4", "bigint", "10", "20", "30", child_type="integer"),
]


def _names(t: KeyType) -> tuple[sql.Identifier, sql.Identifier]:
    return sql.Identifier(f"item_{t.name}"), sql.Identifier(f"part_{t.name}")


def _schema(conn: psycopg.Connection, t: KeyType) -> None:
    item, part = _names(t)
    key, child = sql.SQL(t.sql_type), sql.SQL(t.child_type or t.sql_type)
    conn.execute(sql.SQL("CREATE TABLE {} (id {} PRIMARY KEY, title text NOT NULL)").format(item, key))
    conn.execute(sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, item_id {}, label text)").format(part, child))
    for value in (t.a, t.c):
        if value is not None:
            _root(conn, t, "INSERT INTO {item} (id, title) VALUES ({v}, 'backfilled')", v=value)
            _root(conn, t, "INSERT INTO {part} (item_id, label) VALUES ({cv}, 'old part')", cv=value)


def _root(conn: psycopg.Connection, t: KeyType, statement: str, **values: str) -> None:
    """Run `statement` with {item}, {part} and the values ({v}/{w} cast to the key's type, {cv}/{cw}
    to the child's)."""
    item, part = _names(t)
    parts = {}
    for name in values:
        cast = t.child_type if name.startswith("c") and t.child_type else t.sql_type
        parts[name] = sql.SQL("{}::{}").format(sql.Placeholder(name), sql.SQL(cast))
    conn.execute(sql.SQL(statement).format(item=item, part=part, **parts), values)


def _index(t: KeyType) -> dict:
    return {
        "table": f"public.item_{t.name}",
        "key": ["id"],
        "fields": {"title": "title"},
        "relations": {
            "parts": {
                "table": f"public.part_{t.name}",
                "type": "one_to_many",
                "on": {"id": "item_id"},
                "fields": {"label": "label"},
            }
        },
    }


COMPOSITE = """
CREATE TABLE item_composite (region char(3), n bigint, title text NOT NULL, PRIMARY KEY (region, n));
CREATE TABLE part_composite (id serial PRIMARY KEY, region char(3), n bigint, label text);
INSERT INTO item_composite VALUES ('eu', 1, 'backfilled'), ('a|\\', 2, 'backfilled');
INSERT INTO part_composite (region, n, label) VALUES ('eu', 1, 'old part'), ('a|\\', 2, 'old part');
"""
COMPOSITE_LIVE = [
    [
        "INSERT INTO item_composite VALUES ('us', 1, 'live')",
        "INSERT INTO part_composite (region, n, label) VALUES ('us', 1, 'new part')",
        "UPDATE item_composite SET title = 'renamed' WHERE region = 'eu' AND n = 1",
        "UPDATE part_composite SET label = 'edited' WHERE region = 'eu' AND n = 1",
    ],
    [
        "DELETE FROM part_composite WHERE region = 'us'",
        "DELETE FROM item_composite WHERE region = 'us'",
        "UPDATE item_composite SET region = 'us', n = 7 WHERE region = 'eu' AND n = 1",
        "UPDATE part_composite SET region = 'us', n = 7 WHERE region = 'eu' AND n = 1",
    ],
    ["UPDATE part_composite SET label = label || '!'"],
]


@pytest.fixture
def key_types(fresh_db: str, index_prefix: str, tmp_path: Path) -> tuple[str, Path]:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        database = conn.info.dbname
        for setting, value in (("TimeZone", "Asia/Kolkata"), ("DateStyle", "SQL, DMY"),
                               ("IntervalStyle", "sql_standard")):
            conn.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                sql.Identifier(database), sql.Identifier(setting), sql.Literal(value)))
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE TYPE mood AS ENUM ('sad', 'meh', 'happy')")
        for t in TYPES:
            _schema(conn, t)
        conn.execute(COMPOSITE)
    indexes = {t.name: _index(t) for t in TYPES}
    indexes["composite"] = {
        "table": "public.item_composite",
        "key": ["region", "n"],
        "fields": {"title": "title"},
        "relations": {"parts": {"table": "public.part_composite", "type": "one_to_many",
                                "on": {"region": "region", "n": "n"}, "fields": {"label": "label"}}},
    }
    return fresh_db, write_config(tmp_path / "flusso.yaml", fresh_db, index_prefix, indexes=indexes)


def _phase_one(conn: psycopg.Connection, t: KeyType) -> None:
    """A live insert (with a part), an update of a backfilled row and of its part."""
    _root(conn, t, "INSERT INTO {item} (id, title) VALUES ({v}, 'live')", v=t.b)
    _root(conn, t, "INSERT INTO {part} (item_id, label) VALUES ({cv}, 'new part')", cv=t.b)
    _root(conn, t, "UPDATE {item} SET title = 'renamed' WHERE id = {v}", v=t.a)
    _root(conn, t, "UPDATE {part} SET label = 'edited' WHERE item_id = {cv}", cv=t.a)


def _phase_two(conn: psycopg.Connection, t: KeyType) -> None:
    """A delete (part first), then a key change into the freed value, its part moved along."""
    _root(conn, t, "DELETE FROM {part} WHERE item_id = {cv}", cv=t.b)
    _root(conn, t, "DELETE FROM {item} WHERE id = {v}", v=t.b)
    _root(conn, t, "UPDATE {item} SET id = {w} WHERE id = {v}", v=t.a, w=t.b)
    _root(conn, t, "UPDATE {part} SET item_id = {cw} WHERE item_id = {cv}", cv=t.a, cw=t.b)


def _phase_three(conn: psycopg.Connection, t: KeyType) -> None:
    """Parts alone change: their documents are found from the child's values only."""
    _root(conn, t, "UPDATE {part} SET label = label || '!'")


def test_every_supported_key_type_keeps_one_id_through_backfill_and_live_changes(key_types, opensearch):
    dsn, config_path = key_types
    config = load_config(config_path)
    index = {name.split("-", 1)[1]: name for name in config.indexes}
    run = Flusso(config_path)
    try:
        run.wait_for("live capture started")
        for name in config.indexes:
            wait_converged(opensearch, config_path, name)
        for phase, composite in zip((_phase_one, _phase_two, _phase_three), COMPOSITE_LIVE, strict=True):
            with psycopg.connect(dsn, autocommit=True) as conn:
                for t in TYPES:
                    phase(conn, t)
                for statement in composite:
                    conn.execute(statement)
            for name in config.indexes:
                wait_converged(opensearch, config_path, name)
        for t in TYPES:
            docs = index_docs(opensearch, index[t.name])
            assert len(docs) == (1 if t.c is None else 2), (t.name, docs)
            if t.ids:
                assert sorted(docs) == sorted(t.ids), t.name
            moved = [d for d in docs.values() if d["title"] == "renamed"]
            assert moved == [{"title": "renamed", "parts": [{"label": "edited!"}]}], (t.name, docs)
        composite_docs = index_docs(opensearch, index["composite"])
        assert sorted(composite_docs) == ["a\\|\\\\|2", "us |7"]
        assert composite_docs["us |7"]["parts"] == [{"label": "edited!"}]
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.output()[-3000:]
    assert "Traceback" not in run.output()
