"""`indexes:`: each index's root table, its fields and mapping, and the relations below it.

The rules that read one value are validators of that value (a table name, a field name, a column
list, a mapping's type, a relation's `on` against its `type`): each reports on its own, so one bad
relation does not hide the mistakes next to it. The rules that compare a node's fields, mapping
and relations are the node's `after` validator.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from .base import Loc, Strict, one_or_many, report
from .delivery import Pipeline, PipelineConfig, delivery_problems
from .fields import Fields, PathField, SqlField, TransformConfig, transform_problems
from .messages import did_you_mean, show, suggest
from .names import DEAD_LETTER_SUFFIX, OBJECT_RELATIONS, RELATION_TYPES
from .views import Dependencies, dependency_list

# Field types of OpenSearch 2.19 (core and the bundled plugins: k-NN, neural, mapper-*).
OPENSEARCH_FIELD_TYPES = frozenset(
    """
    alias binary boolean byte completion constant_keyword date date_nanos date_range derived double
    double_range flat_object float float_range geo_point geo_shape half_float icu_collation_keyword
    integer integer_range ip ip_range join keyword knn_vector long long_range match_only_text
    murmur3 nested object percolator rank_feature rank_features scaled_float search_as_you_type
    semantic short text token_count unsigned_long wildcard xy_point xy_shape annotated_text
    """.split()
)

# Names people reach for (from PostgreSQL, Elasticsearch 2, Python) and the OpenSearch type they mean.
_TYPE_ALIASES = {
    "string": "text (full-text search) or keyword (exact values)",
    "str": "text (full-text search) or keyword (exact values)",
    "varchar": "text (full-text search) or keyword (exact values)",
    "int": "integer or long",
    "int4": "integer",
    "int8": "long",
    "bigint": "long",
    "smallint": "short",
    "bool": "boolean",
    "datetime": "date",
    "timestamp": "date",
    "timestamptz": "date",
    "json": "object or flat_object",
    "jsonb": "object or flat_object",
    "dict": "object or flat_object",
    "uuid": "keyword",
    "numeric": "double or scaled_float",
    "decimal": "double or scaled_float",
    "number": "long or double",
    "array": "the element's type (every OpenSearch field holds arrays)",
    "list": "the element's type (every OpenSearch field holds arrays)",
}

_INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
# OpenSearch's limit, leaving room for `-deadletter` and for a generation's `__g<N>` (N up to 9 digits)
_INDEX_NAME_MAX = 255 - max(len(DEAD_LETTER_SUFFIX), 12)
_TABLE_NAME = re.compile(r"^[^.\s]+(\.[^.\s]+)?$")


def _index_name(name: str) -> str:
    if not _INDEX_NAME.match(name) or len(name) > _INDEX_NAME_MAX:
        fixed = re.sub(r"[^a-z0-9_\-]", "_", name.lower()).lstrip("_-")[:_INDEX_NAME_MAX] or "documents"
        raise ValueError(
            f'"{name}" is not a valid OpenSearch index name (lower-case letters, digits, _ and -, '
            f'starting with a letter or digit, at most {_INDEX_NAME_MAX}): rename it, e.g. "{fixed}"'
        )
    if re.search(r"__g\d+$", name):
        raise ValueError(
            f'"{name}" ends like one of flusso\'s physical generations (<index>__g<N>, behind the alias '
            f'<index>): rename it, e.g. "{name.rsplit("__g", 1)[0]}_g{name.rsplit("__g", 1)[1]}"'
        )
    return name


def _table_name(table: str) -> str:
    if not _TABLE_NAME.match(table):
        raise ValueError(f'"{table}" is not a table name: write schema.table or table')
    return table


def _field_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A mapping entry's `type` must be one OpenSearch has; the rest is OpenSearch's to judge."""
    if "type" in spec and (problem := _type_problem(spec["type"])):
        report([(("type",), problem)])
    return spec


IndexName = Annotated[str, AfterValidator(_index_name)]
TableName = Annotated[str, AfterValidator(_table_name)]
def _condition(v: str) -> str:
    if not v.strip():
        raise ValueError("is empty: write a SQL condition over the table's columns, e.g. NOT archived")
    return v


Condition = Annotated[str, AfterValidator(_condition)]
FieldMapping = dict[str, Annotated[dict[str, Any], AfterValidator(_field_spec)]]


class ThroughConfig(Strict):
    """The join table of a many_to_many: `parent` maps parent column: join column, `child` join column:
    child column."""

    table: TableName
    parent: dict[str, str]
    child: dict[str, str]

    @field_validator("parent", "child")
    @classmethod
    def _not_empty(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if not v:
            example = "{id: book_id}" if info.field_name == "parent" else "{author_id: id}"
            raise ValueError(f"is empty: map the columns, e.g. {example}")
        return v


class RelationConfig(Strict):
    table: TableName
    type: Literal["many_to_one", "one_to_one", "one_to_many", "many_to_many"]
    on: dict[str, str] | None = Field(None, validate_default=True)
    through: ThroughConfig | None = Field(None, validate_default=True)
    key: list[str] | None = None
    fields: Fields
    mapping: FieldMapping = Field(default_factory=dict)
    order_by: list[str] = Field(default_factory=list)
    nested: bool = False
    variant: Literal["object", "scalar", "flatten"] = "object"
    prefix: str | None = None
    transform: TransformConfig | None = None
    where: Condition | None = None
    depends_on: Dependencies = Field(default_factory=list)  # config/views.py: the table is a view
    relations: dict[str, RelationConfig] = Field(default_factory=dict)

    @field_validator("depends_on", mode="before")
    @classmethod
    def _dependencies(cls, v: Any) -> Any:
        return dependency_list(v)

    @field_validator("key", "order_by", mode="before")
    @classmethod
    def _one_column(cls, v: Any) -> Any:
        return one_or_many(v)

    @field_validator("on")
    @classmethod
    def _on_for_type(cls, v: dict[str, str] | None, info: ValidationInfo) -> dict[str, str] | None:
        """Every type but many_to_many joins with `on` (an invalid `type` is reported on its own)."""
        kind = info.data.get("type")
        if kind == "many_to_many" and v is not None:
            raise ValueError("a many_to_many relation joins through `through`: remove `on`")
        if kind in RELATION_TYPES and kind != "many_to_many" and not v:
            raise ValueError("the relation needs `on`: add on: {parent column: child column}")
        return v

    @field_validator("through")
    @classmethod
    def _through_for_type(cls, v: ThroughConfig | None, info: ValidationInfo) -> ThroughConfig | None:
        """Only many_to_many joins through a table, and it must."""
        kind = info.data.get("type")
        if kind == "many_to_many" and v is None:
            raise ValueError(
                "a many_to_many relation needs `through` (its join table): add e.g. through: "
                "{table: public.book_author, parent: {id: book_id}, child: {author_id: id}}"
            )
        if kind in RELATION_TYPES and kind != "many_to_many" and v is not None:
            raise ValueError(f"only many_to_many joins through a table ({kind} uses `on`): remove it")
        return v

    @field_validator("key")
    @classmethod
    def _key_columns(cls, v: list[str] | None) -> list[str] | None:
        if v == []:
            raise ValueError("is empty: list the child's key columns, or remove key")
        report(_listed_twice(v or []))
        return v

    @field_validator("order_by", "nested")
    @classmethod
    def _one_object_is_not_an_array(cls, v: Any, info: ValidationInfo) -> Any:
        """An object relation is neither ordered nor nested; order_by's repeats are reported with it."""
        kind = info.data.get("type")
        problems: list[tuple[Loc, str]] = []
        if kind in OBJECT_RELATIONS and v:
            problems.append(((), (
                f"{kind} gives one object, not an array: remove {info.field_name} (or use "
                f"{'one_to_many' if kind == 'one_to_one' else 'many_to_many'})"
            )))
        if info.field_name == "order_by":
            problems += _listed_twice(v)
        report(problems)
        return v

    @model_validator(mode="after")
    def _node(self) -> RelationConfig:
        """Fields, mapping and relations against each other: once each of them is valid."""
        report([*_node_problems(self.fields, self.mapping, self.relations, self.transform),
                *_variant_problems(self)])
        return self

    @property
    def is_array(self) -> bool:
        return self.type not in OBJECT_RELATIONS


_PLUGIN = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?$")

class IndexConfig(Strict):
    table: TableName
    key: list[str]
    fields: Fields
    mapping: FieldMapping = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    transform: TransformConfig | None = None
    where: Condition | None = None
    depends_on: Dependencies = Field(default_factory=list)  # config/views.py: the table is a view
    relations: dict[str, RelationConfig] = Field(default_factory=dict)
    plugins: list[str] = Field(default_factory=list)  # documents/plugins.py: module.path:Class or an entry point
    # documents/routed.py: a root column whose value routes each document to its shard (`_routing`)
    routing: str | None = None
    # the index's default ingest pipeline: an existing one's name, or {name, body} that flusso creates
    pipeline: Pipeline | None = None

    @property
    def pipeline_name(self) -> str | None:
        """The name of the index's default ingest pipeline, however it is given."""
        return self.pipeline.name if isinstance(self.pipeline, PipelineConfig) else self.pipeline

    @field_validator("depends_on", mode="before")
    @classmethod
    def _dependencies(cls, v: Any) -> Any:
        return dependency_list(v)

    @field_validator("plugins")
    @classmethod
    def _plugin_names(cls, v: list[str]) -> list[str]:
        for spec in v:
            if not _PLUGIN.match(spec):
                raise ValueError(f'"{spec}" is not a plugin name: write module.path:ClassName (e.g. '
                                 "mypackage.plugins:Redact) or the name of a flusso.plugins entry point")
        return v
    # interval: a flush is acknowledged once OpenSearch has it; its documents are searchable at the
    # index's next refresh. wait_for: each live flush waits for that refresh (bulk `refresh=wait_for`),
    # so what is acknowledged is searchable, at the cost of a flush lasting up to a refresh interval.
    refresh: Literal["interval", "wait_for"] = "interval"

    @field_validator("key", mode="before")
    @classmethod
    def _one_column(cls, v: Any) -> Any:
        return one_or_many(v)

    @field_validator("key")
    @classmethod
    def _key_columns(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("is empty: list the root table's key columns, e.g. [id]")
        report(_listed_twice(v))
        return v

    @model_validator(mode="after")
    def _node(self) -> IndexConfig:
        """Fields, mapping and relations against each other: once each of them is valid."""
        report(_node_problems(self.fields, self.mapping, self.relations, self.transform))
        return self

    @model_validator(mode="after")
    def _routing_and_pipeline(self) -> IndexConfig:
        report(delivery_problems(self.routing, self.pipeline, self.settings, bool(self.depends_on)))
        return self

    @model_validator(mode="after")
    def _refresh_that_comes(self) -> IndexConfig:
        """A `wait_for` flush waits for the next refresh: with refresh off it would hang."""
        nested = self.settings.get("index")
        interval = next((v for v in (self.settings.get("refresh_interval"), self.settings.get("index.refresh_interval"),
                                     nested.get("refresh_interval") if isinstance(nested, dict) else None)
                         if v is not None), None)
        if self.refresh == "wait_for" and str(interval).strip() == "-1":
            report([(("refresh",), "is wait_for, but settings.refresh_interval is -1, so the refresh a flush waits "
                                   "for never comes: set refresh_interval (e.g. 1s) or refresh: interval")])
        return self


def _listed_twice(columns: list[str]) -> list[tuple[Loc, str]]:
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    return [((), f'"{c}" is listed twice: list it once') for c in repeated]


def _node_problems(
    fields: dict[str, Any],
    mapping: dict[str, Any],
    relations: dict[str, RelationConfig],
    transform: TransformConfig | None = None,
) -> list[tuple[Loc, str]]:
    """An index's or a relation's fields, mapping and transform, against each other and its relations."""
    problems: list[tuple[Loc, str]] = []
    if not fields and not relations:
        problems.append((("fields",), "no field listed: add at least one, e.g. {name: name}"))
    for field, spec in fields.items():
        if field in relations:
            problems.append((("fields", field), "a field and a relation share this name: rename one of them"))
        if isinstance(spec, PathField | SqlField) and spec.type is not None:
            if (problem := _type_problem(spec.type)) is not None:
                problems.append((("fields", field, "type"), problem))
            if field in mapping:
                problems.append((("fields", field, "type"), (
                    f'"{field}" is typed twice, here and in mapping: keep one (mapping takes a full '
                    "mapping, e.g. {type: text, analyzer: english})"
                )))
    problems += transform_problems(fields, relations, transform)
    flattened = _flattened_names(relations)
    for name, rel in flattened.items():
        if name in fields or (transform is not None and name in transform.destinations()):
            problems.append((("relations", rel, "prefix"), (
                f'flattening {rel} gives a field "{name}", which is a field here too: set another prefix'
            )))
    mapped = [*fields, *(transform.destinations() if transform is not None else [])]
    for field in mapping:
        if field in relations:
            problems.append((("mapping", field), (
                f'"{field}" is a relation: map its fields in relations.{field}.mapping '
                "(and set nested: true on it for the nested type)"
            )))
        elif field not in mapped:
            problems.append((("mapping", field), (
                f'"{field}" is not a field here{suggest(field, mapped)}: '
                f"map only the fields listed in fields ({', '.join(mapped) or 'none'})"
            )))
    return problems


def output_names(fields: dict[str, Any], relations: dict[str, RelationConfig],
                 transform: TransformConfig | None) -> list[str]:
    """The top-level names a node's document (or a flattened relation's share of its parent) has."""
    moved = set(transform.move) if transform is not None else set()
    names = [f for f in [*fields, *(transform.destinations() if transform else [])] if f not in moved]
    if transform is not None:
        names += list(dict.fromkeys(d.split(".")[0] for d in transform.move.values()))
    names += [n for n, r in relations.items() if r.variant != "flatten"]
    names += list(_flattened_names(relations))
    return names


def _flattened_names(relations: dict[str, RelationConfig]) -> dict[str, str]:
    """Each name a flattened relation puts in its parent, with the relation's name."""
    out: dict[str, str] = {}
    for name, rel in relations.items():
        if rel.variant == "flatten":
            prefix = rel.prefix if rel.prefix is not None else f"{name}_"
            for field in output_names(rel.fields, rel.relations, rel.transform):
                out.setdefault(prefix + field, name)
    return out


def _variant_problems(rel: RelationConfig) -> list[tuple[Loc, str]]:
    """`variant: scalar` is a list of one field's values; `flatten` is one object's fields in its parent."""
    problems: list[tuple[Loc, str]] = []
    if rel.variant == "scalar":
        if rel.type in OBJECT_RELATIONS:
            problems.append((("variant",), (
                f"{rel.type} gives one object, not a list: use variant: flatten (its fields in the "
                "parent), or type one_to_many"
            )))
        elif len(rel.fields) != 1 or rel.relations:
            problems.append((("fields",), (
                "a scalar relation is a list of one field's values: list exactly one field (and no relations)"
            )))
        if rel.transform is not None and (rel.transform.concat or rel.transform.move):
            problems.append((("transform",), "a scalar relation's one value takes replace and mapping only"))
    if rel.variant == "flatten" and rel.type not in OBJECT_RELATIONS:
        problems.append((("variant",), (
            f"{rel.type} gives a list, which cannot be flattened into the parent: use variant: scalar "
            "(a list of one field's values), or type many_to_one"
        )))
    if rel.prefix is not None and rel.variant != "flatten":
        problems.append((("prefix",), "only a flattened relation has a prefix: remove it, or set variant: flatten"))
    if rel.nested and rel.variant != "object":
        problems.append((("nested",), f"a {rel.variant} relation is not an object: remove nested"))
    return problems


def _type_problem(kind: Any) -> str | None:
    """What is wrong with a mapping's `type`, or None when OpenSearch has it."""
    if not isinstance(kind, str):
        return f"expected a type name, got {show(kind)}: write e.g. type: keyword"
    if kind in OPENSEARCH_FIELD_TYPES:
        return None
    if kind.lower() in _TYPE_ALIASES:
        return f'"{kind}" is not an OpenSearch field type: use {_TYPE_ALIASES[kind.lower()]}'
    best = did_you_mean(kind, [*OPENSEARCH_FIELD_TYPES, *_TYPE_ALIASES])
    if best in _TYPE_ALIASES:
        hint = f'did you mean "{best}"? OpenSearch has no such type'
        return f'"{kind}" is not an OpenSearch field type ({hint}): use {_TYPE_ALIASES[best]}'
    if best:
        return f'"{kind}" is not an OpenSearch field type (did you mean "{best}"?): use that'
    return (
        f'"{kind}" is not an OpenSearch field type: use e.g. text, keyword, long, double, boolean, date, '
        "object or nested (or leave the type out to derive it from the column)"
    )
