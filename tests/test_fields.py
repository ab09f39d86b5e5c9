"""Path and sql fields, transforms and relation variants (issue #16 items 1-3), built from real rows."""

from __future__ import annotations

import copy
from typing import Any

import psycopg
import pytest

from flusso_engine.capture.wal.schema import expectations
from flusso_engine.catalog import read_catalog
from flusso_engine.config import FlussoConfig, parse_config
from flusso_engine.documents.mapping import index_mapping
from flusso_engine.documents.sql import SqlDocumentBuilder
from flusso_engine.documents.tree import named_columns
from flusso_engine.plan import index_plan, make_plan

from .e2e import unfingerprinted

SCHEMA = """
CREATE TABLE team (id int PRIMARY KEY, name text, city text, country_id int);
CREATE TABLE country (id int PRIMARY KEY, name text);
CREATE TABLE person (
  id int PRIMARY KEY, first_name text, last_name text, attrs jsonb, meta json, status text,
  code text, active boolean, team_id int REFERENCES team
);
CREATE TABLE tag (id int PRIMARY KEY, person_id int REFERENCES person, name text);
CREATE TABLE skill (id int PRIMARY KEY, name text);
CREATE TABLE person_skill (person_id int, skill_id int, PRIMARY KEY (person_id, skill_id));
INSERT INTO country VALUES (1, 'Italy');
INSERT INTO team VALUES (1, 'Rossi', 'Milano', 1), (2, 'Verdi', NULL, NULL);
INSERT INTO person VALUES
  (1, 'Ada', 'Lovelace', '{"color": "red", "dims": {"w": 3.5}, "sizes": [7, 9]}', '{"k": "v"}',
   'a', 'X-12-3', true, 1),
  (2, 'Alan', NULL, '{"color": null}', NULL, 'q', NULL, false, 2),
  (3, 'Grace', 'Hopper', NULL, NULL, NULL, 'X-9', NULL, NULL);
INSERT INTO tag VALUES (1, 1, 'math'), (2, 1, 'analytical engine'), (3, 2, 'ai');
INSERT INTO skill VALUES (1, 'cobol'), (2, 'poetry');
INSERT INTO person_skill VALUES (1, 2), (1, 1), (3, 1);
"""

INDEX: dict[str, Any] = {
    "table": "person",
    "key": ["id"],
    "fields": {
        "first": "first_name",
        "last": "last_name",
        "color": {"path": "attrs.color"},
        "width": {"path": "attrs.dims.w", "type": "double"},
        "second_size": {"path": "attrs.sizes.1", "type": "long"},
        "k": {"path": "meta.k"},
        "full_name": {"sql": "first_name || ' ' || coalesce(last_name, '?')", "type": "text"},
        "status": "status",
        "code": "code",
        "active": "active",
    },
    "transform": {
        "replace": {"code": {"-": ".", "regex": {"^X\\.": "x:"}}},
        "mapping": {
            "status": {"values": {"a": "available", "s": "sold"}, "default": "unknown"},
            "active": {"values": {"true": 1, "false": 0}},
        },
        "concat": [{"fields": ["first", "last", "code"], "destination": "label", "delimiter": " / "}],
        "move": {"color": "attributes", "width": "attributes.size"},
    },
    "mapping": {"label": {"type": "keyword"}},
    "relations": {
        "tags": {
            "table": "tag", "type": "one_to_many", "on": {"id": "person_id"}, "variant": "scalar",
            "fields": {"name": "name"}, "order_by": ["name"],
            "transform": {"replace": {"name": {" ": "_"}}},
        },
        "skills": {
            "table": "skill", "type": "many_to_many", "variant": "scalar",
            "through": {"table": "person_skill", "parent": {"id": "person_id"}, "child": {"skill_id": "id"}},
            "fields": {"skill": {"sql": "upper(name)", "type": "keyword"}}, "order_by": ["name"],
        },
        "team": {
            "table": "team", "type": "many_to_one", "on": {"team_id": "id"}, "variant": "flatten",
            "fields": {"name": "name", "city": "city"},
            "relations": {
                "country": {"table": "country", "type": "many_to_one", "on": {"country_id": "id"},
                            "variant": "flatten", "prefix": "in_", "fields": {"name": "name"}},
            },
        },
    },
}


def config_for(dsn: str, index: dict[str, Any]) -> FlussoConfig:
    return parse_config(
        {"source": {"dsn": dsn, "slot": "s", "publication": "p"}, "sink": {"type": "stdout"},
         "indexes": {"people": index}},
        env={},
    )


@pytest.fixture
def people(fresh_db: str):
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(SCHEMA)
        config = config_for(fresh_db, INDEX)
        catalog = read_catalog(conn, config.tables())
    with SqlDocumentBuilder(config, catalog, fresh_db) as builder:
        yield fresh_db, config, catalog, builder


def test_paths_expressions_transforms_and_variants_are_built_in_sql(people):
    _, _, _, builder = people
    docs = unfingerprinted(builder.build("people", ["1", "2", "3"]).docs)
    assert docs["1"] == {
        "first": "Ada", "last": "Lovelace", "second_size": 9, "k": "v", "full_name": "Ada Lovelace",
        "status": "available", "code": "x:12.3", "active": 1, "label": "Ada / Lovelace / x:12.3",
        "attributes": {"color": "red", "size": {"width": 3.5}},
        "tags": ["analytical_engine", "math"], "skills": ["COBOL", "POETRY"],
        "team_name": "Rossi", "team_city": "Milano", "team_in_name": "Italy",
    }
    assert docs["2"] == {
        "first": "Alan", "last": None, "second_size": None, "k": None, "full_name": "Alan ?",
        "status": "unknown", "code": None, "active": 0, "label": "Alan",
        "attributes": {"color": None, "size": {"width": None}},
        "tags": ["ai"], "skills": [],
        "team_name": "Verdi", "team_city": None, "team_in_name": None,
    }
    assert docs["3"]["status"] is None and docs["3"]["active"] is None  # null stays null
    assert docs["3"]["team_name"] is None and docs["3"]["tags"] == [] and docs["3"]["skills"] == ["COBOL"]
    assert docs["3"]["label"] == "Grace / Hopper / x:9"


def test_the_mapping_follows_the_shape(people):
    _, config, catalog, _ = people
    props = index_mapping(config.indexes["people"], catalog)["mappings"]["properties"]
    assert props["attributes"] == {"type": "object", "properties": {
        "color": {"type": "keyword", "ignore_above": 256},
        "size": {"type": "object", "properties": {"width": {"type": "double"}}},
    }}
    assert props["second_size"] == {"type": "long"} and props["full_name"] == {"type": "text"}
    assert props["label"] == {"type": "keyword"}  # given in mapping
    assert props["code"]["type"] == "text"  # replace gives text
    assert props["status"]["type"] == "text" and props["active"] == {"type": "long"}  # from the values
    assert props["tags"]["type"] == "text" and props["skills"] == {"type": "keyword"}
    assert props["team_name"]["type"] == "text" and props["team_in_name"]["type"] == "text"
    assert "team" not in props and "color" not in props and "width" not in props


def test_queries_stay_constant_whatever_the_batch_size(people):
    dsn, _, _, builder = people
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO person (id, first_name, attrs, team_id) "
                     "SELECT i, 'p' || i, jsonb_build_object('color', 'c' || i), 1 + i % 2 "
                     "FROM generate_series(10, 400) i")
        conn.execute("INSERT INTO tag SELECT i, i, 't' || i FROM generate_series(10, 400) i")
    small = builder.build("people", ["1"])
    large = builder.build("people", [str(i) for i in range(10, 401)])
    assert small.queries == large.queries == 2
    assert unfingerprinted(large.docs)["77"]["attributes"] == {"color": "c77", "size": {"width": None}}


def test_the_definition_changes_with_paths_expressions_transforms_and_variants(people):
    dsn, config, catalog, _ = people

    def digest(change) -> str:
        index = copy.deepcopy(INDEX)
        change(index)
        return index_plan("people", config_for(dsn, index).indexes["people"], catalog).definition_hash

    same = digest(lambda i: None)
    assert same == index_plan("people", config.indexes["people"], catalog).definition_hash
    changes = [
        lambda i: i["fields"].update(color={"path": "attrs.colour"}),
        lambda i: i["fields"].update(full_name={"sql": "first_name", "type": "text"}),
        lambda i: i["transform"]["replace"]["code"].update({"-": "_"}),
        lambda i: i["transform"]["mapping"]["status"].update(default="?"),
        lambda i: i["transform"]["concat"][0].update(delimiter=", "),
        lambda i: i["transform"]["move"].update(color="other"),
        lambda i: i["relations"]["team"].update(prefix="t_"),
        lambda i: i["relations"]["tags"].update(variant="object"),
        lambda i: i.update(where="id > 1"),
        lambda i: i["relations"]["tags"].update(where="name <> ''"),
    ]
    digests = {digest(c) for c in changes}
    assert len(digests) == len(changes) and same not in digests


def test_where_filters_roots_and_children_over_their_own_rows(people):
    dsn, _, _, _ = people
    index = copy.deepcopy(INDEX)
    index["where"] = "status IS DISTINCT FROM 'q' AND id < 100"
    index["relations"]["tags"]["where"] = "name <> 'math'"
    index["relations"]["skills"]["where"] = "name LIKE 'c%'"  # a % passes psycopg's placeholders
    index["relations"]["team"]["where"] = "city IS NOT NULL"
    index["relations"]["skills"]["where"] += " AND id = 1"  # the skill's id (the parent has one too)
    config = config_for(dsn, index)
    with psycopg.connect(dsn, autocommit=True) as conn:
        catalog = read_catalog(conn, config.tables())
    with SqlDocumentBuilder(config, catalog, dsn) as builder:
        docs = unfingerprinted(builder.build("people", ["1", "2", "3"]).docs)
        assert docs["2"] is None  # its root row is filtered out: a delete
        assert docs["1"]["tags"] == ["analytical_engine"] and docs["1"]["skills"] == ["COBOL"]
        assert docs["1"]["team_name"] == "Rossi"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE team SET city = NULL WHERE id = 1")
            conn.execute("UPDATE person SET status = 'a' WHERE id = 2")
        again = unfingerprinted(builder.build("people", ["1", "2"]).docs)
        assert again["1"]["team_name"] is None and again["1"]["team_in_name"] is None
        assert again["2"]["status"] == "available"
        assert builder.key_page("people", None, 10) == ["1", "2", "3"]
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE person SET status = 'q' WHERE id = 3")
        assert builder.key_page("people", None, 10) == ["1", "2"]
        assert sorted(builder.sample_ids("people", 10)) == ["1", "2"]
        assert set(builder.fingerprints("people", ["1", "2", "3"])[0]) == {"1", "2"}
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO person (id, first_name, status) SELECT i, 'p' || i, "
                         "CASE WHEN i % 2 = 0 THEN 'q' END FROM generate_series(10, 99) i")
        small, large = builder.build("people", ["1"]), builder.build("people", [str(i) for i in range(10, 100)])
        assert small.queries == large.queries == 2
        assert sum(d is not None for d in large.docs.values()) == 45


def test_capture_watches_the_columns_expressions_name(people):
    _, config, catalog, _ = people
    assert named_columns(
        ["upper(first_name) || 'last_name' || \"code\"::text || p.status", "NOT active AND id::text <> ''"],
        "public.person", catalog,
    ) == ("first_name", "code", "active", "id")  # not in a literal, not after a dot, not a function
    index = copy.deepcopy(INDEX)
    index["where"] = "coalesce(status, '') <> 'gone'"
    raw = config.model_dump(mode="json", exclude_defaults=True)
    raw["source"]["dsn"] = "postgresql://x"
    raw["indexes"]["people"] = index
    plan = make_plan(parse_config(raw, env={}), catalog)
    person = expectations(plan, catalog)["public.person"]
    assert {"first_name", "last_name", "status", "attrs", "meta"} <= set(person.columns)
    assert set(expectations(plan, catalog)["public.skill"].columns) == {"id", "name"}
