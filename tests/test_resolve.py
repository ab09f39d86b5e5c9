"""resolve: every document a change can touch, in a bounded number of queries.

The property test applies random committed changes to a small bookstore, turns the table diff into
the `Change`s pgoutput would deliver (text values; old rows whole for the tables that
`needs_full_identity` names, keys only otherwise), and checks that every document whose built
content differs before and after is among the ids `resolve` returned.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from psycopg import sql

from flusso_engine.catalog import Catalog, Table, read_catalog
from flusso_engine.changes import Change, DocId, Row
from flusso_engine.config import FlussoConfig, load_config, parse_config
from flusso_engine.documents.routes import needs_full_identity
from flusso_engine.documents.sql import SqlDocumentBuilder

BOOKSTORE = Path(__file__).resolve().parents[1] / "examples" / "bookstore"
sys.path.insert(0, str(BOOKSTORE))
from generate import generate  # noqa: E402

BOOKS = 12
SEED = 5
FOREIGN_KEYS = {  # table: {column: referenced table}, as schema.sql declares them
    "book": {"publisher_id": "publisher"},
    "book_detail": {"book_id": "book"},
    "book_author": {"book_id": "book", "author_id": "author"},
    "review": {"book_id": "book", "reader_id": "reader"},
    "review_tag": {"review_id": "review", "tag_id": "tag"},
}
NULLABLE = {("book", "publisher_id"), ("review", "reader_id")}
UNIQUE = {("book", "isbn"), ("tag", "name")}
WORDS = st.sampled_from(["north", "south", "x|y", "back\\slash"])
EDITS: dict[str, dict[str, st.SearchStrategy]] = {  # plain columns worth changing, and new values
    "publisher": {"name": WORDS, "country": st.sampled_from(["IT", None])},
    "author": {"name": WORDS, "born": st.sampled_from(["1970-01-01", None])},
    "reader": {"name": WORDS, "verified": st.booleans()},
    "tag": {"name": WORDS},
    "book": {
        "title": WORDS,
        "price": st.sampled_from(["9.99", None]),
        "genres": st.sampled_from([[], ["poetry"]]),
    },
    "book_detail": {"summary": WORDS},
    "book_author": {"position": st.integers(1, 4)},
    "review": {
        "rating": st.integers(1, 5),
        "body": WORDS,
        "created_at": st.sampled_from(["2014-01-01 00:00+00", "2030-01-01 00:00+00"]),
    },
    "review_tag": {},
}


class Bookstore:
    """A small bookstore that random changes are applied to, with what each change looks like in the WAL."""

    def __init__(self, dsn: str, config: FlussoConfig, catalog: Catalog) -> None:
        self.conn = psycopg.connect(dsn)
        self.catalog = catalog
        self.full = needs_full_identity(config, catalog)
        self.builder = SqlDocumentBuilder(config, catalog, dsn)
        self.seen: set[DocId] = set()

    def table(self, name: str) -> Table:
        return self.catalog.tables[f"public.{name}"]

    def reset(self) -> None:
        generate(self.conn, BOOKS, SEED)
        self.seen = set()

    def rows(self) -> dict[str, dict[tuple, Row]]:
        """Every row of every table, by primary key, with values as text (as pgoutput gives them)."""
        out = {}
        for name in EDITS:
            t = self.table(name)
            cols = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in t.columns)
            query = sql.SQL("SELECT {} FROM {}").format(cols, sql.Identifier(t.name))
            rows = [dict(zip(t.columns, r, strict=True)) for r in self.conn.execute(query).fetchall()]
            out[name] = {tuple(r[k] for k in t.primary_key): r for r in rows}
        self.conn.commit()
        return out

    def docs(self) -> dict[DocId, Any]:
        ids = [r[0] for r in self.conn.execute("SELECT id::text FROM book").fetchall()]
        self.conn.commit()
        self.seen.update(ids)
        return {i: d for i, d in self.builder.build("books", sorted(self.seen)).docs.items() if d is not None}

    def change(self, data: st.DataObject) -> list[Change]:
        """Apply one random insert, update or delete; return the changes it committed (none if the
        database refused it: a unique key taken, a row still referenced)."""
        before = self.rows()
        name = data.draw(st.sampled_from(sorted(EDITS)), label="table")
        if not before[name]:
            return []
        t = self.table(name)
        key = data.draw(st.sampled_from(sorted(before[name])), label="row")
        where = sql.SQL(" AND ").join(
            sql.SQL("{}::text = {}").format(sql.Identifier(k), sql.Literal(v))
            for k, v in zip(t.primary_key, key, strict=True)
        )
        op = data.draw(st.sampled_from(["insert", "update", "delete"]), label="op")
        if op == "delete":
            stmt = sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier(name), where)
            params: list[Any] = []
        else:
            choices = {c: self._reference(data, before, name, c) for c in FOREIGN_KEYS.get(name, {})}
            if op == "update":
                column = data.draw(st.sampled_from(sorted([*FOREIGN_KEYS.get(name, {}), *EDITS[name], "id"])))
                if column == "id" and "id" not in t.columns:
                    return []
                value = 10_000 + len(before[name]) if column == "id" else choices.get(column)
                if column in EDITS[name]:
                    value = data.draw(EDITS[name][column], label=column)
                stmt = sql.SQL("UPDATE {} SET {} = %s WHERE {}").format(
                    sql.Identifier(name), sql.Identifier(column), where
                )
                params = [value]
            else:  # a copy of the row, with new unique values and new references
                columns = [c for c in t.columns if c != "id"]
                values = []
                for c in columns:
                    if (name, c) in UNIQUE:
                        values.append(sql.Literal(f"new-{len(before[name])}"))
                    elif c in choices:
                        values.append(sql.Literal(choices[c]))
                    else:
                        values.append(sql.Identifier(c))
                stmt = sql.SQL("INSERT INTO {t} ({cols}) SELECT {vals} FROM {t} WHERE {w}").format(
                    t=sql.Identifier(name),
                    cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
                    vals=sql.SQL(", ").join(values),
                    w=where,
                )
                params = []
        note(f"{stmt.as_string(self.conn)} {params}")
        try:
            self.conn.execute(stmt, params)
            self.conn.commit()
        except psycopg.errors.IntegrityError:
            self.conn.rollback()
            note("refused")
            return []
        moved = (name, key) if op == "update" else None
        return self._diff(before, self.rows(), moved)

    def _reference(self, data: st.DataObject, rows: dict, table: str, column: str) -> str | None:
        target = FOREIGN_KEYS[table][column]
        options: list[str | None] = sorted(k[0] for k in rows[target])
        if (table, column) in NULLABLE:
            options.append(None)
        return data.draw(st.sampled_from(options), label=f"{table}.{column}")

    def _diff(self, before: dict, after: dict, moved: tuple[str, tuple] | None) -> list[Change]:
        """The changes pgoutput would send for this difference; an updated row whose key changed is
        one update when it is the row the statement updated."""
        changes = []
        for name in EDITS:
            t, old, new = self.table(name), before[name], after[name]
            full = t.qualified in self.full
            gone, added = set(old) - set(new), set(new) - set(old)
            if moved and moved[0] == name and moved[1] in gone and len(added) == 1:
                (new_key,) = added
                gone.discard(moved[1])
                added.discard(new_key)
                key_only = dict(zip(t.primary_key, moved[1], strict=True))
                changes.append(
                    Change(t.qualified, "update", new=new[new_key], old=old[moved[1]] if full else key_only)
                )
            for k in sorted(gone):
                key_only = dict(zip(t.primary_key, k, strict=True))
                changes.append(Change(t.qualified, "delete", old=old[k] if full else key_only))
            changes += [Change(t.qualified, "insert", new=new[k]) for k in sorted(added)]
            changes += [
                Change(t.qualified, "update", new=new[k], old=old[k] if full else None)
                for k in sorted(set(old) & set(new))
                if old[k] != new[k]
            ]
        return changes

    def close(self) -> None:
        self.builder.close()
        self.conn.close()


def filtered(config: FlussoConfig) -> FlussoConfig:
    """The bookstore with row filters on the root and on children (edited columns, so rows move in and
    out of them), scalar and flattened relations, a path and a sql field (issue #16)."""
    raw = config.model_dump(mode="json", exclude_defaults=True)
    raw["source"]["dsn"] = config.source.dsn.get_secret_value()
    books = raw["indexes"]["books"]
    books["where"] = "price IS NOT NULL OR title <> 'north'"
    books["fields"]["format"] = {"path": "attributes.format"}
    books["fields"]["label"] = {"sql": "title || '/' || coalesce(price::text, '-')", "type": "keyword"}
    rels = books["relations"]
    rels["publisher"].update(variant="flatten", where="country IS NOT NULL")
    rels["publisher"].pop("mapping")
    rels["authors"].update(variant="scalar", fields={"name": "name"}, where="name <> 'south'")
    rels["authors"].pop("mapping")
    rels["reviews"]["where"] = "rating > 2"
    rels["reviews"]["relations"]["tags"].update(variant="scalar", where="name LIKE '%h%'")
    rels["reviews"]["relations"]["tags"].pop("mapping")
    rels["reviews"]["relations"]["reviewer"]["where"] = "verified"
    return parse_config(raw, env={})


@pytest.fixture(params=["plain", "filtered"])
def bookstore(request, bookstore_db: str) -> tuple[str, FlussoConfig, Catalog]:
    config = load_config(BOOKSTORE / "flusso.yaml", env={})
    if request.param == "filtered":
        config = filtered(config)
    with psycopg.connect(bookstore_db) as conn:
        generate(conn, BOOKS, SEED)
        catalog = read_catalog(conn, config.tables())
    return bookstore_db, config, catalog


@pytest.fixture
def store(bookstore) -> Iterator[Bookstore]:
    world = Bookstore(*bookstore)
    yield world
    world.close()


def _differ(before: dict[DocId, Any], after: dict[DocId, Any]) -> set[DocId]:
    return {i for i in before.keys() | after.keys() if before.get(i) != after.get(i)}


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_resolve_finds_every_document_a_change_touches(store: Bookstore, data: st.DataObject):
    store.reset()
    first = docs = store.docs()
    batch: list[Change] = []
    for _ in range(data.draw(st.integers(1, 4), label="changes")):
        changes = store.change(data)
        after = store.docs()
        resolved = store.builder.resolve(changes).get("books", set())
        note(f"changes: {changes}")
        assert _differ(docs, after) <= resolved
        batch += changes
        docs = after
    assert _differ(first, docs) <= store.builder.resolve(batch).get("books", set())


# --- the rules, one at a time ----------------------------------------------------------------------


@pytest.fixture
def builder(bookstore) -> Iterator[SqlDocumentBuilder]:
    dsn, config, catalog = bookstore
    with SqlDocumentBuilder(config, catalog, dsn) as b:
        yield b


def _ids(dsn: str, query: str, *params: Any) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {str(r[0]) for r in conn.execute(query, params).fetchall()}


def test_a_child_moved_between_parents_touches_both(builder):
    old = {"id": "1", "book_id": "3", "reader_id": None, "rating": "4"}
    moved = Change("public.review", "update", new={**old, "book_id": "5"}, old=old)
    assert builder.resolve([moved]) == {"books": {"3", "5"}}


def test_a_deleted_child_touches_its_old_parent(builder):
    gone = Change("public.review", "delete", old={"id": "1", "book_id": "3", "reader_id": "2"})
    assert builder.resolve([gone]) == {"books": {"3"}}


def test_a_renamed_publisher_reaches_every_book_that_references_it(bookstore, builder):
    dsn, _, _ = bookstore
    expected = _ids(dsn, "SELECT id FROM book WHERE publisher_id = 1")
    assert len(expected) > 1
    renamed = Change("public.publisher", "update", new={"id": "1", "name": "New"})
    assert builder.resolve([renamed]) == {"books": expected}


def test_a_tag_reaches_the_books_of_the_reviews_that_carry_it(bookstore, builder):
    dsn, _, _ = bookstore
    (tag,) = _ids(dsn, "SELECT tag_id FROM review_tag GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")
    expected = _ids(
        dsn,
        "SELECT DISTINCT r.book_id FROM review r JOIN review_tag t ON t.review_id = r.id WHERE tag_id = %s",
        tag,
    )
    assert expected
    assert builder.resolve([Change("public.tag", "update", new={"id": tag, "name": "x"})]) == {
        "books": expected
    }


def test_a_join_table_row_touches_its_parent(bookstore, builder):
    dsn, _, _ = bookstore
    unlinked = Change("public.book_author", "delete", old={"book_id": "7", "author_id": "2"})
    tagged = Change("public.review_tag", "insert", new={"review_id": "1", "tag_id": "3"})
    assert builder.resolve([unlinked]) == {"books": {"7"}}
    assert builder.resolve([tagged]) == {"books": _ids(dsn, "SELECT book_id FROM review WHERE id = 1")}


def test_a_changed_root_key_yields_the_old_id_too(builder):
    renumbered = Change("public.book", "update", new={"id": "99", "title": "t"}, old={"id": "4"})
    assert builder.resolve([renumbered]) == {"books": {"4", "99"}}


def test_python_values_work_as_well_as_text(builder):
    assert builder.resolve([Change("public.publisher", "update", new={"id": 1})]) == builder.resolve(
        [Change("public.publisher", "update", new={"id": "1"})]
    )


def test_markers_truncates_and_other_tables_are_ignored(builder):
    ignored = [
        Change("", "commit", position=10),
        Change("public.book", "truncate"),
        Change("public.elsewhere", "insert", new={"id": "1"}),
    ]
    assert builder.resolve(ignored) == {}
    assert builder.statements == 0


def test_queries_do_not_grow_with_the_batch(builder):
    def batch(n: int) -> list[Change]:
        out = []
        for i in range(1, n + 1):
            out.append(Change("public.review", "update", new={"id": str(i), "book_id": str(i % BOOKS + 1)}))
            out.append(Change("public.reader", "update", new={"id": str(i)}))
            out.append(Change("public.publisher", "update", new={"id": str(i % 3 + 1)}))
            out.append(Change("public.author", "delete", old={"id": str(i)}))
        return out

    counts = []
    for n in (2, 200):
        before = builder.statements
        builder.resolve(batch(n))
        counts.append(builder.statements - before)
    assert counts == [3, 3]  # reader, publisher and author each enter once; reviews are their book's id


def everything(config: FlussoConfig) -> FlussoConfig:
    """`filtered` with transforms of every kind and a view relation over its base table: every
    feature of issue #16 that reaches SQL (plugins run after the build, in Python)."""
    raw = filtered(config).model_dump(mode="json", exclude_defaults=True)
    raw["source"]["dsn"] = config.source.dsn.get_secret_value()
    books = raw["indexes"]["books"]
    books["transform"] = {
        "replace": {"isbn": {"-": ""}, "title": {"regex": {"\\s+": " "}}},
        "mapping": {"format": {"values": {"hardcover": "hc"}, "default": "other"}},
        "concat": [{"fields": ["title", "isbn"], "destination": "title_isbn", "delimiter": " / "}],
        "move": {"format": "about"},
    }
    books["relations"]["card"] = {
        "table": "public.book_card", "type": "one_to_one", "on": {"id": "book_id"}, "key": ["book_id"],
        "depends_on": [{"table": "public.book", "key": {"id": "book_id"}}],
        "fields": {"short": "short"},
    }
    return parse_config(raw, env={})


def test_queries_per_batch_do_not_grow_with_every_feature_on(bookstore_db: str):
    """Resolve and build together: the same statements for a batch of 8 changes (one per table) as
    for one of 800."""
    config = everything(load_config(BOOKSTORE / "flusso.yaml", env={}))
    with psycopg.connect(bookstore_db) as conn:
        generate(conn, BOOKS, SEED)
        conn.execute("CREATE VIEW book_card AS SELECT id AS book_id, left(title, 3) AS short FROM book")
        conn.commit()
        catalog = read_catalog(conn, config.tables())

    def batch(n: int) -> list[Change]:
        out = []
        for i in range(1, n + 1):
            book, other = str(i % BOOKS + 1), str((i + 1) % BOOKS + 1)
            out += [
                Change("public.book", "update", new={"id": book, "title": "t", "price": None},
                       old={"id": book, "title": "north", "price": "1.00"}),
                Change("public.publisher", "update", new={"id": str(i % 3 + 1), "country": None},
                       old={"id": str(i % 3 + 1), "country": "IT"}),
                Change("public.author", "update", new={"id": str(i), "name": "south"},
                       old={"id": str(i), "name": "north"}),
                Change("public.book_author", "insert", new={"book_id": book, "author_id": str(i)}),
                Change("public.review", "update", new={"id": str(i), "book_id": other, "rating": "1"},
                       old={"id": str(i), "book_id": book, "rating": "5"}),
                Change("public.reader", "update", new={"id": str(i), "verified": "f"},
                       old={"id": str(i), "verified": "t"}),
                Change("public.tag", "update", new={"id": str(i), "name": "x"}, old={"id": str(i), "name": "hh"}),
                Change("public.review_tag", "delete", old={"review_id": str(i), "tag_id": str(i)}),
            ]
        return out

    costs = []
    with SqlDocumentBuilder(config, catalog, bookstore_db) as builder:
        for n in (1, 100):
            before = builder.statements
            ids = builder.resolve(batch(n)).get("books", set())
            builder.build("books", ids)
            costs.append(builder.statements - before)
    assert costs[0] == costs[1] and costs[0] > 2, costs  # more than the build: resolve walked up too
