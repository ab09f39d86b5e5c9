"""`validate` against a real PostgreSQL: what the user reads when the database and config disagree.

Each test gets a fresh database holding a small bookstore-like schema of its own.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from flusso_engine.capture.wal.checks import Server, settings_problems
from flusso_engine.catalog import Catalog, Column, Table
from flusso_engine.config import FlussoConfig, parse_config
from flusso_engine.documents.checks import old_row_columns
from flusso_engine.documents.routes import needs_full_identity
from flusso_engine.error import ConfigError, Problem
from flusso_engine.validate import ValidationReport, validate

SCHEMA = """
CREATE TABLE publisher (id int PRIMARY KEY, name text NOT NULL, country text);
CREATE TABLE book (id int PRIMARY KEY, title text NOT NULL, isbn text, published_on date,
                   publisher_id int REFERENCES publisher);
CREATE TABLE author (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE book_author (book_id int REFERENCES book, author_id int REFERENCES author,
                          PRIMARY KEY (book_id, author_id));
CREATE TABLE reader (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE review (id int PRIMARY KEY, book_id int NOT NULL REFERENCES book,
                     reader_id int REFERENCES reader, rating int, body text,
                     created_at timestamptz NOT NULL DEFAULT now());
"""

CONFIG: dict[str, Any] = {
    "source": {"dsn": "${PG_DSN}", "slot": "flusso_test", "publication": "flusso_test"},
    "sink": {"type": "stdout"},
    "indexes": {
        "books": {
            "table": "public.book",
            "key": ["id"],
            "fields": {"title": "title", "isbn": "isbn", "published": "published_on"},
            "relations": {
                "publisher": {
                    "table": "public.publisher",
                    "type": "many_to_one",
                    "on": {"publisher_id": "id"},
                    "fields": {"name": "name"},
                },
                "authors": {
                    "table": "public.author",
                    "type": "many_to_many",
                    "through": {
                        "table": "public.book_author",
                        "parent": {"id": "book_id"},
                        "child": {"author_id": "id"},
                    },
                    "fields": {"name": "name"},
                },
                "reviews": {
                    "table": "public.review",
                    "type": "one_to_many",
                    "on": {"id": "book_id"},
                    "order_by": ["created_at", "id"],
                    "fields": {"rating": "rating", "body": "body"},
                    "relations": {
                        "reviewer": {
                            "table": "reader",
                            "type": "many_to_one",
                            "on": {"reader_id": "id"},
                            "fields": {"name": "name"},
                        }
                    },
                },
            },
        }
    },
}


@pytest.fixture
def db(fresh_db: str) -> str:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(SCHEMA)
    return fresh_db


def config_for(dsn: str, change: Any = None) -> FlussoConfig:
    raw = copy.deepcopy(CONFIG)
    if change is not None:
        change(raw)
    return parse_config(raw, {"PG_DSN": dsn})


def run_validate(dsn: str, config: FlussoConfig) -> ValidationReport:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return validate(config, conn)


def relation(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return raw["indexes"]["books"]["relations"][name]


def execute(dsn: str, statement: str | sql.Composable) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)


# --- a correct config ---------------------------------------------------------------------------


def test_correct_config_has_no_problems_and_notes_what_run_sets_up(db: str) -> None:
    report = run_validate(db, config_for(db))
    assert report.problems == []
    assert report.ok
    report.raise_for_problems()  # nothing to raise
    keep_size = [n for n in report.notes if n.startswith("max_slot_wal_keep_size is unset")]  # the server's
    assert [n for n in report.notes if n not in keep_size] == [
        "replication slot flusso_test does not exist yet: `flusso run` creates it "
        "(and backfills every index)",
        "publication flusso_test does not exist yet: `flusso run` creates it for public.book, "
        "public.publisher, public.book_author, public.author, public.review, public.reader",
        "public.review needs REPLICA IDENTITY FULL (old rows must carry book_id) and does not have it yet: "
        "`flusso run` sets it",
    ]


def test_an_inactive_slot_holding_wal_and_an_unset_keep_size_are_noted_with_the_fix(db: str) -> None:
    execute(db, "SELECT pg_create_logical_replication_slot('flusso_test', 'pgoutput')")
    execute(db, "CREATE TABLE filler AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g")
    execute(db, "SELECT pg_switch_wal()")
    with psycopg.connect(db) as conn:
        unset = conn.execute("SHOW max_slot_wal_keep_size").fetchone()[0] == "-1"
    report = run_validate(db, config_for(db, lambda raw: raw.update(slot={"warn_lag": "1MB"})))
    assert report.problems == []
    (lag,) = [n for n in report.notes if n.startswith("slot flusso_test is inactive and holds")]
    assert "above slot.warn_lag 1.0 MB" in lag and "Fix: restart capture (`flusso run`" in lag
    assert "`flusso teardown --yes` drops it" in lag
    keep = [n for n in report.notes if n.startswith("max_slot_wal_keep_size is unset (-1)")]
    assert len(keep) == (1 if unset else 0) and all("ALTER SYSTEM SET max_slot_wal_keep_size" in n for n in keep)


def test_existing_publication_and_full_identity_are_noted_as_done(db: str) -> None:
    execute(db, "ALTER TABLE review REPLICA IDENTITY FULL")
    execute(db, "CREATE PUBLICATION flusso_test FOR TABLE book, review")
    report = run_validate(db, config_for(db))
    assert report.problems == []
    assert (
        "publication flusso_test exists: `flusso run` adds public.publisher, public.book_author, "
        "public.author, public.reader to it"
    ) in report.notes
    assert not any("REPLICA IDENTITY" in note for note in report.notes)


# --- the schema ---------------------------------------------------------------------------------


def test_misspelt_column_names_its_path_and_the_close_name(db: str) -> None:
    def misspell(raw: dict[str, Any]) -> None:
        relation(raw, "reviews")["on"] = {"id": "book_idd"}
        raw["indexes"]["books"]["fields"]["title"] = "titel"

    report = run_validate(db, config_for(db, misspell))
    assert report.problems == [
        Problem(
            "indexes.books.fields.title",
            'column "titel" does not exist in public.book (did you mean "title"?)',
        ),
        Problem(
            "indexes.books.relations.reviews.on",
            'column "book_idd" does not exist in public.review (did you mean "book_id"?)',
        ),
    ]


def test_unknown_column_without_a_close_name_lists_the_columns(db: str) -> None:
    report = run_validate(db, config_for(db, lambda raw: relation(raw, "reviews").update(order_by=["zzz"])))
    assert report.problems == [
        Problem(
            "indexes.books.relations.reviews.order_by",
            'column "zzz" does not exist in public.review: use one of its columns '
            "(id, book_id, reader_id, rating, body, created_at)",
        )
    ]


def test_missing_table(db: str) -> None:
    def rename(raw: dict[str, Any]) -> None:
        relation(raw, "authors")["table"] = "public.authr"
        relation(raw, "authors")["through"]["table"] = "public.book_authors_gone_xyz"

    report = run_validate(db, config_for(db, rename))
    assert report.problems == [
        Problem(
            "indexes.books.relations.authors.table",
            "table public.authr does not exist (did you mean public.author?)",
        ),
        Problem(
            "indexes.books.relations.authors.through.table",
            "table public.book_authors_gone_xyz does not exist (did you mean public.book_author?)",
        ),
    ]


def test_table_in_another_schema_is_suggested(db: str) -> None:
    execute(db, "CREATE SCHEMA shop; ALTER TABLE reader SET SCHEMA shop")
    report = run_validate(db, config_for(db))
    assert report.problems == [
        Problem(
            "indexes.books.relations.reviews.relations.reviewer.table",
            "table public.reader does not exist (did you mean shop.reader?)",
        )
    ]


def test_view_without_depends_on_says_how_to_add_it(db: str) -> None:
    execute(db, "CREATE VIEW book_view AS SELECT * FROM book")
    report = run_validate(db, config_for(db, lambda raw: raw["indexes"]["books"].update(table="book_view")))
    (problem,) = report.problems
    assert problem.path == "indexes.books.depends_on"
    assert problem.message.startswith("public.book_view is a view: its rows change only through the tables it "
                                      "reads, which flusso must capture instead: add depends_on: [{table: ")


def test_root_key_that_is_not_unique(db: str) -> None:
    execute(db, "ALTER TABLE book ALTER COLUMN isbn SET NOT NULL")
    report = run_validate(db, config_for(db, lambda raw: raw["indexes"]["books"].update(key=["isbn"])))
    (problem,) = report.problems
    assert problem.path == "indexes.books.key"
    assert problem.message.startswith("(isbn) is not unique in public.book")
    assert "use its primary key (key: [id])" in problem.message
    assert "CREATE UNIQUE INDEX ON public.book (isbn)" in problem.message


def test_root_key_backed_by_a_unique_index_is_fine(db: str) -> None:
    execute(db, "CREATE UNIQUE INDEX ON book (isbn)")
    execute(db, "ALTER TABLE book ALTER COLUMN isbn SET NOT NULL")
    report = run_validate(db, config_for(db, lambda raw: raw["indexes"]["books"].update(key=["isbn"])))
    assert report.problems == []
    # a deleted book carries only its primary key, so the isbn must come from a full old row
    assert any(
        n.startswith("public.book needs REPLICA IDENTITY FULL (old rows must carry isbn)")
        for n in report.notes
    )


def _keyed_by(table: str, key: list[str]) -> Any:
    def change(raw: dict[str, Any]) -> None:
        raw["indexes"]["books"].update(table=table, key=key, fields={"title": "title"}, relations={})

    return change


@pytest.mark.parametrize(
    ("sql_type", "shown", "reason"),
    [
        ("double precision", "double precision", "a floating-point value is approximate"),
        ("money", "money", "money prints by the server's lc_monetary setting"),
        ("jsonb", "jsonb", "a JSON document is not a scalar id"),
        ("int[]", "integer[]", "an array prints as a literal"),
        ("int4range", "int4range", "a range prints as a literal"),
        ("bytea", "bytea", "binary values"),
        ("positive_int", "positive_int", "flusso cannot tell whether equal values of this type always print"),
    ],
)
def test_root_key_of_a_type_that_cannot_make_one_id_is_refused(
    db: str, sql_type: str, shown: str, reason: str
) -> None:
    execute(db, "CREATE DOMAIN positive_int AS int CHECK (VALUE > 0)")
    execute(db, f"CREATE TABLE odd (k {sql_type} PRIMARY KEY, title text)")
    (problem,) = run_validate(db, config_for(db, _keyed_by("odd", ["k"]))).problems
    assert problem.path == "indexes.books.key"
    assert problem.message.startswith(f"public.odd.k is {shown}, which cannot be part of a document id ({reason}")
    assert problem.message.endswith("or several such columns as a composite key")


def test_composite_key_of_supported_types_is_fine(db: str) -> None:
    execute(db, "CREATE TABLE odd (region char(3), at timestamptz, n numeric, title text, "
                "PRIMARY KEY (region, at, n))")
    assert run_validate(db, config_for(db, _keyed_by("odd", ["region", "at", "n"]))).problems == []


@pytest.mark.parametrize("sql_type", ["int", "text"])
def test_nullable_unique_key_is_refused_until_it_is_not_null(db: str, sql_type: str) -> None:
    execute(db, f"CREATE TABLE odd (id serial PRIMARY KEY, code {sql_type} UNIQUE, title text)")
    (problem,) = run_validate(db, config_for(db, _keyed_by("odd", ["code"]))).problems
    assert problem.path == "indexes.books.key"
    assert problem.message.startswith("(code) of public.odd may be NULL, and a row whose key is NULL has no "
                                      "document id")
    assert "ALTER TABLE public.odd ALTER COLUMN code SET NOT NULL" in problem.message
    execute(db, "ALTER TABLE odd ALTER COLUMN code SET NOT NULL")
    assert run_validate(db, config_for(db, _keyed_by("odd", ["code"]))).problems == []


def test_generated_key_or_join_column_is_refused(db: str) -> None:
    execute(db, "CREATE TABLE odd (id int PRIMARY KEY, code text GENERATED ALWAYS AS ('c' || id) STORED "
                "NOT NULL UNIQUE, title text)")
    (problem,) = run_validate(db, config_for(db, _keyed_by("odd", ["code"]))).problems
    assert problem.path == "indexes.books.table"
    assert problem.message.startswith("public.odd.code is a generated column, and logical replication does "
                                      "not send generated columns")


def test_array_child_without_primary_key_or_key(db: str) -> None:
    execute(db, "CREATE TABLE tag (book_id int NOT NULL, label text NOT NULL)")

    def add_tags(raw: dict[str, Any], key: list[str] | None = None) -> None:
        raw["indexes"]["books"]["relations"]["tags"] = {
            "table": "tag",
            "type": "one_to_many",
            "on": {"id": "book_id"},
            "fields": {"label": "label"},
            **({"key": key} if key else {}),
        }

    (problem,) = run_validate(db, config_for(db, add_tags)).problems
    assert problem.path == "indexes.books.relations.tags.key"
    assert problem.message.startswith(
        "public.tag has no primary key to order and identify tags by: add key: ["
    )
    assert "or give the table a primary key (ALTER TABLE public.tag ADD PRIMARY KEY (...))" in problem.message

    with_key = run_validate(db, config_for(db, lambda raw: add_tags(raw, key=["book_id", "label"])))
    assert with_key.problems == []


def test_object_relation_whose_target_is_not_unique(db: str) -> None:
    execute(db, "ALTER TABLE book ADD COLUMN publisher_name text")
    change = lambda raw: relation(raw, "publisher").update(on={"publisher_name": "name"})  # noqa: E731
    (problem,) = run_validate(db, config_for(db, change)).problems
    assert problem.path == "indexes.books.relations.publisher.on"
    assert problem.message.startswith("(name) is not unique in public.publisher, so several rows could match")


def test_join_columns_of_incomparable_types(db: str) -> None:
    execute(db, "ALTER TABLE review DROP CONSTRAINT review_book_id_fkey, ALTER COLUMN book_id TYPE text")
    (problem,) = run_validate(db, config_for(db)).problems
    assert problem == Problem(
        "indexes.books.relations.reviews.on",
        "public.book.id (integer) and public.review.book_id (text) cannot be joined, their types differ: "
        "join columns of the same type",
    )


def test_publication_that_misses_deletes(db: str) -> None:
    execute(db, "CREATE PUBLICATION flusso_test FOR ALL TABLES WITH (publish = 'insert, update')")
    (problem,) = run_validate(db, config_for(db)).problems
    assert problem.path == "source.publication"
    assert problem.message.startswith("publication flusso_test does not publish delete, truncate")
    assert (
        "ALTER PUBLICATION flusso_test SET (publish = 'insert, update, delete, truncate')" in problem.message
    )


def test_raise_for_problems_lists_every_problem_with_its_path(db: str) -> None:
    def break_two(raw: dict[str, Any]) -> None:
        raw["indexes"]["books"]["fields"]["title"] = "titel"
        relation(raw, "reviews")["table"] = "revew"

    report = run_validate(db, config_for(db, break_two))
    with pytest.raises(ConfigError) as caught:
        report.raise_for_problems("shop.yaml")
    assert str(caught.value).splitlines() == [
        "shop.yaml: 2 problems",
        '  indexes.books.fields.title: column "titel" does not exist in public.book (did you mean "title"?)',
        "  indexes.books.relations.reviews.table: "
        "table public.revew does not exist (did you mean public.review?)",
    ]


# --- the role -----------------------------------------------------------------------------------


@pytest.fixture
def role(db: str) -> Iterator[tuple[str, str]]:
    """A login role of its own (roles are cluster-wide); yields (name, password), dropped afterwards."""
    name, password = f"flusso_r_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password))
        )
        conn.execute(
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(name))
        )
    try:
        yield name, password
    finally:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def as_role(db: str, role: tuple[str, str]) -> str:
    return psycopg.conninfo.make_conninfo(db, user=role[0], password=role[1])


def test_role_without_replication_privilege(db: str, role: tuple[str, str]) -> None:
    dsn = as_role(db, role)
    report = run_validate(dsn, config_for(dsn))
    problems = {p.path: p.message for p in report.problems}
    assert problems["source.slot"] == (
        f'role "{role[0]}" may not use replication slots: run ALTER ROLE {role[0]} REPLICATION '
        "as a superuser, or connect as a role that has it"
    )
    text = "\n".join([*map(str, report.problems), *report.notes])
    assert role[1] not in text  # the password never shows


def test_role_that_owns_no_table_cannot_publish_or_set_identity(db: str, role: tuple[str, str]) -> None:
    execute(db, sql.SQL("ALTER ROLE {} REPLICATION").format(sql.Identifier(role[0])))
    dsn = as_role(db, role)
    problems = run_validate(dsn, config_for(dsn)).problems
    assert [p.path for p in problems] == ["source.publication", "indexes.books.relations.reviews.table"]
    assert problems[0].message.startswith(
        f'role "{role[0]}" may not create publication flusso_test: it lacks '
    )
    assert "ownership of public.book, public.publisher" in problems[0].message
    assert problems[1].message.endswith("run ALTER TABLE public.review REPLICA IDENTITY FULL as its owner")


def test_role_that_may_not_read_a_table(db: str, role: tuple[str, str]) -> None:
    execute(db, sql.SQL("ALTER ROLE {} REPLICATION").format(sql.Identifier(role[0])))
    execute(db, sql.SQL("REVOKE SELECT ON author FROM {}").format(sql.Identifier(role[0])))
    dsn = as_role(db, role)
    problems = {p.path: p.message for p in run_validate(dsn, config_for(dsn)).problems}
    assert problems["indexes.books.relations.authors.table"].startswith(
        f'role "{role[0]}" may not read public.author: run GRANT SELECT ON public.author TO {role[0]}'
    )


# --- rules without a database -------------------------------------------------------------------


def server(**changes: Any) -> Server:
    base = dict(
        user="flusso",
        database="shop",
        superuser=False,
        replication=True,
        create_on_database=True,
        wal_level="logical",
        max_replication_slots=10,
        max_wal_senders=10,
        slots_used=0,
        slot=None,
        publication=None,
        access={},
    )
    return Server(**{**base, **changes})


def test_wal_level_must_be_logical() -> None:
    assert settings_problems(server(wal_level="replica")) == [
        Problem(
            "source.capture",
            'wal_level is "replica" but capture from the WAL needs "logical": '
            "set wal_level = logical in postgresql.conf and restart PostgreSQL",
        )
    ]


def test_replication_slots_and_senders_must_be_allowed() -> None:
    problems = settings_problems(server(max_replication_slots=0, max_wal_senders=0))
    assert [p.path for p in problems] == ["source.slot", "source.capture"]
    assert problems[0].message.startswith("max_replication_slots is 0: set it to at least 1")


def table(name: str, columns: list[str], primary_key: list[str], identity: str = "d") -> Table:
    cols = {c: Column(c, "integer", 23, None, "N", True, "int4") for c in columns}
    schema, _, rel = name.partition(".")
    return Table(schema, rel, cols, primary_key, [primary_key] if primary_key else [], identity)


def test_needs_full_identity_where_old_rows_must_carry_more_than_the_primary_key() -> None:
    config = config_for("host=x")
    catalog = Catalog(
        {
            t.qualified: t
            for t in (
                table("public.book", ["id", "publisher_id"], ["id"]),
                table("public.publisher", ["id", "name"], ["id"]),
                table("public.book_author", ["book_id", "author_id"], ["book_id", "author_id"]),
                table("public.author", ["id", "name"], ["id"]),
                table("public.review", ["id", "book_id", "reader_id"], ["id"]),
                table("public.reader", ["id", "name"], [], identity="d"),
            )
        }
    )
    assert old_row_columns(config) == {
        "public.book": {"id"},  # the root key: a deleted book deletes its document
        "public.publisher": {"id"},  # many_to_one target: the column the book references
        "public.book_author": {"book_id", "author_id"},  # through: both sides
        "public.author": {"id"},  # many_to_many child: what the through table references
        "public.review": {"book_id"},  # one_to_many child: its foreign key to the book
        "public.reader": {"id"},
    }
    # review's book_id is not in its primary key; reader has no primary key at all
    assert needs_full_identity(config, catalog) == {"public.review", "public.reader"}


# --- path and sql fields (issue #16) -------------------------------------------------------------


def test_expressions_and_paths_are_checked_against_the_live_database(db: str) -> None:
    execute(db, "ALTER TABLE book ADD COLUMN attrs jsonb")
    book = CONFIG["indexes"]["books"]

    def change(raw: dict[str, Any]) -> None:
        raw["indexes"]["books"]["fields"].update(
            full={"sql": "title || ' ' || isbn", "type": "text"},  # fine
            pct={"sql": "length(title) % 7", "type": "long"},  # a % passes psycopg's placeholders
            broken={"sql": "title || (isbn", "type": "text"},
            missing={"sql": "upper(subtitle)", "type": "text"},
            parent={"sql": "name", "type": "text"},  # a publisher's column, not the book's
            color={"path": "attrs.color"},  # fine
            bad_path={"path": "isbn.x"},
            gone={"path": "extras.x"},
            many={"sql": "count(*)", "type": "long"},
            rows={"sql": "generate_series(1, id)", "type": "long"},
        )
        relation(raw, "authors")["fields"]["loud"] = {"sql": "upper(name) || book_id", "type": "text"}

    report = run_validate(db, config_for(db, change))
    by_path = {p.path: p.message for p in report.problems}
    assert set(by_path) == {
        "indexes.books.fields.broken", "indexes.books.fields.missing", "indexes.books.fields.parent",
        "indexes.books.fields.bad_path.path", "indexes.books.fields.gone.path",
        "indexes.books.relations.authors.fields.loud", "indexes.books.fields.many", "indexes.books.fields.rows",
    }
    assert "(aggregate functions are not allowed: an expression reads its own row alone)" in by_path[
        "indexes.books.fields.many"]
    assert "set-returning functions are not allowed: an expression reads its own row alone" in by_path[
        "indexes.books.fields.rows"]
    assert by_path["indexes.books.fields.missing"].startswith(
        'the expression "upper(subtitle)" does not run on public.book (column "subtitle" does not exist): '
        "write a SQL expression over its own columns (id, title, isbn,"
    )
    assert "syntax error" in by_path["indexes.books.fields.broken"]
    assert 'column "book_id" does not exist' in by_path["indexes.books.relations.authors.fields.loud"]
    assert by_path["indexes.books.fields.bad_path.path"] == (
        "public.book.isbn is text, not json or jsonb, so it has no keys to follow: make it a column field "
        "(bad_path: isbn), or read it with sql: and give its type"
    )
    assert by_path["indexes.books.fields.gone.path"].startswith('column "extras" does not exist in public.book')
    assert book == CONFIG["indexes"]["books"]  # the shared config is untouched
    with psycopg.connect(db) as conn:  # validation wrote nothing, and left no transaction open
        assert conn.execute("SELECT count(*) FROM book").fetchone()[0] == 0


def test_an_expression_cannot_write_even_through_a_semicolon(db: str) -> None:
    def change(raw: dict[str, Any]) -> None:
        raw["indexes"]["books"]["fields"]["evil"] = {"sql": "1); DROP TABLE review; SELECT (1", "type": "long"}

    report = run_validate(db, config_for(db, change))
    assert [p.path for p in report.problems] == ["indexes.books.fields.evil"]
    assert "cannot insert multiple commands into a prepared statement" in report.problems[0].message
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT to_regclass('review') IS NOT NULL").fetchone()[0]


def test_a_where_is_a_condition_over_its_own_table(db: str) -> None:
    def change(raw: dict[str, Any]) -> None:
        raw["indexes"]["books"]["where"] = "isbn IS NOT NULL AND title LIKE '%a%'"  # fine
        relation(raw, "reviews")["where"] = "rating"  # not boolean
        relation(raw, "publisher")["where"] = "title <> ''"  # the book's column, not the publisher's
        relation(raw, "authors")["where"] = "name <> '' AND"

    problems = {p.path: p.message for p in run_validate(db, config_for(db, change)).problems}
    assert set(problems) == {"indexes.books.relations.reviews.where", "indexes.books.relations.publisher.where",
                             "indexes.books.relations.authors.where"}
    assert problems["indexes.books.relations.reviews.where"] == (
        'the condition "rating" does not run on public.review (argument of WHERE must be type boolean, not '
        "type integer): write a SQL condition over its own columns (id, book_id, reader_id, rating, body, "
        "created_at)"
    )
    assert 'column "title" does not exist' in problems["indexes.books.relations.publisher.where"]
