"""flusso.yaml: every kind of mistake names its path and says what to do; secrets stay hidden.

Unit tests: no services needed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from flusso_engine.config import (
    FlussoConfig,
    load_config,
    parse_config,
    read_yaml,
    split_table,
    walk_relations,
)
from flusso_engine.error import ConfigError, Problem

SECRET = "s3cr3t-pw-9f2c"
ENV = {"FLUSSO_PG_DSN": f"postgresql://flusso:{SECRET}@127.0.0.1:5432/shop"}

EXAMPLE = """
source:
  dsn: ${FLUSSO_PG_DSN}
  capture: wal
  slot: flusso_bookstore
  publication: flusso_bookstore
sink:
  type: opensearch
  hosts: ["${OPENSEARCH_URL:-http://127.0.0.1:9200}"]
  username: ${OPENSEARCH_USER:-}
  password: ${OPENSEARCH_PASSWORD:-}
  verify_certs: true
batch: {max_changes: 1000, max_delay_ms: 200}
queue: {type: channel, capacity: 20000}
failures:
  item_rejection: dead_letter
  flush_error: {retries: 5, backoff_ms: 200, max_backoff_ms: 10000}
indexes:
  books:
    table: public.book
    key: [id]
    fields: {title: title, isbn: isbn, published: published_on}
    mapping: {title: {type: text}, isbn: {type: keyword}, published: {type: date}}
    settings: {number_of_shards: 1, number_of_replicas: 0}
    relations:
      publisher:
        table: public.publisher
        type: many_to_one
        on: {publisher_id: id}
        fields: {name: name, country: country}
      authors:
        table: public.author
        type: many_to_many
        through: {table: public.book_author, parent: {id: book_id}, child: {author_id: id}}
        fields: {name: name}
      reviews:
        table: public.review
        type: one_to_many
        on: {id: book_id}
        order_by: [created_at, id]
        fields: {rating: rating, body: body}
        relations:
          reviewer: {table: public.reader, type: many_to_one, on: {reader_id: id}, fields: {name: name}}
"""


def example() -> dict[str, Any]:
    """The DESIGN §3 example as loaded YAML, for a test to break one thing in."""
    return copy.deepcopy(_EXAMPLE)


_EXAMPLE = read_yaml(EXAMPLE)


def problems_of(raw: Any, env: dict[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, ENV if env is None else env)
    return caught.value.problems


def only_problem(raw: Any, env: dict[str, str] | None = None) -> Problem:
    problems = problems_of(raw, env)
    assert len(problems) == 1, problems
    return problems[0]


def reviews(raw: dict[str, Any]) -> dict[str, Any]:
    return raw["indexes"]["books"]["relations"]["reviews"]


# --- a good config ------------------------------------------------------------------------------


def test_design_example_loads_with_its_defaults() -> None:
    config = parse_config(example(), ENV)
    assert config.source.dsn.get_secret_value() == ENV["FLUSSO_PG_DSN"]
    assert config.sink.hosts == ["http://127.0.0.1:9200"]
    assert config.sink.username is None and config.sink.password is None
    books = config.indexes["books"]
    assert books.relations["reviews"].on == {"id": "book_id"}
    assert books.relations["reviews"].is_array and not books.relations["publisher"].is_array
    assert [p for p, _ in walk_relations(books.relations)] == [
        ("publisher",),
        ("authors",),
        ("reviews",),
        ("reviews", "reviewer"),
    ]
    assert config.tables() == [
        "public.book",
        "public.publisher",
        "public.book_author",
        "public.author",
        "public.review",
        "public.reader",
    ]


def test_minimal_config_gets_the_documented_defaults() -> None:
    raw = {
        "source": {"dsn": "host=db dbname=shop", "slot": "s", "publication": "p"},
        "sink": {"type": "stdout"},
        "indexes": {"books": {"table": "book", "key": "id", "fields": {"title": "title"}}},
    }
    config = parse_config(raw, {})
    assert config.batch.max_changes == 1000 and config.batch.max_delay_ms == 200
    assert config.queue.capacity == 20000
    assert config.failures.item_rejection == "dead_letter"
    assert config.failures.item_rejection_keeps == "none"
    assert config.failures.flush_error.retries == 5
    assert config.sink.verify_certs is True
    assert config.indexes["books"].key == ["id"]  # a single column may be written bare


def test_split_table_defaults_to_public() -> None:
    assert split_table("book") == ("public", "book")
    assert split_table("shop.book") == ("shop", "book")


def test_on_is_a_key_not_a_yaml_boolean() -> None:
    """YAML 1.1 reads a bare `on` as true; flusso.yaml's join key must survive either loader."""
    assert read_yaml("on: {a: b}\nflag: yes") == {"on": {"a": "b"}, "flag": "yes"}
    config = parse_config(yaml.safe_load(EXAMPLE), ENV)
    assert config.indexes["books"].relations["publisher"].on == {"publisher_id": "id"}


# --- each kind of mistake -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remove", "path", "hint"),
    [
        (("source", "dsn"), "source.dsn", "connection string"),
        (("source", "slot"), "source.slot", "replication slot"),
        (("sink", "type"), "sink.type", "opensearch or stdout"),
        (("indexes", "books", "table"), "indexes.books.table", "root table"),
        (("indexes", "books", "key"), "indexes.books.key", "key columns"),
        (
            ("indexes", "books", "relations", "reviews", "type"),
            "indexes.books.relations.reviews.type",
            "one_to_many",
        ),
        (
            ("indexes", "books", "relations", "authors", "through", "table"),
            "indexes.books.relations.authors.through.table",
            "join table",
        ),
    ],
)
def test_missing_required_key_names_its_path(remove: tuple[str, ...], path: str, hint: str) -> None:
    raw = example()
    node = raw
    for part in remove[:-1]:
        node = node[part]
    del node[remove[-1]]
    problem = only_problem(raw)
    assert problem.path == path
    assert f'required key "{remove[-1]}" is missing: add it' in problem.message
    assert hint in problem.message


def test_unknown_key_suggests_the_close_one() -> None:
    raw = example()
    reviews(raw)["feilds"] = reviews(raw).pop("fields")
    problem = only_problem(raw)  # the missing `fields` is explained by the typo: not listed twice
    assert problem == Problem(
        "indexes.books.relations.reviews.feilds", 'unknown key "feilds" (did you mean "fields"?): rename it'
    )


def test_unknown_key_without_a_close_one_lists_the_allowed_keys() -> None:
    raw = example()
    raw["sink"]["colour"] = "blue"
    problem = only_problem(raw)
    assert problem.path == "sink.colour"
    assert problem.message.startswith('unknown key "colour": remove it (allowed here: type, hosts, ')


def test_wrong_relation_type_suggests_the_close_one() -> None:
    raw = example()
    reviews(raw)["type"] = "one_to_manyy"
    assert only_problem(raw) == Problem(
        "indexes.books.relations.reviews.type",
        '"one_to_manyy" is not one of many_to_one, one_to_one, one_to_many, many_to_many '
        '(did you mean "one_to_many"?): use one of them',
    )


def test_item_rejection_keeps_is_none_or_previous() -> None:
    raw = example()
    raw["failures"]["item_rejection_keeps"] = "previous"
    assert parse_config(raw, ENV).failures.item_rejection_keeps == "previous"
    raw["failures"]["item_rejection_keeps"] = "previos"
    assert only_problem(raw) == Problem(
        "failures.item_rejection_keeps",
        '"previos" is not one of none, previous (did you mean "previous"?): use one of them',
    )


def test_many_to_many_without_through() -> None:
    raw = example()
    del raw["indexes"]["books"]["relations"]["authors"]["through"]
    problem = only_problem(raw)
    assert problem.path == "indexes.books.relations.authors.through"
    assert "many_to_many relation needs `through`" in problem.message
    assert "add e.g. through: {table:" in problem.message


def test_relation_without_on() -> None:
    raw = example()
    del reviews(raw)["on"]
    assert only_problem(raw) == Problem(
        "indexes.books.relations.reviews.on", "the relation needs `on`: add on: {parent column: child column}"
    )


def test_unset_environment_variable_names_the_variable_once() -> None:
    problem = only_problem(example(), env={})
    assert problem == Problem(
        "source.dsn",
        "environment variable FLUSSO_PG_DSN is not set: export it, or give a default with "
        "${FLUSSO_PG_DSN:-default}",
    )


def test_environment_defaults_apply_when_unset_or_empty() -> None:
    raw = example()
    raw["source"]["slot"] = "${SLOT:-flusso_main}"
    raw["batch"]["max_changes"] = "${BATCH:-500}"
    assert parse_config(raw, ENV).source.slot == "flusso_main"
    assert parse_config(raw, {**ENV, "SLOT": ""}).source.slot == "flusso_main"
    config = parse_config(raw, {**ENV, "SLOT": "other", "BATCH": "42"})
    assert config.source.slot == "other"
    assert config.batch.max_changes == 42


def test_environment_is_read_when_no_env_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUSSO_PG_DSN", "host=from-environ dbname=x")
    assert parse_config(example()).source.dsn.get_secret_value() == "host=from-environ dbname=x"


def test_malformed_variable_reference() -> None:
    raw = example()
    raw["source"]["publication"] = "${PUB-flusso}"
    problems = problems_of(raw)
    assert problems[0].path == "source.publication"
    assert "malformed ${...}: write ${VAR} or ${VAR:-default}" in problems[0].message


@pytest.mark.parametrize("key", ["slot", "publication"])
def test_invalid_slot_or_publication_name_suggests_a_valid_one(key: str) -> None:
    raw = example()
    raw["source"][key] = "Flusso-Main"
    problem = only_problem(raw)
    assert problem.path == f"source.{key}"
    assert '"Flusso-Main" is not a valid' in problem.message
    assert "(lower-case letters, digits and _ only, at most 63)" in problem.message
    assert problem.message.endswith('use e.g. "flusso_main"')


def test_invalid_index_name_suggests_a_valid_one() -> None:
    raw = example()
    raw["indexes"]["My Books"] = raw["indexes"].pop("books")
    problem = only_problem(raw)
    assert problem.path == "indexes.My Books"
    assert '"My Books" is not a valid OpenSearch index name' in problem.message
    assert problem.message.endswith('rename it, e.g. "my_books"')


def test_non_integer_batch_size() -> None:
    raw = example()
    raw["batch"]["max_changes"] = "lots"
    assert only_problem(raw) == Problem(
        "batch.max_changes", 'expected a whole number, got "lots": write e.g. 1000'
    )


@pytest.mark.parametrize(("written", "size"), [
    ("1GB", 1024**3), ("512 MB", 512 * 1024**2), ("1.5GiB", 3 * 1024**3 // 2), ("64kB", 65536), (1000, 1000),
])
def test_slot_warn_lag_takes_a_size_in_bytes_or_with_a_unit(written: Any, size: int) -> None:
    raw = example()
    raw["slot"] = {"warn_lag": written}
    assert parse_config(raw, ENV).slot.warn_lag == size
    assert parse_config(example(), ENV).slot.warn_lag == 1024**3  # the default: 1 GB


def test_slot_warn_lag_that_is_not_a_size() -> None:
    raw = example()
    raw["slot"] = {"warn_lag": "a lot"}
    assert only_problem(raw) == Problem(
        "slot.warn_lag", '"a lot" is not a size: write e.g. 1GB, 512MB or a number of bytes'
    )


def test_out_of_range_number() -> None:
    raw = example()
    raw["queue"]["capacity"] = 0
    assert only_problem(raw) == Problem("queue.capacity", "must be greater than 0, got 0: change it")


def test_mapping_entry_for_an_unknown_field_suggests_the_close_one() -> None:
    raw = example()
    raw["indexes"]["books"]["mapping"]["titel"] = raw["indexes"]["books"]["mapping"].pop("title")
    problem = only_problem(raw)
    assert problem.path == "indexes.books.mapping.titel"
    assert problem.message == (
        '"titel" is not a field here (did you mean "title"?): '
        "map only the fields listed in fields (title, isbn, published)"
    )


def test_mapping_entry_for_a_relation_points_at_nested() -> None:
    raw = example()
    raw["indexes"]["books"]["mapping"]["reviews"] = {"type": "nested"}
    problem = only_problem(raw)
    assert problem.path == "indexes.books.mapping.reviews"
    assert "set nested: true on it" in problem.message


@pytest.mark.parametrize(
    ("written", "says"),
    [
        (
            "strng",
            '(did you mean "string"? OpenSearch has no such type): use text (full-text search) or keyword',
        ),
        ("string", "use text (full-text search) or keyword (exact values)"),
        ("txt", '(did you mean "text"?)'),
        ("timestamp", "use date"),
        ("zzzz", "use e.g. text, keyword, long"),
    ],
)
def test_mapping_type_that_opensearch_does_not_have(written: str, says: str) -> None:
    raw = example()
    raw["indexes"]["books"]["mapping"]["isbn"] = {"type": written}
    problem = only_problem(raw)
    assert problem.path == "indexes.books.mapping.isbn.type"
    assert problem.message.startswith(f'"{written}" is not an OpenSearch field type')
    assert says in problem.message


def test_object_relation_cannot_be_ordered_or_nested() -> None:
    raw = example()
    raw["indexes"]["books"]["relations"]["publisher"].update(order_by=["name"], nested=True)
    paths = {p.path for p in problems_of(raw)}
    assert paths == {
        "indexes.books.relations.publisher.order_by",
        "indexes.books.relations.publisher.nested",
    }


def test_opensearch_sink_needs_hosts_and_both_credentials() -> None:
    raw = example()
    raw["sink"]["hosts"] = []
    raw["sink"]["username"] = "admin"
    problems = problems_of(raw)
    assert [p.path for p in problems] == ["sink.hosts", "sink.password"]
    assert problems[1].message == "username is set but password is not: set both, or neither"


def test_index_named_like_another_index_dead_letters() -> None:
    raw = example()
    raw["indexes"]["books-deadletter"] = copy.deepcopy(raw["indexes"]["books"])
    problem = only_problem(raw)
    assert problem.path == "indexes.books-deadletter"
    assert "dead-letter index of books" in problem.message


def test_bad_yaml_gives_the_line_and_never_echoes_the_text(tmp_path: Path) -> None:
    path = tmp_path / "flusso.yaml"
    path.write_text(f"source:\n  dsn: postgresql://u:{SECRET}@h/db\n  slot: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)
    (problem,) = caught.value.problems
    assert problem.message.startswith("not valid YAML at line ")
    assert problem.message.endswith("fix the syntax there")
    assert SECRET not in str(caught.value)


def test_a_key_given_twice_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "flusso.yaml"
    path.write_text(EXAMPLE.replace("      authors:", "      reviews:", 1))
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)
    (problem,) = caught.value.problems
    assert problem.path == "indexes.books.relations.reviews"
    assert problem.message.startswith('"reviews" appears twice here (line ')


def test_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml", ENV)
    assert "cannot read" in str(caught.value)
    assert "No such file or directory: check the path" in str(caught.value)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "flusso.yaml"
    path.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="the file is empty: give it source, sink and indexes"):
        load_config(path, ENV)


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "flusso.yaml"
    path.write_text(EXAMPLE)
    assert load_config(path, ENV).indexes["books"].table == "public.book"


# --- everything at once, and secrets ------------------------------------------------------------


def test_every_mistake_is_listed_at_once() -> None:
    raw = example()
    raw["source"]["slot"] = "Bad Slot"  # 1 invalid name
    raw["batch"]["max_changes"] = "many"  # 2 not a number
    raw["indexes"]["books"]["mapping"]["isbn"] = {"type": "strng"}  # 3 unknown type
    reviews(raw)["type"] = "one_to_lots"  # 4 wrong relation type
    del raw["indexes"]["books"]["relations"]["authors"]["through"]  # 5 many_to_many without through
    raw["indexes"]["books"]["relations"]["publisher"]["colour"] = "x"  # 6 unknown key
    raw["sink"]["password"] = "${OPENSEARCH_PASSWORD}"  # 7 unset variable
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, ENV)
    assert [p.path for p in caught.value.problems] == [
        "source.slot",
        "sink.password",
        "batch.max_changes",
        "indexes.books.mapping.isbn.type",
        "indexes.books.relations.publisher.colour",
        "indexes.books.relations.authors.through",
        "indexes.books.relations.reviews.type",
    ]
    assert str(caught.value).startswith("flusso.yaml: 7 problems\n  source.slot: ")


def test_password_never_shown_in_config_or_errors() -> None:
    raw = example()
    raw["sink"].update(username="admin", password=SECRET, hosts=[f"https://admin:{SECRET}@os:9200"])
    config = parse_config(raw, ENV)
    for text in (str(config), repr(config), repr(config.source), repr(config.sink)):
        assert SECRET not in text
    assert config.sink.password is not None and config.sink.password.get_secret_value() == SECRET

    raw["source"]["dsn"] = 12345  # wrong type: the value must not be echoed
    raw["sink"]["password"] = [SECRET]
    raw["sink"]["hosts"] = {"a": f"https://admin:{SECRET}@os:9200"}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, ENV)
    assert {p.path for p in caught.value.problems} == {"source.dsn", "sink.password", "sink.hosts"}
    assert SECRET not in str(caught.value)
    assert "12345" not in str(caught.value)


def test_unparsable_dsn_is_a_problem_without_its_text() -> None:
    problem = only_problem(example(), env={"FLUSSO_PG_DSN": f"host=db password={SECRET} bogus"})
    assert problem.path == "source.dsn"
    assert problem.message.startswith("is not a PostgreSQL connection string: write postgresql://")
    assert SECRET not in problem.message


def test_parse_config_rejects_a_document_that_is_not_a_mapping() -> None:
    problem = only_problem(["source"])
    assert problem.path == ""
    assert "must hold a mapping" in problem.message


def test_config_is_a_frozen_model() -> None:
    config = parse_config(example(), ENV)
    assert isinstance(config, FlussoConfig)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        config.source.slot = "other"  # type: ignore[misc]


# --- path and sql fields, transforms, variants (issue #16) --------------------------------------


def test_a_field_that_is_no_column_path_or_sql_says_the_three_forms() -> None:
    raw = example()
    raw["indexes"]["books"]["fields"].update(
        a={"path": "attrs"}, b={"sql": "upper(title)"}, c={"path": "x.y", "sql": "1", "type": "long"}, d=3,
        e={"path": "attrs.color", "type": "strng"},
    )
    assert [(p.path, p.message) for p in problems_of(raw)] == [
        ("indexes.books.fields.a.path", '"attrs" is not a JSON path: write the column, then its keys, '
                                        "e.g. path: attrs.color"),
        ("indexes.books.fields.b.type", 'required key "type" is missing: add it (the OpenSearch type of '
                                        "the expression's values, e.g. type: keyword)"),
        ("indexes.books.fields.c", "a field is a column name, {path: column.key} or {sql: expression, "
                                   "type: keyword}: write one of them (got a mapping)"),
        ("indexes.books.fields.d", "a field is a column name, {path: column.key} or {sql: expression, "
                                   "type: keyword}: write one of them (got 3)"),
    ]
    del raw["indexes"]["books"]["fields"]["a"], raw["indexes"]["books"]["fields"]["b"]
    del raw["indexes"]["books"]["fields"]["c"], raw["indexes"]["books"]["fields"]["d"]
    assert only_problem(raw) == Problem(
        "indexes.books.fields.e.type", '"strng" is not an OpenSearch field type (did you mean "string"? '
        "OpenSearch has no such type): use text (full-text search) or keyword (exact values)"
    )


def test_transforms_name_the_nodes_fields() -> None:
    raw = example()
    raw["indexes"]["books"]["transform"] = {
        "replace": {"isbm": {"-": ""}, "title": {"regex": {"x": 1}}},
        "mapping": {"title": {"values": {"a": "b"}}},
        "concat": [{"fields": ["title", "nope"], "destination": "isbn"}, {"fields": [], "destination": "z"}],
        "move": {"title": "isbn", "ghost": "extra"},
    }
    assert [(p.path, p.message) for p in problems_of(raw)] == [
        ("indexes.books.transform.replace.title.regex.x", "expected the replacement text, got 1: quote it"),
        ("indexes.books.transform.concat[1].fields", "is empty: list the fields to join, e.g. "
                                                     "[first_name, last_name]"),
    ]
    raw["indexes"]["books"]["transform"]["replace"]["title"] = {"regex": {"x": "y"}}
    raw["indexes"]["books"]["transform"]["concat"].pop()
    problems = [(p.path, p.message) for p in problems_of(raw)]
    assert problems[0] == ("indexes.books.transform.replace.isbm", '"isbm" is not a field here (did you mean '
                           '"isbn"?): replace one of the fields listed in fields (title, isbn, published)')
    assert [p for p, _ in problems[1:]] == [
        "indexes.books.transform.concat[0].fields[1]", "indexes.books.transform.concat[0].destination",
        "indexes.books.transform.move.title", "indexes.books.transform.move.ghost",
    ]


def test_variants_fit_their_relation_types() -> None:
    raw = example()
    rels = raw["indexes"]["books"]["relations"]
    rels["publisher"]["variant"] = "scalar"
    rels["reviews"].update(variant="flatten", prefix="r_")
    rels["authors"].update(variant="scalar", fields={"a": "name", "b": "id"})
    problems = [(p.path, p.message) for p in problems_of(raw)]
    assert problems == [
        ("indexes.books.relations.publisher.variant", "many_to_one gives one object, not a list: use "
         "variant: flatten (its fields in the parent), or type one_to_many"),
        ("indexes.books.relations.authors.fields", "a scalar relation is a list of one field's values: list "
         "exactly one field (and no relations)"),
        ("indexes.books.relations.reviews.variant", "one_to_many gives a list, which cannot be flattened into "
         "the parent: use variant: scalar (a list of one field's values), or type many_to_one"),
    ]
    raw = example()
    raw["indexes"]["books"]["fields"]["publisher_name"] = "title"
    raw["indexes"]["books"]["relations"]["publisher"]["variant"] = "flatten"
    assert only_problem(raw) == Problem(
        "indexes.books.relations.publisher.prefix",
        'flattening publisher gives a field "publisher_name", which is a field here too: set another prefix',
    )
def test_refresh_wait_for_needs_a_refresh_that_comes() -> None:
    raw = example()
    raw["indexes"]["books"].update(refresh="wait_for", settings={"index": {"refresh_interval": -1}})
    problem = only_problem(raw)
    assert problem.path == "indexes.books.refresh"
    assert "refresh_interval is -1" in problem.message and problem.message.endswith("or refresh: interval")
    raw["indexes"]["books"]["settings"] = {"refresh_interval": "5s"}
    assert parse_config(raw, ENV).indexes["books"].refresh == "wait_for"


def test_the_refresh_mode_does_not_change_the_definition() -> None:
    """Switching an index to `refresh: wait_for` changes when documents are searchable, not what
    they are: it must not reseed the index."""
    from flusso_engine.documents.mapping import definition_hash

    raw = example()
    plain = parse_config(raw, ENV).indexes["books"]
    raw["indexes"]["books"]["refresh"] = "wait_for"
    waiting = parse_config(raw, ENV).indexes["books"]
    assert definition_hash(plain, {}) == definition_hash(waiting, {})
