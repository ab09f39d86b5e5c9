"""An index's OpenSearch mapping: the config's explicit types, the rest derived from column types.

The index is created with `dynamic: false`, so every field the document carries needs its type
here: a value never makes OpenSearch guess one.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from ..catalog import Catalog, Column, Table
from ..config import IndexConfig
from ..config.fields import PathField, SqlField
from ..sinks.marker import index_meta
from . import shape
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
    """The `properties` of a node: its fields (explicit type, else derived) and its relations, where
    `shape.items` puts them."""
    table = catalog.get(node.table)
    props: dict[str, Any] = {}

    def of(items: list[shape.Item] | tuple[shape.Item, ...], into: dict[str, Any]) -> None:
        for item in items:
            if isinstance(item, shape.Value):
                into[item.name] = _value_type(node, item, table)
            elif isinstance(item, shape.Obj):
                inner: dict[str, Any] = {}
                of(item.items, inner)
                into[item.name] = {"type": "object", "properties": inner}
            elif isinstance(item, shape.Flat):
                into.update({item.prefix + k: v for k, v in properties(item.node, catalog).items()})
            elif item.node.variant == "scalar":
                child_table = catalog.get(item.node.table)
                into[item.name] = _value_type(item.node, shape.scalar_value(item.node), child_table)
            else:
                child = item.node
                kind = "nested" if child.relation is not None and child.relation.nested else "object"
                into[item.name] = {"type": kind, "properties": properties(child, catalog)}

    of(shape.items(node), props)
    return props


def _value_type(node: Node, value: shape.Value, table: Table | None) -> dict[str, Any]:
    """A field's type: `mapping`'s, the field's `type`, the values of its value map, text for what
    replace and concat make, else derived from its column (a JSON path's: keyword)."""
    if value.name in node.mapping:
        return copy.deepcopy(node.mapping[value.name])
    spec = value.spec
    if isinstance(spec, PathField | SqlField) and spec.type is not None:
        return {"type": spec.type}
    if value.mapping is not None:
        return _mapped_type([*value.mapping.values.values(), value.mapping.default])
    if value.replace or value.concat is not None:
        return copy.deepcopy(TEXT)
    if isinstance(spec, str) and table is not None and spec in table.columns:
        return derived_type(table.columns[spec])
    return dict(FALLBACK)  # a path, or a column validation reports missing: never let OpenSearch guess


def _mapped_type(values: list[Any]) -> dict[str, Any]:
    """The type of a value map's results: one JSON kind, or keyword."""
    kinds = {type(v) for v in values if v is not None}
    if kinds == {bool}:
        return {"type": "boolean"}
    if kinds == {int}:
        return {"type": "long"}
    if kinds and kinds <= {int, float}:
        return {"type": "double"}
    if kinds == {str}:
        return copy.deepcopy(TEXT)
    return dict(FALLBACK)


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
    """The body to create the index with: settings (with `index.default_pipeline` for `pipeline`), and
    mappings with `_meta.flusso.definition_hash`, the fingerprint field (`FINGERPRINT`), which
    `_meta.flusso.fingerprint` describes, and `_routing: {required: true}` for `routing`."""
    props = properties(tree or index_tree(index, catalog), catalog)
    settings = dict(index.settings)
    if index.pipeline_name is not None:  # every write goes through it, unless a request names another
        settings["index.default_pipeline"] = index.pipeline_name
    mappings: dict[str, Any] = {
        "dynamic": False,
        "_meta": index_meta(definition_hash(index, props), fingerprint=FINGERPRINT_META),
        "properties": {FINGERPRINT: dict(FINGERPRINT_MAPPING), **props},
    }
    if index.routing is not None:  # a write or delete without routing is refused, never misplaced
        mappings["_routing"] = {"required": True}
    return {"settings": settings, "mappings": mappings}
