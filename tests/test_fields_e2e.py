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
