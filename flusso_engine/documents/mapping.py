"""An index's OpenSearch mapping: the config's explicit types, the rest derived from column types.

The index is created with `dynamic: false`, so every field the document carries needs its type
here: a value never makes OpenSearch guess one.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from ..catalog import Catalog, Column
from ..config import IndexConfig
from ..sinks.marker import index_meta
from .tree import Node, index_tree

TEXT = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
# json/jsonb: kept in _source, not indexed. Any shape is accepted (an object, a scalar, an array of
# mixed values: rows rarely agree on one), and keys never pile up as mapped fields. An `object` with
# no properties would index nothing either (dynamic is false) and would reject a scalar. Users who
# search inside a json column give it a type in `mapping` (e.g. `flat_object`, or properties).
OPAQUE = {"type": "object", "enabled": False}
# Anything unknown (time, interval, inet, bytea, money, enums...) is the string to_jsonb writes.
FALLBACK = {"type": "keyword", "ignore_above": 256}

_BY_TYPE: dict[str, dict[str, Any]] = {
    **dict.fromkeys(("int2", "int4", "int8", "oid"), {"type": "long"}),
    **dict.fromkeys(("float4", "float8", "numeric"), {"type": "double"}),
    "bool": {"type": "boolean"},
    **dict.fromkeys(("date", "timestamp", "timestamptz"), {"type": "date"}),
    **dict.fromkeys(("json", "jsonb"), OPAQUE),
    "uuid": {"type": "keyword"},
    **dict.fromkeys(("text", "varchar", "bpchar", "name", "citext"), TEXT),
}
# For domains and other types not named above, by pg_type.typcategory. Datetime ('D') is left out:
# it holds time and timetz too, which a `date` field cannot parse.
_BY_CATEGORY: dict[str, dict[str, Any]] = {"N": {"type": "double"}, "B": {"type": "boolean"}, "S": TEXT}

_HASH_FORMAT = 2  # bump when flusso changes what a document holds for the same definition (2: fingerprints)

# Every document carries the md5 of its own JSON text (without this field) under this name, written
# by the build statement: `flusso verify` reads it as a doc value and compares it with a fresh
# build's, without shipping documents. Not indexed (nobody searches it), described in `_meta`.
FINGERPRINT = "_flusso_hash"
FINGERPRINT_MAPPING = {"type": "keyword", "index": False, "doc_values": True}
FINGERPRINT_META = {"field": FINGERPRINT, "of": "md5 of the document's JSON text without this field"}


def derived_type(column: Column) -> dict[str, Any]:
    """The field type for a column (for an array, its element's), per DESIGN §3 "Types"."""
    found = _BY_TYPE.get(column.base_type) or _BY_CATEGORY.get(column.category) or FALLBACK
    return copy.deepcopy(found)


def properties(node: Node, catalog: Catalog) -> dict[str, Any]:
    """The `properties` of a node: its fields (explicit type, else derived) and its relations."""
    table = catalog.get(node.table)
    props: dict[str, Any] = {}
    for field, column in node.fields.items():
        if field in node.mapping:
            props[field] = copy.deepcopy(node.mapping[field])
        elif table is not None and column in table.columns:
            props[field] = derived_type(table.columns[column])
        else:  # validation reports the missing column; never let the mapping guess
            props[field] = dict(FALLBACK)
    for child in node.children:
        kind = "nested" if child.relation is not None and child.relation.nested else "object"
        props[child.name] = {"type": kind, "properties": properties(child, catalog)}
    return props


def definition_hash(index: IndexConfig, props: dict[str, Any]) -> str:
    """sha256 over what decides the documents and their mapping: the index's config (table, key,
    fields, relations, mapping, settings) and the resolved properties, which carry the column types.
    Source, sink and slot settings stay out: moving a database must not force a reseed. Defaults
    stay out too, so an option flusso adds later does not reseed every index (a changed default
    that changes documents bumps `_HASH_FORMAT`). `refresh` stays out: it changes when documents
    are searchable, not what they are."""
    config = index.model_dump(mode="json", exclude_defaults=True, exclude={"refresh"})
    definition = {"format": _HASH_FORMAT, "index": config, "properties": props}
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def index_mapping(index: IndexConfig, catalog: Catalog, tree: Node | None = None) -> dict[str, Any]:
    """The body to create the index with: settings, and mappings with `_meta.flusso.definition_hash`
    and the fingerprint field (`FINGERPRINT`), which `_meta.flusso.fingerprint` describes."""
    props = properties(tree or index_tree(index, catalog), catalog)
    return {
        "settings": dict(index.settings),
        "mappings": {
            "dynamic": False,
            "_meta": index_meta(definition_hash(index, props), fingerprint=FINGERPRINT_META),
            "properties": {FINGERPRINT: dict(FINGERPRINT_MAPPING), **props},
        },
    }
