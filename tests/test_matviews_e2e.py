"""Materialized views under live capture (issue #16 item 5), with both captures, against real
PostgreSQL and OpenSearch: a REFRESH (plain or CONCURRENTLY) reaches the documents that read the
view, as a relation and as an index's root; a base-table change alone does not (the view's rows did
not change); a refresh while flusso was stopped is seen at the next start; the view is never
captured itself."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .e2e import Flusso, index_docs, sql, unfingerprinted, write_config

SCHEMA = """
CREATE TABLE book (id bigint PRIMARY KEY, title text NOT NULL);
CREATE TABLE review (id bigint PRIMARY KEY, book_id bigint NOT NULL, rating int NOT NULL);
CREATE MATERIALIZED VIEW book_stats AS
  SELECT book_id, count(*)::int AS reviews, max(rating) AS best FROM review GROUP BY book_id;
CREATE UNIQUE INDEX ON book_stats (book_id);  -- REFRESH ... CONCURRENTLY needs one
CREATE MATERIALIZED VIEW shelf AS SELECT id AS book_id, upper(title) AS title FROM book WHERE id <= 2;
CREATE UNIQUE INDEX ON shelf (book_id);
INSERT INTO book VALUES (1, 'Il nome della rosa'), (2, 'Se una notte'), (3, 'Gomorra');
INSERT INTO review VALUES (1, 1, 5), (2, 1, 3), (3, 2, 4);
REFRESH MATERIALIZED VIEW book_stats;
REFRESH MATERIALIZED VIEW shelf;
"""

BOOKS: dict[str, Any] = {
    "table": "public.book",
    "key": ["id"],
    "fields": {"title": "title"},
    "relations": {
        "stats": {"table": "public.book_stats", "type": "one_to_one", "on": {"id": "book_id"},
                  "fields": {"reviews": "reviews", "best": "best"}},
    },
}
SHELF: dict[str, Any] = {"table": "public.shelf", "key": ["book_id"], "fields": {"title": "title"}}


@pytest.fixture(params=["wal", "polling"])
def store(request, fresh_db: str, index_prefix: str, tmp_path: Path) -> tuple[str, Path, str]:
    sql(fresh_db, SCHEMA)
    config = write_config(tmp_path / "flusso.yaml", fresh_db, index_prefix, capture=request.param,
                          indexes={"books": BOOKS, "shelf": SHELF})
    return fresh_db, config, index_prefix


def wait_docs(opensearch, index: str, expected: dict[str, Any], timeout: float = 60) -> None:
    """Until the index holds exactly `expected` (without fingerprints); fail with what it holds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            docs = unfingerprinted(index_docs(opensearch, index))
        except Exception:  # noqa: BLE001 - between generations, or not created yet
            docs = {}
        if docs == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{index} after {timeout}s: {docs}, expected {expected}")
        time.sleep(0.5)


def test_a_refresh_reaches_the_documents_that_read_the_view(store, opensearch) -> None:
    dsn, config, prefix = store
    books, shelf = f"{prefix}books", f"{prefix}shelf"
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        wait_docs(opensearch, books, {
            "1": {"title": "Il nome della rosa", "stats": {"reviews": 2, "best": 5}},
            "2": {"title": "Se una notte", "stats": {"reviews": 1, "best": 4}},
            "3": {"title": "Gomorra", "stats": None},
        })
        wait_docs(opensearch, shelf, {"1": {"title": "IL NOME DELLA ROSA"}, "2": {"title": "SE UNA NOTTE"}})
        # a captured change rebuilds its document, reading the view as it is: not refreshed yet
        sql(dsn, "INSERT INTO review VALUES (4, 3, 2)", "UPDATE book SET title = 'Il Nome della Rosa' WHERE id = 1")
        wait_docs(opensearch, books, {
            "1": {"title": "Il Nome della Rosa", "stats": {"reviews": 2, "best": 5}},
            "2": {"title": "Se una notte", "stats": {"reviews": 1, "best": 4}},
            "3": {"title": "Gomorra", "stats": None},
        })
        sql(dsn, "REFRESH MATERIALIZED VIEW book_stats")  # a new heap
        wait_docs(opensearch, books, {
            "1": {"title": "Il Nome della Rosa", "stats": {"reviews": 2, "best": 5}},
            "2": {"title": "Se una notte", "stats": {"reviews": 1, "best": 4}},
            "3": {"title": "Gomorra", "stats": {"reviews": 1, "best": 2}},
        })
        run.wait_for("materialized view public.book_stats was refreshed")
        sql(dsn, "UPDATE book SET title = 'Se una notte d''inverno' WHERE id = 2", "DELETE FROM book WHERE id = 1",
            "REFRESH MATERIALIZED VIEW CONCURRENTLY shelf")  # the same heap: its changed rows count
        wait_docs(opensearch, shelf, {"2": {"title": "SE UNA NOTTE D'INVERNO"}})
    finally:
        run.stop()
    # refreshed while flusso was stopped: its next start rebuilds what reads the view
    sql(dsn, "INSERT INTO review VALUES (5, 2, 1)", "REFRESH MATERIALIZED VIEW CONCURRENTLY book_stats")
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        wait_docs(opensearch, books, {
            "2": {"title": "Se una notte d'inverno", "stats": {"reviews": 2, "best": 4}},
            "3": {"title": "Gomorra", "stats": {"reviews": 1, "best": 2}},
        })
        assert "materialized view public.book_stats was refreshed (or replaced) since the index was seeded" \
            in run.output()
        sql(dsn, "DROP MATERIALIZED VIEW shelf")
        run.proc.wait(60)
        assert run.proc.returncode != 0
        assert "materialized view public.shelf no longer exists" in run.output()
    finally:
        run.stop()
    with psycopg.connect(dsn) as conn:  # never captured: no trigger, no publication holds it
        published = conn.execute("SELECT count(*) FROM pg_publication_tables WHERE tablename LIKE 'book_stats'")
        triggers = conn.execute("SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                                "WHERE c.relname = 'book_stats'")
        assert (published.fetchone(), triggers.fetchone()) == ((0,), (0,))


@pytest.mark.parametrize("capture", ["wal", "polling"])
def test_an_index_of_a_materialized_view_alone_follows_its_refreshes(capture, fresh_db, index_prefix, tmp_path,
                                                                     opensearch) -> None:
    """Nothing to capture at all (a publication without tables, a change log without triggers): the
    watch alone rebuilds on REFRESH."""
    sql(fresh_db, SCHEMA)
    config = write_config(tmp_path / "flusso.yaml", fresh_db, index_prefix, capture=capture,
                          indexes={"shelf": SHELF})
    shelf = f"{index_prefix}shelf"
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        wait_docs(opensearch, shelf, {"1": {"title": "IL NOME DELLA ROSA"}, "2": {"title": "SE UNA NOTTE"}})
        sql(fresh_db, "UPDATE book SET title = 'Se una notte d''inverno' WHERE id = 2",
            "REFRESH MATERIALIZED VIEW shelf")
        wait_docs(opensearch, shelf, {"1": {"title": "IL NOME DELLA ROSA"}, "2": {"title": "SE UNA NOTTE D'INVERNO"}})
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.output()[-3000:]
