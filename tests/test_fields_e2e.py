"""`flusso run` with path and sql fields, transforms and relation variants (issue #16 items 1-3): live
changes to JSON paths, expression inputs, scalar and flattened children reach the documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .e2e import Flusso, generate, sql, wait_converged, write_config

BOOKS: dict[str, Any] = {
    "table": "public.book",
    "key": ["id"],
    "fields": {
        "title": "title",
        "isbn": "isbn",
        "format": {"path": "attributes.format"},
        "edition": {"path": "attributes.edition", "type": "long"},
        "label": {"sql": "title || ' (' || coalesce(pages::text, '?') || ' pages)'", "type": "text"},
        "in_print": "in_print",
    },
    "transform": {
        "replace": {"isbn": {"-": ""}},
        "mapping": {"in_print": {"values": {"true": "available", "false": "out of print"}}},
        "concat": [{"fields": ["title", "format"], "destination": "title_format", "delimiter": " / "}],
        "move": {"format": "attrs", "edition": "attrs"},
    },
    "relations": {
        "author_names": {
            "table": "public.author", "type": "many_to_many", "variant": "scalar",
            "through": {"table": "public.book_author", "parent": {"id": "book_id"}, "child": {"author_id": "id"}},
            "fields": {"name": "name"}, "order_by": ["name"],
        },
        "ratings": {
            "table": "public.review", "type": "one_to_many", "on": {"id": "book_id"}, "variant": "scalar",
            "fields": {"rating": "rating"},
        },
        "publisher": {
            "table": "public.publisher", "type": "many_to_one", "on": {"publisher_id": "id"},
            "variant": "flatten", "prefix": "pub_",
            "fields": {"name": "name", "country": {"sql": "lower(country)", "type": "keyword"}},
        },
    },
}


@pytest.fixture(params=["wal", "polling"])
def store(request, bookstore_db: str, index_prefix: str, tmp_path: Path) -> tuple[str, Path]:
    generate(bookstore_db, books=60)
    config = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix, capture=request.param,
                          indexes={"books": BOOKS})
    return bookstore_db, config


def test_live_changes_to_paths_expressions_and_variants_converge(store, opensearch) -> None:
    dsn, config = store
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        wait_converged(opensearch, config)
        sql(
            dsn,
            "INSERT INTO publisher (id, name, country) VALUES (9001, 'Nuova', 'IT')",
            "INSERT INTO author (id, name) VALUES (9001, 'Zeta'), (9002, 'Alfa')",
            "INSERT INTO book (id, isbn, title, pages, publisher_id, attributes, in_print) VALUES "
            "(9001, '978-1-2', 'Live', 100, 9001, '{\"format\": \"paperback\", \"edition\": 2}', true)",
            "INSERT INTO book_author (book_id, author_id) VALUES (9001, 9001), (9001, 9002)",
            "INSERT INTO review (book_id, rating, body) VALUES (9001, 4, 'ok')",
        )
        docs = wait_converged(opensearch, config)
        assert {k: v for k, v in docs["9001"].items() if k != "_flusso_hash"} == {
            "title": "Live", "isbn": "97812", "label": "Live (100 pages)", "in_print": "available",
            "title_format": "Live / paperback", "attrs": {"format": "paperback", "edition": 2},
            "author_names": ["Alfa", "Zeta"], "ratings": [4], "pub_name": "Nuova", "pub_country": "it",
        }
        sql(
            dsn,
            # a JSON path's value changes, and disappears; an expression's input changes
            "UPDATE book SET attributes = jsonb_set(attributes, '{format}', '\"hardcover\"') WHERE id = 9001",
            "UPDATE book SET pages = 250, in_print = false WHERE id = 9001",
            "UPDATE book SET attributes = attributes - 'edition' WHERE id = 9001",
            # scalar children: renamed, unlinked, added; the flattened parent: renamed
            "UPDATE author SET name = 'Beta' WHERE id = 9001",
            "DELETE FROM book_author WHERE book_id = 9001 AND author_id = 9002",
            "INSERT INTO review (book_id, rating, body) VALUES (9001, 2, 'meh')",
            "UPDATE publisher SET name = 'Vecchia', country = 'FR' WHERE id = 9001",
        )
        doc = wait_converged(opensearch, config)["9001"]
        assert doc["attrs"] == {"format": "hardcover", "edition": None}
        assert doc["label"] == "Live (250 pages)" and doc["in_print"] == "out of print"
        assert doc["title_format"] == "Live / hardcover"
        assert doc["author_names"] == ["Beta"] and sorted(doc["ratings"]) == [2, 4]
        assert (doc["pub_name"], doc["pub_country"]) == ("Vecchia", "fr")
        sql(dsn, "UPDATE book SET publisher_id = NULL WHERE id = 9001")
        doc = wait_converged(opensearch, config)["9001"]
        assert doc["pub_name"] is None and doc["pub_country"] is None
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.output()[-3000:]


FILTERED: dict[str, Any] = {
    **BOOKS,
    "where": "in_print AND coalesce(pages, 0) < 1000",
    "relations": {
        **BOOKS["relations"],
        "ratings": {**BOOKS["relations"]["ratings"], "where": "rating >= 3"},
        "publisher": {**BOOKS["relations"]["publisher"], "where": "country IS NOT NULL"},
    },
}


@pytest.fixture(params=["wal", "polling"])
def filtered(request, bookstore_db: str, index_prefix: str, tmp_path: Path) -> tuple[str, Path]:
    generate(bookstore_db, books=40)
    config = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix, capture=request.param,
                          indexes={"books": FILTERED})
    return bookstore_db, config


def test_rows_entering_and_leaving_filters_converge(filtered, opensearch) -> None:
    dsn, config = filtered
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        sql(dsn, "UPDATE book SET in_print = false WHERE id % 4 = 0")  # before and after the backfill
        docs = wait_converged(opensearch, config)
        assert docs and not any(int(i) % 4 == 0 for i in docs)
        sql(
            dsn,
            "INSERT INTO publisher (id, name, country) VALUES (9001, 'Nuova', NULL)",
            "INSERT INTO book (id, isbn, title, pages, publisher_id, in_print) VALUES "
            "(9001, '1-1', 'In', 10, 9001, true), (9002, '1-2', 'Out', 5000, 9001, true)",
            "INSERT INTO review (id, book_id, rating, body) VALUES (9001, 9001, 5, 'a'), (9002, 9001, 1, 'b')",
        )
        docs = wait_converged(opensearch, config)
        assert "9002" not in docs and docs["9001"]["ratings"] == [5] and docs["9001"]["pub_name"] is None
        sql(
            dsn,
            "UPDATE book SET pages = 50 WHERE id = 9002",  # enters the root filter
            "UPDATE book SET in_print = false WHERE id = 8",  # leaves it
            "UPDATE review SET rating = 4 WHERE id = 9002",  # enters the child filter
            "UPDATE review SET rating = 2 WHERE id = 9001",  # leaves it
            "UPDATE publisher SET country = 'IT' WHERE id = 9001",  # the flattened child enters
        )
        docs = wait_converged(opensearch, config)
        assert "9002" in docs and "8" not in docs
        assert docs["9001"]["ratings"] == [4] and docs["9001"]["pub_name"] == "Nuova"
        assert docs["9002"]["pub_name"] == "Nuova"
        sql(dsn, "DELETE FROM review WHERE id = 9002", "UPDATE publisher SET country = NULL WHERE id = 9001")
        docs = wait_converged(opensearch, config)
        assert docs["9001"]["ratings"] == [] and docs["9001"]["pub_name"] is None
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.output()[-3000:]
