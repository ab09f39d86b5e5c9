"""Index mappings: derived types per column type, explicit overrides, relations, the definition hash."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flusso_engine.catalog import Catalog, read_catalog
from flusso_engine.config import FlussoConfig, load_config, parse_config
from flusso_engine.documents.mapping import FALLBACK, FINGERPRINT, FINGERPRINT_MAPPING, OPAQUE, TEXT, index_mapping
from flusso_engine.documents.routes import needs_full_identity
from flusso_engine.documents.sql import SqlDocumentBuilder

BOOKSTORE = Path(__file__).resolve().parents[1] / "examples" / "bookstore"

TYPES = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
CREATE TABLE everything (
    id bigint PRIMARY KEY, small smallint, normal integer, count positive,
    price numeric(10, 2), ratio real, precise double precision, flag boolean,
    day date, stamp timestamp, stamptz timestamptz, clock time,
    note text, code varchar(20), letter char(1), tags text[], scores integer[],
    doc jsonb, raw json, uid uuid, feeling mood, span interval, blob bytea
);
"""

EXPECTED: dict[str, Any] = {
    "small": {"type": "long"},
    "normal": {"type": "long"},
    "count": {"type": "double"},  # a domain over integer: numeric by its category
    "price": {"type": "double"},
    "ratio": {"type": "double"},
    "precise": {"type": "double"},
    "flag": {"type": "boolean"},
    "day": {"type": "date"},
    "stamp": {"type": "date"},
    "stamptz": {"type": "date"},
    "clock": FALLBACK,
    "note": TEXT,
    "code": TEXT,
    "letter": TEXT,
    "tags": TEXT,
    "scores": {"type": "long"},
    "doc": OPAQUE,
    "raw": OPAQUE,
    "uid": {"type": "keyword"},
    "feeling": FALLBACK,
    "span": FALLBACK,
    "blob": FALLBACK,
}


def _config(index: dict[str, Any]) -> FlussoConfig:
    raw = {
        "source": {"dsn": "postgresql://x", "slot": "s", "publication": "p"},
        "sink": {"type": "stdout"},
        "indexes": {"things": index},
    }
    return parse_config(raw, env={})


@pytest.fixture
def everything(fresh_db: str) -> Catalog:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(TYPES)
        return read_catalog(conn, ["public.everything"])


@pytest.fixture
def bookstore(bookstore_db: str) -> tuple[FlussoConfig, Catalog]:
    config = load_config(BOOKSTORE / "flusso.yaml", env={})
    with psycopg.connect(bookstore_db) as conn:
        return config, read_catalog(conn, config.tables())


def test_fields_get_types_derived_from_their_columns(everything):
    config = _config({"table": "everything", "key": ["id"], "fields": {f: f for f in EXPECTED}})
    mapping = index_mapping(config.indexes["things"], everything)
    assert mapping["mappings"]["properties"] == {FINGERPRINT: FINGERPRINT_MAPPING, **EXPECTED}
    assert mapping["mappings"]["dynamic"] is False


def test_explicit_mapping_wins_over_the_derived_type(everything):
    index = {
        "table": "everything",
        "key": ["id"],
        "fields": {"note": "note", "code": "code"},
        "mapping": {"note": {"type": "search_as_you_type"}},
        "settings": {"number_of_shards": 1},
    }
    mapping = index_mapping(_config(index).indexes["things"], everything)
    assert mapping["mappings"]["properties"] == {FINGERPRINT: FINGERPRINT_MAPPING,
                                                 "note": {"type": "search_as_you_type"}, "code": TEXT}
    assert mapping["settings"] == {"number_of_shards": 1}


def test_relations_are_objects_arrays_and_nested(bookstore):
    config, catalog = bookstore
    props = index_mapping(config.indexes["books"], catalog)["mappings"]["properties"]
    assert props["title"] == {"type": "search_as_you_type"}
    assert props["genres"] == {"type": "keyword"}
    assert props["price"] == {"type": "double"} and props["attributes"] == OPAQUE
    assert props["publisher"] == {
        "type": "object",
        "properties": {"name": TEXT, "country": {"type": "keyword"}},  # the relation's own mapping
    }
    assert props["detail"]["type"] == "object"
    assert props["authors"]["type"] == "object"
    assert props["authors"]["properties"]["name"] == {"type": "search_as_you_type"}
    reviews = props["reviews"]
    assert reviews["type"] == "nested"
    assert reviews["properties"]["reviewer"]["properties"]["uid"] == {"type": "keyword"}
    assert reviews["properties"]["tags"] == {"type": "object", "properties": {"name": {"type": "keyword"}}}


def test_the_definition_hash_is_in_meta_and_stable(bookstore):
    config, catalog = bookstore
    first = index_mapping(config.indexes["books"], catalog)
    again = index_mapping(
        load_config(
            BOOKSTORE / "flusso.yaml", env={"FLUSSO_PG_DSN": "postgresql://elsewhere:5432/other"}
        ).indexes["books"],
        catalog,
    )
    digest = first["mappings"]["_meta"]["flusso"]["definition_hash"]
    assert len(digest) == 64
    assert again["mappings"]["_meta"]["flusso"]["definition_hash"] == digest
    with SqlDocumentBuilder(config, catalog, "postgresql://unused") as builder:
        assert builder.definition_hash("books") == digest
        assert builder.mapping("books") == first


def _changed(raw: dict[str, Any], edit) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    edit(out["indexes"]["things"])
    return out


@pytest.mark.parametrize(
    "edit",
    [
        lambda i: i["fields"].update(code="code"),
        lambda i: i["fields"].update(note="code"),
        lambda i: i.update(mapping={"note": {"type": "keyword"}}),
        lambda i: i.update(settings={"number_of_replicas": 0}),
        lambda i: i["relations"]["same"].update(order_by=["id"]),
        lambda i: i["relations"]["same"]["fields"].update(flag="flag"),
        lambda i: i["relations"]["same"].update(nested=True),
    ],
    ids=["field added", "field's column", "mapping", "settings", "order_by", "relation field", "nested"],
)
def test_the_definition_hash_changes_with_the_definition(everything, edit):
    raw = {
        "source": {"dsn": "postgresql://x", "slot": "s", "publication": "p"},
        "sink": {"type": "stdout"},
        "indexes": {
            "things": {
                "table": "everything",
                "key": ["id"],
                "fields": {"note": "note"},
                "relations": {
                    "same": {
                        "table": "everything",
                        "type": "one_to_many",
                        "on": {"id": "id"},
                        "fields": {"n": "note"},
                    }
                },
            }
        },
    }

    def digest(data: dict[str, Any]) -> str:
        return index_mapping(parse_config(data, env={}).indexes["things"], everything)["mappings"]["_meta"][
            "flusso"
        ]["definition_hash"]

    assert digest(_changed(raw, edit)) != digest(raw)
    other_source = copy.deepcopy(raw)
    other_source["source"].update(dsn="postgresql://elsewhere", slot="other")
    assert digest(other_source) == digest(raw)


def test_the_definition_hash_follows_column_types(fresh_db):
    config = _config({"table": "t", "key": ["id"], "fields": {"v": "v"}})
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v integer)")
        before = index_mapping(config.indexes["things"], read_catalog(conn, ["public.t"]))
        conn.execute("ALTER TABLE t ALTER COLUMN v TYPE text")
        after = index_mapping(config.indexes["things"], read_catalog(conn, ["public.t"]))
    assert before["mappings"]["_meta"] != after["mappings"]["_meta"]


def test_only_tables_joined_outside_their_key_need_full_identity(bookstore):
    config, catalog = bookstore
    assert needs_full_identity(config, catalog) == {"public.review"}
