"""`flusso run` over views (issue #16 item 5): a view as the root and a view as a relation, each
with `key` and `depends_on`; live changes on every base table reach the right documents, and a row
that leaves the view deletes its document (wal and polling capture)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from .e2e import Flusso, sql, unfingerprinted, wait_converged, write_config

SCHEMA = """
CREATE TABLE publisher (id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE book (id bigint PRIMARY KEY, title text NOT NULL, in_print boolean NOT NULL DEFAULT true,
                   publisher_id bigint);
CREATE TABLE review (id bigint PRIMARY KEY, book_id bigint NOT NULL, rating int NOT NULL,
                     hidden boolean NOT NULL DEFAULT false);
-- the book's own publisher_id, not p.id: a view row keeps it when the publisher row goes
CREATE VIEW catalogue AS
  SELECT b.id AS book_id, b.title, b.publisher_id, p.name AS publisher
  FROM book b LEFT JOIN publisher p ON p.id = b.publisher_id WHERE b.in_print;
CREATE VIEW visible_review AS SELECT r.id AS review_id, r.book_id, r.rating FROM review r WHERE NOT r.hidden;
INSERT INTO publisher VALUES (1, 'Adelphi'), (2, 'Einaudi');
INSERT INTO book VALUES (1, 'Il nome della rosa', true, 1), (2, 'Se una notte', true, 2), (3, 'Gomorra', true, 2);
INSERT INTO review VALUES (1, 1, 5, false), (2, 1, 3, false), (3, 2, 4, false);
"""

CATALOGUE: dict[str, Any] = {
    "table": "public.catalogue",
    "key": ["book_id"],
    "depends_on": [
        {"table": "public.book", "key": {"id": "book_id"}},
        {"table": "public.publisher", "key": {"id": "publisher_id"}},
    ],
    "fields": {"title": "title", "publisher": "publisher"},
    "relations": {
        "reviews": {
            "table": "public.visible_review", "type": "one_to_many", "on": {"book_id": "book_id"},
            "key": ["review_id"],
            "depends_on": [{"table": "public.review", "key": {"id": "review_id", "book_id": "book_id"}}],
            "fields": {"rating": "rating"},
        },
    },
}


@pytest.fixture(params=["wal", "polling"])
def store(request, fresh_db: str, index_prefix: str, tmp_path: Path) -> tuple[str, Path]:
    sql(fresh_db, SCHEMA)
    config = write_config(tmp_path / "flusso.yaml", fresh_db, index_prefix, capture=request.param,
                          indexes={"catalogue": CATALOGUE})
    return fresh_db, config


def _docs(opensearch, config: Path) -> dict[str, Any]:
    return unfingerprinted(wait_converged(opensearch, config))


def test_base_table_changes_reach_the_views_documents(store, opensearch) -> None:
    dsn, config = store
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        assert _docs(opensearch, config) == {
            "1": {"title": "Il nome della rosa", "publisher": "Adelphi", "reviews": [{"rating": 5}, {"rating": 3}]},
            "2": {"title": "Se una notte", "publisher": "Einaudi", "reviews": [{"rating": 4}]},
            "3": {"title": "Gomorra", "publisher": "Einaudi", "reviews": []},
        }
        # each base table of the root view: insert, update, a row leaving the view, a delete
        sql(dsn,
            "INSERT INTO publisher VALUES (3, 'Feltrinelli')",
            "INSERT INTO book VALUES (4, 'Il Gattopardo', true, 3)",
            "UPDATE publisher SET name = 'Giulio Einaudi' WHERE id = 2",  # two documents, through the view
            "UPDATE book SET in_print = false WHERE id = 1",  # leaves the view: its document goes
            "DELETE FROM publisher WHERE id = 3")  # the book stays, without a publisher
        docs = _docs(opensearch, config)
        assert docs == {
            "2": {"title": "Se una notte", "publisher": "Giulio Einaudi", "reviews": [{"rating": 4}]},
            "3": {"title": "Gomorra", "publisher": "Giulio Einaudi", "reviews": []},
            "4": {"title": "Il Gattopardo", "publisher": None, "reviews": []},
        }
        # the relation's view: a row inserted, one leaving it, one moving to another book, a delete
        sql(dsn,
            "INSERT INTO review VALUES (4, 3, 2, false)",
            "UPDATE review SET hidden = true WHERE id = 3",
            "UPDATE review SET book_id = 4 WHERE id = 2",  # book 1 is out of the view; 4 gets it
            "UPDATE book SET in_print = true WHERE id = 1",  # back in the view, with review 1 alone
            "DELETE FROM book WHERE id = 3")
        docs = _docs(opensearch, config)
        assert docs == {
            "1": {"title": "Il nome della rosa", "publisher": "Adelphi", "reviews": [{"rating": 5}]},
            "2": {"title": "Se una notte", "publisher": "Giulio Einaudi", "reviews": []},
            "4": {"title": "Il Gattopardo", "publisher": None, "reviews": [{"rating": 3}]},
        }
        sql(dsn, "TRUNCATE review")  # a base table truncated: the index is rebuilt from the views
        assert {i: d["reviews"] for i, d in _docs(opensearch, config).items()} == {"1": [], "2": [], "4": []}
    finally:
        run.stop()
    # capture reads the base tables, never the views
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT relname::text, relreplident::text FROM pg_class WHERE relname IN "
                            "('book', 'publisher', 'review') ORDER BY 1").fetchall()
    if "capture: wal" in config.read_text():  # review.book_id is not its key: old rows must carry it
        assert rows == [("book", "d"), ("publisher", "d"), ("review", "f")]
