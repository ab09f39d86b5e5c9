"""The SQL builder's documents against an independent assembly of the same rows in Python."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from flusso_engine.catalog import Catalog, read_catalog
from flusso_engine.changes import Change, doc_id, int_to_lsn, lsn_to_int
from flusso_engine.config import FlussoConfig, RelationConfig, load_config, parse_config, split_table
from flusso_engine.documents.mapping import FINGERPRINT
from flusso_engine.documents.sql import SqlDocumentBuilder
from flusso_engine.documents.sql.shared import SharedSnapshots
from flusso_engine.error import SourceError

BOOKSTORE = Path(__file__).resolve().parents[1] / "examples" / "bookstore"
sys.path.insert(0, str(BOOKSTORE))
from generate import generate  # noqa: E402

from .e2e import unfingerprinted  # noqa: E402


@pytest.fixture
def bookstore(bookstore_db: str) -> tuple[str, FlussoConfig, Catalog]:
    """The bookstore with 40 books and their children, its config and catalog."""
    config = load_config(BOOKSTORE / "flusso.yaml", env={})
    with psycopg.connect(bookstore_db) as conn:
        generate(conn, 40, seed=7)
        catalog = read_catalog(conn, config.tables())
    return bookstore_db, config, catalog


@pytest.fixture
def builder(bookstore) -> Iterator[SqlDocumentBuilder]:
    dsn, config, catalog = bookstore
    with SqlDocumentBuilder(config, catalog, dsn) as b:
        yield b


# --- the independent assembly ------------------------------------------------------------------


class Rows:
    """Every row of every table, as Python values (to join and sort on) and as to_jsonb wrote them
    (to compare with): read with plain SELECTs, nothing shared with the builder's SQL."""

    def __init__(self, dsn: str, tables: list[str]) -> None:
        self.native: dict[str, list[dict[str, Any]]] = {}
        self.json: dict[str, list[dict[str, Any]]] = {}
        with psycopg.connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
            for table in tables:
                query = sql.SQL("SELECT to_jsonb(t) AS __json, t.* FROM {} t").format(
                    sql.Identifier(*split_table(table))
                )
                rows = cur.execute(query).fetchall()
                self.json[table] = [r.pop("__json") for r in rows]
                self.native[table] = rows


def _sort_key(row: dict[str, Any], columns: list[str]) -> tuple:
    """PostgreSQL's ascending order: NULLs last."""
    return tuple((row[c] is None, row[c]) for c in columns)


def _children(rows: Rows, rel: RelationConfig, parent: dict[str, Any]) -> list[tuple[dict, dict]]:
    table = f"public.{split_table(rel.table)[1]}"
    pairs = list(zip(rows.native[table], rows.json[table], strict=True))
    if rel.through is not None:
        link = f"public.{split_table(rel.through.table)[1]}"
        out = []
        for t in rows.native[link]:
            if all(parent[p] == t[c] for p, c in rel.through.parent.items()):
                out += [
                    (n, j) for n, j in pairs if all(t[tc] == n[cc] for tc, cc in rel.through.child.items())
                ]
        return out
    return [(n, j) for n, j in pairs if all(parent[p] == n[c] for p, c in (rel.on or {}).items())]


def assemble(
    rows: Rows, fields: dict[str, str], relations: dict[str, RelationConfig], native: dict, as_json: dict
):
    doc = {field: as_json[column] for field, column in fields.items()}
    for name, rel in relations.items():
        found = _children(rows, rel, native)
        if rel.is_array:
            found.sort(key=lambda pair, rel=rel: _sort_key(pair[0], [*rel.order_by, "id"]))
            doc[name] = [assemble(rows, rel.fields, rel.relations, n, j) for n, j in found]
        else:
            assert len(found) <= 1
            doc[name] = assemble(rows, rel.fields, rel.relations, *found[0]) if found else None
    return doc


def expected_books(dsn: str, config: FlussoConfig) -> dict[str, dict]:
    rows = Rows(dsn, config.tables())
    index = config.indexes["books"]
    return {
        str(n["id"]): assemble(rows, index.fields, index.relations, n, j)
        for n, j in zip(rows.native["public.book"], rows.json["public.book"], strict=True)
    }


# --- the tests ---------------------------------------------------------------------------------


def test_documents_match_an_independent_assembly(bookstore, builder):
    dsn, config, _ = bookstore
    expected = expected_books(dsn, config)
    built = builder.build("books", list(expected))
    assert unfingerprinted(built.docs) == expected
    shapes = {(bool(d["reviews"]), d["publisher"] is None, d["detail"] is None) for d in expected.values()}
    assert len(shapes) >= 4, "the data should hold books with and without each kind of child"


def test_empty_relations_are_null_and_empty_arrays(bookstore, builder):
    dsn, _, _ = bookstore
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO book (id, isbn, title, genres) VALUES (1000, 'x-1000', 'Alone', '{}')")
    doc = builder.build("books", ["1000"]).docs["1000"]
    assert doc["publisher"] is None and doc["detail"] is None
    assert doc["authors"] == [] and doc["reviews"] == []
    assert doc["price"] is None and doc["subtitle"] is None and doc["genres"] == []


def test_values_are_written_as_to_jsonb_writes_them(bookstore, builder):
    dsn, _, _ = bookstore
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO book (id, isbn, title, price, published_on, created_at, attributes, genres) "
            "VALUES (1001, 'x-1001', 'Typed', 12.50, '2024-02-29', '2024-03-01 10:00:00.5+00', "
            "'{\"a\": [1, null]}', '{poetry,travel}')"
        )
    doc = builder.build("books", ["1001"]).docs["1001"]
    assert doc["price"] == 12.5
    assert doc["published"] == "2024-02-29"
    assert datetime.fromisoformat(doc["created_at"]) == datetime.fromisoformat("2024-03-01T10:00:00.5+00:00")
    assert doc["attributes"] == {"a": [1, None]}
    assert doc["genres"] == ["poetry", "travel"]


def test_arrays_follow_order_by_then_key(bookstore, builder):
    dsn, _, _ = bookstore
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO book (id, isbn, title) VALUES (1002, 'x-1002', 'Ordered')")
        conn.execute(
            "INSERT INTO review (id, book_id, rating, body, created_at) VALUES "
            "(9003, 1002, 3, 'c', '2024-01-02'), (9001, 1002, 1, 'a', '2024-01-03'), "
            "(9002, 1002, 2, 'b', '2024-01-02')"
        )
    doc = builder.build("books", ["1002"]).docs["1002"]
    assert [r["body"] for r in doc["reviews"]] == ["b", "c", "a"]


def test_a_missing_root_is_none(builder):
    built = builder.build("books", ["1", "424242"])
    assert built.docs["1"] is not None
    assert built.docs["424242"] is None


def test_build_is_one_snapshot_and_two_statements_whatever_the_batch(bookstore, builder):
    dsn, _, _ = bookstore
    with psycopg.connect(dsn) as conn:
        before = lsn_to_int(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])
    small = builder.build("books", ["1"])
    large = builder.build("books", [str(i) for i in range(1, 41)])
    assert small.queries == large.queries == 2
    assert before <= small.position <= large.position
    assert int_to_lsn(large.position).count("/") == 1
    assert builder.build("books", []).docs == {}


def test_each_document_is_made_once_per_row(bookstore, builder):
    """The fingerprint reads the document's text three times; PostgreSQL must not build it three
    times (it did, until the lateral subquery was fenced): every child table is scanned once per
    root row, as the plan shows."""
    dsn, _, _ = bookstore
    statement = builder._statements["books"]
    with psycopg.connect(dsn) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) ") + statement, [[str(i) for i in range(1, 41)]]
        ))
    for table in ("publisher", "book_detail", "author", "review", "reader", "tag"):
        assert plan.count(f" on {table} ") == 1, plan


def test_raw_json_is_the_same_documents(bookstore, builder):
    dsn, config, catalog = bookstore
    ids = [str(i) for i in range(1, 41)]
    with SqlDocumentBuilder(config, catalog, dsn, raw_json=True) as raw:
        texts = raw.build("books", ids).docs
    assert all(isinstance(t, str) for t in texts.values())
    assert {k: json.loads(t) for k, t in texts.items()} == builder.build("books", ids).docs


def test_a_lost_connection_is_a_source_error_then_reconnects(bookstore, builder):
    dsn, _, _ = bookstore
    builder.build("books", ["1"])
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    with pytest.raises(SourceError):
        builder.build("books", ["1"])
    assert builder.build("books", ["1"]).docs["1"] is not None


COMPOSITE_SCHEMA = """
CREATE TABLE shelf (store text, code text, label text, PRIMARY KEY (store, code));
CREATE TABLE item (id int PRIMARY KEY, store text, code text, name text);
INSERT INTO shelf VALUES ('a|b', 'c\\d', 'odd'), ('a', 'b|c\\d', 'odder'), ('plain', '1', 'plain');
INSERT INTO item VALUES (1, 'a|b', 'c\\d', 'one'), (2, 'a|b', 'c\\d', 'two'), (3, 'plain', '1', 'three');
"""


def test_composite_keys_escape_pipes_and_backslashes(fresh_db):
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(COMPOSITE_SCHEMA)
        config = parse_config(
            {
                "source": {"dsn": fresh_db, "slot": "s", "publication": "p"},
                "sink": {"type": "stdout"},
                "indexes": {
                    "shelves": {
                        "table": "shelf",
                        "key": ["store", "code"],
                        "fields": {"label": "label"},
                        "relations": {
                            "items": {
                                "table": "item",
                                "type": "one_to_many",
                                "on": {"store": "store", "code": "code"},
                                "fields": {"name": "name"},
                            }
                        },
                    }
                },
            },
            env={},
        )
        catalog = read_catalog(conn, config.tables())
    first, second = doc_id(["a|b", "c\\d"]), doc_id(["a", "b|c\\d"])
    assert first == "a\\|b|c\\\\d" and first != second
    with SqlDocumentBuilder(config, catalog, fresh_db) as builder:
        docs = unfingerprinted(builder.build("shelves", [first, second, "plain|1", "plain|2", "no-such-shape"]).docs)
    assert docs == {
        first: {"label": "odd", "items": [{"name": "one"}, {"name": "two"}]},
        second: {"label": "odder", "items": []},
        "plain|1": {"label": "plain", "items": [{"name": "three"}]},
        "plain|2": None,
        "no-such-shape": None,
    }
    item = Change("public.item", "update", new={"id": "1", "store": "a", "code": "b|c\\d"}, old=None)
    with SqlDocumentBuilder(config, catalog, fresh_db) as builder:
        assert builder.resolve([item]) == {"shelves": {second}}


def test_more_fields_than_one_json_call_takes(fresh_db):
    columns = [f"c{i}" for i in range(120)]
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE wide (id int PRIMARY KEY, {})").format(
                sql.SQL(", ").join(
                    sql.SQL("{} int DEFAULT {}").format(sql.Identifier(c), i) for i, c in enumerate(columns)
                )
            )
        )
        conn.execute("INSERT INTO wide (id) VALUES (1)")
        config = parse_config(
            {
                "source": {"dsn": fresh_db, "slot": "s", "publication": "p"},
                "sink": {"type": "stdout"},
                "indexes": {"wide": {"table": "wide", "key": ["id"], "fields": {c: c for c in columns}}},
            },
            env={},
        )
        catalog = read_catalog(conn, config.tables())
    with SqlDocumentBuilder(config, catalog, fresh_db) as builder:
        assert unfingerprinted(builder.build("wide", ["1"]).docs) == {"1": {c: i for i, c in enumerate(columns)}}


def test_every_document_carries_the_fingerprint_a_fingerprint_query_computes(bookstore, builder):
    dsn, config, catalog = bookstore
    ids = [str(i) for i in range(1, 41)] + ["424242"]
    built = builder.build("books", ids)
    found, position = builder.fingerprints("books", ids)
    assert position >= built.position
    assert found == {i: d[FINGERPRINT] for i, d in built.docs.items() if d is not None}
    assert "424242" not in found and all(len(h) == 32 for h in found.values())
    with psycopg.connect(dsn, autocommit=True) as conn:  # a change two levels down changes one book's
        book = conn.execute("UPDATE review SET body = body || '!' WHERE id = (SELECT min(id) FROM review) "
                            "RETURNING book_id::text").fetchone()[0]
    again, _ = builder.fingerprints("books", ids)
    assert {i for i in found if again[i] != found[i]} == {book}
    with SqlDocumentBuilder(config, catalog, dsn, raw_json=True) as raw:
        text = raw.build("books", [book]).docs[book]
    assert isinstance(text, str) and json.loads(text)[FINGERPRINT] == again[book]
    assert builder.key_page("books", None, 2) == ["1", "2"]
    assert builder.key_page("books", "2", 2) == ["3", "4"]
    assert len(set(builder.sample_ids("books", 5))) == 5


# --- building from a shared snapshot (a parallel backfill) ------------------------------------------


def test_forks_build_from_one_exported_snapshot(bookstore, builder):
    """Keys read and documents built on two connections, after other commits, still show the rows
    as the exported snapshot saw them, all versioned by its position."""
    dsn, _, _ = bookstore
    snapshots = builder.shared_snapshots()
    one, two = builder.fork(), builder.fork()
    try:
        with snapshots.use() as snapshot:
            before = builder.build("books", ["2"]).docs["2"]["title"]
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("UPDATE book SET title = 'After the snapshot' WHERE id = 2")
                conn.execute("DELETE FROM book WHERE id = 3")
            keys = one.key_page("books", None, 1000, snapshot=snapshot)
            first, second = one.build_in(snapshot, "books", ["2", "3"]), two.build_in(snapshot, "books", ["2"])
        assert "3" in keys and len(keys) == 40, "the page reads the snapshot's keys"
        assert first.docs["2"]["title"] == second.docs["2"]["title"] == before
        assert first.docs["3"] is not None, "deleted after the snapshot: still there in it"
        assert first.position == second.position == snapshot.position
        assert builder.build("books", ["2", "3"]).docs == {"2": builder.build("books", ["2"]).docs["2"], "3": None}
        assert builder.build("books", ["2"]).docs["2"]["title"] == "After the snapshot"
    finally:
        snapshots.close()
        one.close()
        two.close()


def test_the_shared_snapshot_is_taken_again_when_old_or_broken(bookstore, builder):
    dsn, config, catalog = bookstore
    snapshots = SharedSnapshots(lambda: psycopg.connect(dsn), max_age=0.0)
    fork = builder.fork()
    try:
        with snapshots.use() as first:
            pass
        with snapshots.use() as second, snapshots.use() as third:
            assert first.conn.closed, "replaced and unused: its exporting transaction ended"
            assert len({first.id, second.id, third.id}) == 3
            assert not second.conn.closed, "replaced but still in use by a build"
        assert second.conn.closed and not third.conn.closed and snapshots.taken == 3
        young = SharedSnapshots(lambda: psycopg.connect(dsn))
        with young.use() as snapshot:
            snapshot.conn.close()  # its exporter is gone: importing it fails
            with pytest.raises(SourceError, match="shared snapshot"):
                fork.build_in(snapshot, "books", ["1"])
            young.broken(snapshot)
        with young.use() as again:
            assert again.id != snapshot.id and fork.build_in(again, "books", ["1"]).docs["1"] is not None
        young.close()
    finally:
        snapshots.close()
        fork.close()
