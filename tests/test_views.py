"""Views (issue #16 item 5) against a real PostgreSQL: what `flusso validate` says of views, their
`key` and `depends_on`; how base-table changes resolve onto the view's documents (old values too);
the replica identity and the captured tables; the config's own refusals."""

from __future__ import annotations

import copy
from typing import Any

import psycopg
import pytest

from flusso_engine.catalog import read_catalog
from flusso_engine.changes import Change
from flusso_engine.config import parse_config
from flusso_engine.documents.sql import SqlDocumentBuilder
from flusso_engine.error import ConfigError
from flusso_engine.plan import make_plan
from flusso_engine.validate import validate

SCHEMA = """
CREATE TABLE publisher (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE book (id int PRIMARY KEY, title text NOT NULL, publisher_id int, in_print boolean NOT NULL);
CREATE TABLE review (id int PRIMARY KEY, book_id int NOT NULL, rating int, hidden boolean NOT NULL DEFAULT false);
CREATE VIEW catalogue AS SELECT b.id AS book_id, b.title, b.publisher_id, p.name AS publisher
  FROM book b LEFT JOIN publisher p ON p.id = b.publisher_id WHERE b.in_print;
CREATE VIEW visible_review AS SELECT id AS review_id, book_id, rating FROM review WHERE NOT hidden;
CREATE MATERIALIZED VIEW frozen AS SELECT id AS book_id, title FROM book;
INSERT INTO publisher VALUES (1, 'Adelphi'), (2, 'Einaudi');
INSERT INTO book VALUES (1, 'A', 1, true), (2, 'B', 2, true), (3, 'C', 2, true);
INSERT INTO review VALUES (10, 1, 5, false), (11, 2, 4, false);
"""

INDEX: dict[str, Any] = {
    "table": "catalogue",
    "key": ["book_id"],
    "depends_on": [{"table": "book", "key": {"id": "book_id"}},
                   {"table": "publisher", "key": {"id": "publisher_id"}}],
    "fields": {"title": "title", "publisher": "publisher"},
    "relations": {
        "reviews": {
            "table": "visible_review", "type": "one_to_many", "on": {"book_id": "book_id"}, "key": ["review_id"],
            "depends_on": [{"table": "review", "key": {"id": "review_id", "book_id": "book_id"}}],
            "fields": {"rating": "rating"},
        },
    },
}


@pytest.fixture
def db(fresh_db: str) -> str:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(SCHEMA)
    return fresh_db


def config_for(dsn: str, change: Any = None) -> Any:
    index = copy.deepcopy(INDEX)
    if change is not None:
        change(index)
    return parse_config({"source": {"dsn": dsn, "slot": "views_test", "publication": "views_test"},
                         "sink": {"type": "stdout"}, "indexes": {"catalogue": index}})


def problems(dsn: str, config: Any) -> list[tuple[str, str]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [(p.path, p.message) for p in validate(config, conn).problems]


def test_a_view_with_key_and_depends_on_validates(db: str) -> None:
    assert problems(db, config_for(db)) == []
    with psycopg.connect(db, autocommit=True) as conn:
        notes = [n for n in validate(config_for(db), conn).notes if "depends_on" in n]
    assert notes == [
        "indexes.catalogue.depends_on[1]: public.publisher maps onto publisher_id, not onto book_id: its changes "
        "find the view's current rows, so one that takes a row out of the view is not seen; map it onto those "
        "columns too if it can"]


def test_a_relation_view_without_key_or_depends_on(db: str) -> None:
    def strip(index: dict[str, Any]) -> None:
        del index["relations"]["reviews"]["key"], index["relations"]["reviews"]["depends_on"]

    found = dict(problems(db, config_for(db, strip)))
    assert found["indexes.catalogue.relations.reviews.key"] == (
        "public.visible_review is a view, which has no primary key to order and identify reviews by: add "
        "key: [the view columns that identify one of its rows]")
    assert found["indexes.catalogue.relations.reviews.depends_on"].startswith(
        "public.visible_review is a view: its rows change only through the tables it reads")


def test_missing_dependency_table_and_columns_are_problems(db: str) -> None:
    def wrong(index: dict[str, Any]) -> None:
        index["depends_on"] = [{"table": "bok", "key": {"id": "book_id"}},
                               {"table": "publisher", "key": {"ident": "publisher_ref"}}]

    assert problems(db, config_for(db, wrong)) == [
        ("indexes.catalogue.depends_on[0].table", "table public.bok does not exist: name a table public.catalogue "
                                                  "reads"),
        ("indexes.catalogue.depends_on[1].key", 'column "ident" does not exist in public.publisher: map its columns '
                                                "(id, name) onto public.catalogue's"),
        ("indexes.catalogue.depends_on[1].key.ident", 'column "publisher_ref" does not exist in the view '
                                                      "public.catalogue: name one of its columns (book_id, title, "
                                                      "publisher_id, publisher), or add it to the view's select list"),
    ]


def test_a_dependency_that_is_a_view_and_depends_on_on_a_table(db: str) -> None:
    def wrong(index: dict[str, Any]) -> None:
        index["depends_on"][1] = {"table": "visible_review", "key": {"book_id": "book_id"}}
        index["relations"]["reviews"].update(table="review", key=["id"], on={"book_id": "book_id"},
                                             depends_on=[{"table": "book", "key": {"id": "book_id"}}])

    assert problems(db, config_for(db, wrong)) == [
        ("indexes.catalogue.depends_on[1].table", "public.visible_review is a view, whose changes capture cannot "
                                                  "see: name the tables it reads"),
        ("indexes.catalogue.relations.reviews.depends_on", "public.review is a table: its own changes reach its "
                                                           "documents: remove depends_on (it is for views)"),
    ]


def test_a_materialized_view_needs_a_key_but_no_depends_on(db: str) -> None:
    def frozen(index: dict[str, Any]) -> None:
        index.update(table="frozen", depends_on=[], fields={"title": "title"}, relations={})

    assert problems(db, config_for(db, frozen)) == []
    config = config_for(db, frozen)
    with psycopg.connect(db, autocommit=True) as conn:
        plan = make_plan(config, read_catalog(conn, config.tables()))
    assert plan.matviews == {"public.frozen"} and plan.captured(config.captured_tables()) == []
    assert plan.index("catalogue").routes == ()  # a refresh rebuilds: no row change of its own to route


def test_depends_on_on_a_materialized_view_is_a_problem_with_the_fix(db: str) -> None:
    def frozen(index: dict[str, Any]) -> None:
        index.update(table="frozen", depends_on=[{"table": "book", "key": {"id": "book_id"}}],
                     fields={"title": "title"}, relations={})

    ((path, message),) = problems(db, config_for(db, frozen))
    assert path == "indexes.catalogue.depends_on"
    assert message == ("public.frozen is a materialized view: its rows change only on REFRESH MATERIALIZED VIEW, "
                       "which flusso watches for (each refresh rebuilds the indexes that read it), never when the "
                       "tables it reads change: remove depends_on")


def test_a_bare_table_name_in_depends_on_asks_for_its_mapping() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"source": {"dsn": "postgresql://x/y", "slot": "s", "publication": "p"},
                      "sink": {"type": "stdout"},
                      "indexes": {"c": {"table": "catalogue", "key": "book_id", "fields": {"t": "title"},
                                        "depends_on": ["public.book"]}}})
    (problem,) = err.value.problems
    assert problem.path == "indexes.c.depends_on"
    assert '"public.book" needs its columns mapped onto the view\'s: write {table: public.book, key: ' in (
        problem.message)


def _change(table: str, op: str, new: dict | None, old: dict | None = None) -> Change:
    return Change(table=table, op=op, new=new, old=old)


def test_base_changes_resolve_to_the_views_documents_with_old_values(db: str) -> None:
    config = config_for(db)
    with psycopg.connect(db) as conn:
        catalog = read_catalog(conn, config.tables())
    plan = make_plan(config, catalog)
    # capture reads the base tables, never the views; review's old rows must carry book_id
    assert config.captured_tables() == ["public.book", "public.publisher", "public.review"]
    assert plan.index("catalogue").tables == {"public.book", "public.publisher", "public.review"}
    assert plan.full_identity == {"public.review"}
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE book SET in_print = false WHERE id = 1")  # book 1 leaves the view
        conn.execute("UPDATE review SET book_id = 3 WHERE id = 11")
    with SqlDocumentBuilder(config, catalog, db) as builder:
        resolved = builder.resolve([
            _change("public.book", "update", {"id": "1", "in_print": "f"}, None),  # by the key: no query
            _change("public.publisher", "update", {"id": "2", "name": "E."}),  # through the view's rows
            _change("public.review", "update", {"id": "11", "book_id": "3"}, {"id": "11", "book_id": "2"}),
        ])
        assert resolved == {"catalogue": {"1", "2", "3"}}
        built = builder.build("catalogue", ["1", "3"]).docs
    assert built["1"] is None  # out of the view: a delete
    assert built["3"]["reviews"] == [{"rating": 4}]  # review 11 moved here


def test_backfill_pages_and_verify_samples_read_the_view(db: str) -> None:
    config = config_for(db)
    with psycopg.connect(db) as conn:
        catalog = read_catalog(conn, config.tables())
    with SqlDocumentBuilder(config, catalog, db) as builder:
        assert builder.key_page("catalogue", None, 10) == ["1", "2", "3"]
        assert builder.key_page("catalogue", "1", 10) == ["2", "3"]
        assert sorted(builder.sample_ids("catalogue", 10)) == ["1", "2", "3"]  # no TABLESAMPLE on a view


def test_base_columns_that_print_otherwise_are_cast_not_looked_up(db: str) -> None:
    """varchar base values onto a text key: one cast query (`literal_ids`), never the view, so a
    base row gone from the view still names its document."""
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE TABLE coded (code varchar(10) PRIMARY KEY, title text NOT NULL, live boolean NOT NULL);"
                     "CREATE VIEW live_code AS SELECT code::text AS code, title FROM coded WHERE live;"
                     "INSERT INTO coded VALUES ('a1', 'A', false)")
    config = parse_config({"source": {"dsn": db, "slot": "views_test", "publication": "views_test"},
                           "sink": {"type": "stdout"},
                           "indexes": {"codes": {"table": "live_code", "key": "code", "fields": {"title": "title"},
                                                 "depends_on": [{"table": "coded", "key": {"code": "code"}}]}}})
    with psycopg.connect(db) as conn:
        catalog = read_catalog(conn, config.tables())
    assert problems(db, config) == []
    (route,) = make_plan(config, catalog).index("codes").routes
    assert route.table == "public.coded" and route.entry.literal
    with SqlDocumentBuilder(config, catalog, db) as builder:
        before = builder.statements
        found = builder.resolve([_change("public.coded", "update", {"code": "a1", "live": "f"})])
        assert found == {"codes": {"a1"}} and builder.statements - before == 1
        assert builder.build("codes", ["a1"]).docs == {"a1": None}


def _pgsync_env(db: str, monkeypatch) -> dict:  # noqa: ANN001 - pytest's MonkeyPatch
    """PGSync's connection variables pointed at the test database, as its users set them; its conninfo."""
    info = psycopg.conninfo.conninfo_to_dict(db)
    for k, v in {"PG_USER": info.get("user", "postgres"), "PG_PASSWORD": info.get("password", ""),
                 "PG_HOST": info.get("host", "127.0.0.1"), "PG_PORT": info.get("port", 5432)}.items():
        monkeypatch.setenv(k, str(v))
    monkeypatch.delenv("PG_URL", raising=False)
    return info


def test_import_pgsync_maps_base_tables_onto_depends_on(db: str, tmp_path, monkeypatch, capsys) -> None:
    """A PGSync node on a view, with base_tables: each base table's primary key onto the view columns
    selected from it (the view's definition says which, not the names: the view's `id` is the
    book's); one the view does not select is reported; the output validates."""
    import json

    from flusso_engine.cli import main

    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE VIEW book_card AS SELECT b.id, b.title, p.id AS pub_id, p.name AS publisher "
                     "FROM book b LEFT JOIN publisher p ON p.id = b.publisher_id")
    info = _pgsync_env(db, monkeypatch)
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps([{"database": info["dbname"], "index": "cards", "nodes": {
        "table": "book_card", "columns": ["title", "publisher"], "base_tables": ["book", "publisher", "review"]}}]))
    out = tmp_path / "flusso.yaml"
    assert main(["import-pgsync", str(schema), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    text = out.read_text()
    assert "key: [id]  # the view columns its first base table's key maps onto" in text
    assert ("depends_on: [{table: public.book, key: {id: id}}, {table: public.publisher, key: {id: pub_id}}]"
            in text)
    assert ("base table public.review has key columns (id) the view does not select as they are: map its "
            "columns onto the view's in depends_on by hand") in err
    assert main(["validate", "-c", str(out)]) == 0, capsys.readouterr()


def test_import_pgsync_takes_a_materialized_view_without_its_base_tables(db: str, tmp_path, monkeypatch,
                                                                         capsys) -> None:
    import json

    from flusso_engine.cli import main

    info = _pgsync_env(db, monkeypatch)
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps([{"database": info["dbname"], "index": "frozen", "nodes": {
        "table": "frozen", "primary_key": ["book_id"], "columns": ["title"], "base_tables": ["book"]}}]))
    out = tmp_path / "flusso.yaml"
    assert main(["import-pgsync", str(schema), "-o", str(out)]) == 0
    assert "not converted" not in capsys.readouterr().err
    text = out.read_text()
    assert "table: public.frozen" in text and "key: [book_id]" in text and "depends_on" not in text
    assert ("# public.frozen is a materialized view: flusso watches for REFRESH and rebuilds the index from it "
            "(PGSync's base_tables book are not needed).") in text
    assert main(["validate", "-c", str(out)]) == 0, capsys.readouterr()


def test_resolve_costs_the_same_whatever_the_number_of_base_changes(db: str) -> None:
    config = config_for(db)
    with psycopg.connect(db) as conn:
        catalog = read_catalog(conn, config.tables())
    costs = []
    with SqlDocumentBuilder(config, catalog, db) as builder:
        for n in (1, 200):
            changes = [_change("public.publisher", "update", {"id": str(i % 3), "name": "x"}) for i in range(n)]
            changes += [_change("public.book", "delete", None, {"id": str(i)}) for i in range(n)]
            changes += [_change("public.review", "insert", {"id": str(i), "book_id": str(i % 4)}) for i in range(n)]
            before = builder.statements
            builder.resolve(changes)
            costs.append(builder.statements - before)
    assert costs == [1, 1]  # the publisher's walk through the view; book and review are ids already
