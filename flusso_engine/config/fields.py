"""A node's fields (a column, a JSON path, a SQL expression) and its `transform` block.

A field's value is decided in the build statement (`documents/sql/values.py`), so each kind here is
a shape the SQL generator can compile: a column by name, a path as its column and keys, an
expression as the operator's own SQL text. The `transform` block follows PGSync's (`rename` is the
field name itself); every name it holds is a field name of the node it is written on, checked by
`transform_problems` once the fields are known.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Discriminator, Field, Tag, field_validator, model_validator

from .base import Loc, Strict, report
from .messages import show, suggest

Scalar = str | int | float | bool | None


def field_name(field: str) -> str:
    if field.startswith("_") or "." in field:
        raise ValueError("a field name may not start with _ or contain a dot: rename it")
    return field


def _column(column: str) -> str:
    if not column.strip():
        raise ValueError("names no column: give the column, e.g. title: title")
    return column


FieldName = Annotated[str, AfterValidator(field_name)]


class PathField(Strict):
    """`{path: attrs.color}`: the key `color` of the json/jsonb column `attrs` (any depth)."""

    path: str
    type: str | None = None

    @field_validator("path")
    @classmethod
    def _segments(cls, v: str) -> str:
        parts = v.split(".")
        if len(parts) < 2 or not all(p.strip() for p in parts):
            raise ValueError(
                f"{show(v)} is not a JSON path: write the column, then its keys, e.g. path: attrs.color"
            )
        return v

    @property
    def column(self) -> str:
        return self.path.split(".")[0]

    @property
    def keys(self) -> list[str]:
        return self.path.split(".")[1:]


class SqlField(Strict):
    """`{sql: "first_name || ' ' || last_name", type: text}`: an expression over the row's columns,
    written by the operator in the config file (never taken from data)."""

    sql: str
    type: str

    @field_validator("sql")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("is empty: write a SQL expression over the row's columns, e.g. upper(title)")
        return v


def _field_kind(v: Any) -> str | None:
    if isinstance(v, str):
        return "field:column"
    if isinstance(v, dict):
        if "path" in v and "sql" in v:
            return None
        if "path" in v:
            return "field:path"
        if "sql" in v:
            return "field:sql"
    if isinstance(v, PathField):
        return "field:path"
    if isinstance(v, SqlField):
        return "field:sql"
    return None


FieldSpec = Annotated[
    Annotated[Annotated[str, AfterValidator(_column)], Tag("field:column")]
    | Annotated[PathField, Tag("field:path")]
    | Annotated[SqlField, Tag("field:sql")],
    Discriminator(
        _field_kind,
        custom_error_type="field_kind",
        custom_error_message=(
            "a field is a column name, {path: column.key} or {sql: expression, type: keyword}: write one of them"
        ),
    ),
]
Fields = dict[FieldName, FieldSpec]


def field_column(spec: str | PathField | SqlField) -> str | None:
    """The one column a field reads (None for an expression: validate checks it live)."""
    if isinstance(spec, str):
        return spec
    return spec.column if isinstance(spec, PathField) else None


def field_type(spec: str | PathField | SqlField) -> str | None:
    return None if isinstance(spec, str) else spec.type


# --- transform ----------------------------------------------------------------------------------


class ConcatRule(Strict):
    """A new field `destination`: the texts of `fields` joined by `delimiter` (nulls skipped)."""

    fields: list[str]
    destination: FieldName
    delimiter: str = ""

    @field_validator("fields")
    @classmethod
    def _some(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("is empty: list the fields to join, e.g. [first_name, last_name]")
        return v


class MappingRule(Strict):
    """A value map by the value's text (`true`/`false` for booleans); `default` for the rest."""

    values: dict[str, Scalar]
    default: Scalar = None

    @field_validator("values", mode="before")
    @classmethod
    def _text_keys(cls, v: Any) -> Any:
        """YAML reads `1: one` and `true: yes` with non-text keys: they are matched by their text."""
        if isinstance(v, dict):
            return {(str(k).lower() if isinstance(k, bool) else str(k)): x for k, x in v.items()}
        return v


def _replace_rules(v: dict[str, Any]) -> dict[str, Any]:
    """`{old: new, ...}` substrings, and `regex: {pattern: replacement}`: all text."""
    problems: list[tuple[Loc, str]] = []
    if not v:
        problems.append(((), 'is empty: map what to replace to its replacement, e.g. {"-": ""}'))
    for old, new in v.items():
        pairs = new.items() if old == "regex" and isinstance(new, dict) else [(old, new)]
        for a, b in pairs:
            if not isinstance(b, str):
                where = (old,) if old != "regex" else (old, a)
                problems.append((where, f"expected the replacement text, got {show(b)}: quote it"))
            elif not a:
                problems.append(((old,), "replaces the empty text: name what to replace"))
    report(problems)
    return v


ReplaceRules = Annotated[dict[str, Any], AfterValidator(_replace_rules)]


class TransformConfig(Strict):
    """PGSync's `transform` block, applied in this order: replace, mapping, concat, move."""

    replace: dict[str, ReplaceRules] = Field(default_factory=dict)
    mapping: dict[str, MappingRule] = Field(default_factory=dict)
    concat: list[ConcatRule] = Field(default_factory=list)
    move: dict[str, str] = Field(default_factory=dict)

    @field_validator("concat", mode="before")
    @classmethod
    def _one_rule(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    @field_validator("move")
    @classmethod
    def _destinations(cls, v: dict[str, str]) -> dict[str, str]:
        report(
            ((field,), f"{show(dest)} is not a sub-object's name: write e.g. attributes (or a.b, deeper)")
            for field, dest in v.items()
            if not all(p.strip() and not p.startswith("_") for p in dest.split("."))
        )
        return v

    @model_validator(mode="after")
    def _once(self) -> TransformConfig:
        seen: dict[str, int] = {}
        problems: list[tuple[Loc, str]] = []
        for i, rule in enumerate(self.concat):
            if rule.destination in seen:
                problems.append((("concat", i, "destination"), f'"{rule.destination}" is the destination of '
                                 f"concat[{seen[rule.destination]}] too: give each its own"))
            seen.setdefault(rule.destination, i)
        report(problems)
        return self

    def destinations(self) -> list[str]:
        return [rule.destination for rule in self.concat]


def transform_problems(
    fields: dict[str, Any], relations: dict[str, Any], transform: TransformConfig | None
) -> list[tuple[Loc, str]]:
    """A transform's names against the node's fields and relations."""
    if transform is None:
        return []
    problems: list[tuple[Loc, str]] = []
    base: Loc = ("transform",)

    def unknown(loc: Loc, name: str, kind: str, choices: list[str]) -> None:
        problems.append(((*base, *loc), f'"{name}" is not a field here{suggest(name, choices)}: {kind} '
                         f"one of the fields listed in fields ({', '.join(choices) or 'none'})"))

    for part in ("replace", "mapping"):
        for name in getattr(transform, part):
            if name not in fields:
                unknown((part, name), name, part, list(fields))
    for i, rule in enumerate(transform.concat):
        for j, name in enumerate(rule.fields):
            if name not in fields:
                unknown(("concat", i, "fields", j), name, "join", list(fields))
        if rule.destination in fields or rule.destination in relations:
            problems.append(((*base, "concat", i, "destination"), (
                f'"{rule.destination}" is already a field or relation here: name a new field'
            )))
    movable = [*fields, *transform.destinations()]
    taken = {*movable, *relations} - set(transform.move)
    for name, dest in transform.move.items():
        if name not in movable:
            unknown(("move", name), name, "move", movable)
        elif dest.split(".")[0] in taken:
            problems.append(((*base, "move", name), (
                f'"{dest.split(".")[0]}" is a field or relation here: move into a sub-object of another name'
            )))
    objects = {".".join(d.split(".")[: i + 1]) for d in transform.move.values() for i in range(d.count(".") + 1)}
    for name, dest in transform.move.items():
        if f"{dest}.{name}" in objects:
            problems.append(((*base, "move", name), (
                f'{dest}.{name} is a sub-object another move makes: move "{name}" elsewhere'
            )))
    return problems
