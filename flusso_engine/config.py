"""The `flusso.yaml` model: pydantic types, `${VAR}` expansion, and every problem at once."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from .error import ConfigError, Problem

RELATION_TYPES = ("many_to_one", "one_to_one", "one_to_many", "many_to_many")
OBJECT_RELATIONS = ("many_to_one", "one_to_one")

_SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")
_INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def split_table(name: str) -> tuple[str, str]:
    """`public.book` -> (`public`, `book`); an unqualified name is in `public`."""
    schema, _, table = name.rpartition(".")
    return (schema or "public", table)


def qualify(name: str) -> str:
    return ".".join(split_table(name))


class SourceConfig(_Strict):
    dsn: SecretStr
    capture: Literal["wal"] = "wal"
    slot: str
    publication: str
    slot_wait_s: float = Field(60.0, ge=0)

    @field_validator("slot", "publication")
    @classmethod
    def _slot_name(cls, v: str) -> str:
        if not _SLOT_NAME.match(v):
            raise ValueError(f'"{v}" is not a valid name (lower-case letters, digits and _ only, at most 63)')
        return v


class SinkConfig(_Strict):
    type: Literal["opensearch", "stdout"]
    hosts: list[str] = Field(default_factory=list)
    username: str | None = None
    password: SecretStr | None = None
    verify_certs: bool = True
    ca_certs: str | None = None
    timeout_s: float = Field(30.0, gt=0)
    max_bulk_bytes: int = Field(20 * 1024 * 1024, gt=0)

    @field_validator("username", "ca_certs", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if v == "" else v

    @field_validator("password", mode="before")
    @classmethod
    def _empty_password_is_none(cls, v: Any) -> Any:
        return None if v == "" else v


class BatchConfig(_Strict):
    max_changes: int = Field(1000, gt=0)
    max_delay_ms: int = Field(200, ge=0)


class QueueConfig(_Strict):
    type: Literal["channel"] = "channel"
    capacity: int = Field(20000, gt=0)


class FlushErrorConfig(_Strict):
    retries: int = Field(5, ge=0)
    backoff_ms: int = Field(200, ge=0)
    max_backoff_ms: int = Field(10000, ge=0)


class FailuresConfig(_Strict):
    item_rejection: Literal["fail", "skip", "dead_letter"] = "dead_letter"
    flush_error: FlushErrorConfig = Field(default_factory=FlushErrorConfig)


class ThroughConfig(_Strict):
    """The join table of a many_to_many: `parent` maps parent column: join column, `child` join column:
    child column."""

    table: str
    parent: dict[str, str]
    child: dict[str, str]


class RelationConfig(_Strict):
    table: str
    type: Literal["many_to_one", "one_to_one", "one_to_many", "many_to_many"]
    on: dict[str, str] | None = None
    through: ThroughConfig | None = None
    key: list[str] | None = None
    fields: dict[str, str]
    mapping: dict[str, dict[str, Any]] = Field(default_factory=dict)
    order_by: list[str] = Field(default_factory=list)
    nested: bool = False
    relations: dict[str, RelationConfig] = Field(default_factory=dict)

    @property
    def is_array(self) -> bool:
        return self.type not in OBJECT_RELATIONS


class IndexConfig(_Strict):
    table: str
    key: list[str]
    fields: dict[str, str]
    mapping: dict[str, dict[str, Any]] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    relations: dict[str, RelationConfig] = Field(default_factory=dict)


class FlussoConfig(_Strict):
    source: SourceConfig
    sink: SinkConfig
    batch: BatchConfig = Field(default_factory=BatchConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    failures: FailuresConfig = Field(default_factory=FailuresConfig)
    indexes: dict[str, IndexConfig]

    def tables(self) -> list[str]:
        """Every table on every index's relation tree, qualified, in first-seen order."""
        seen: dict[str, None] = {}
        for index in self.indexes.values():
            seen[qualify(index.table)] = None
            for _, rel in walk_relations(index.relations):
                if rel.through is not None:
                    seen[qualify(rel.through.table)] = None
                seen[qualify(rel.table)] = None
        return list(seen)


def walk_relations(
    relations: Mapping[str, RelationConfig], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], RelationConfig]]:
    """Every relation below a node, depth first, with its path of field names."""
    for name, rel in relations.items():
        path = (*prefix, name)
        yield path, rel
        yield from walk_relations(rel.relations, path)


# --- loading -----------------------------------------------------------------------------------


def expand_env(value: Any, env: Mapping[str, str], path: str, problems: list[Problem]) -> Any:
    """Expand `${VAR}` and `${VAR:-default}` in every string; an unset `${VAR}` is a problem."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(
                Problem(path, f"environment variable {name} is not set (export it, or write ${{{name}:-default}})")
            )
            return ""

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, env, _join(path, str(k)), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = _join(out, str(part))
    return out


_HINTS = {
    "missing": "required: add it",
    "extra_forbidden": "unknown key: remove it or check its spelling",
}


def _problems_from(err: ValidationError) -> list[Problem]:
    out = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        kind = e["type"]
        if kind in _HINTS:
            msg = _HINTS[kind]
        elif kind == "literal_error":
            msg = f"{e['input']!r} is not one of {e['ctx']['expected']}"
        elif kind == "value_error":
            msg = str(e["ctx"]["error"])
        else:
            msg = f"{e['msg'].lower()} (got {e['input']!r})" if "input" in e else e["msg"].lower()
        out.append(Problem(_loc(loc), msg))
    return out


def _check_index(name: str, index: IndexConfig) -> list[Problem]:
    base = f"indexes.{name}"
    problems = []
    if not _INDEX_NAME.match(name):
        problems.append(
            Problem(base, f'"{name}" is not a valid OpenSearch index name (lower-case letters, digits, _ and -)')
        )
    if not index.key:
        problems.append(Problem(f"{base}.key", "list at least one key column"))
    if not index.fields and not index.relations:
        problems.append(Problem(f"{base}.fields", "list at least one field"))
    problems += _check_fields(base, index.fields, index.mapping, set(index.relations))
    for path, rel in walk_relations(index.relations):
        rbase = base + "".join(f".relations.{p}" for p in path)
        problems += _check_relation(rbase, rel)
    return problems


def _check_fields(
    base: str, fields: Mapping[str, str], mapping: Mapping[str, Any], relation_names: set[str]
) -> list[Problem]:
    problems = []
    for field in fields:
        if field in relation_names:
            problems.append(Problem(f"{base}.fields.{field}", "a field and a relation share this name: rename one"))
        if field.startswith("_") or "." in field:
            problems.append(
                Problem(f"{base}.fields.{field}", "field names may not start with _ or contain a dot")
            )
    for field in mapping:
        if field not in fields:
            problems.append(
                Problem(
                    f"{base}.mapping.{field}",
                    f'"{field}" is not a field here (fields: {", ".join(fields) or "none"}): '
                    "map only configured fields",
                )
            )
    return problems


def _check_relation(base: str, rel: RelationConfig) -> list[Problem]:
    problems = []
    if rel.type == "many_to_many":
        if rel.through is None:
            problems.append(Problem(f"{base}.through", "a many_to_many relation needs `through` (its join table)"))
        if rel.on is not None:
            problems.append(Problem(f"{base}.on", "a many_to_many relation uses `through`, not `on`: remove `on`"))
        if rel.through is not None:
            if not rel.through.parent:
                problems.append(Problem(f"{base}.through.parent", "map parent column: join-table column"))
            if not rel.through.child:
                problems.append(Problem(f"{base}.through.child", "map join-table column: child column"))
    else:
        if rel.on is None or not rel.on:
            problems.append(Problem(f"{base}.on", "add `on: {parent column: child column}`"))
        if rel.through is not None:
            problems.append(
                Problem(f"{base}.through", f"only many_to_many uses `through` ({rel.type} uses `on`): remove it")
            )
    if rel.nested and not rel.is_array:
        problems.append(Problem(f"{base}.nested", f"only array relations can be nested ({rel.type} gives an object)"))
    if rel.order_by and not rel.is_array:
        problems.append(Problem(f"{base}.order_by", f"only array relations are ordered ({rel.type} gives an object)"))
    if not rel.fields and not rel.relations:
        problems.append(Problem(f"{base}.fields", "list at least one field"))
    problems += _check_fields(base, rel.fields, rel.mapping, set(rel.relations))
    return problems


def parse_config(
    raw: Any, env: Mapping[str, str] | None = None, source: str = "flusso.yaml"
) -> FlussoConfig:
    """Validate a loaded YAML document; raise `ConfigError` listing every problem."""
    problems: list[Problem] = []
    if not isinstance(raw, dict):
        raise ConfigError([Problem("", "the file must hold a mapping with source, sink and indexes")], source)
    data = expand_env(raw, os.environ if env is None else env, "", problems)
    try:
        config = FlussoConfig.model_validate(data)
    except ValidationError as err:
        problems += _problems_from(err)
        raise ConfigError(problems, source) from None
    if config.sink.type == "opensearch" and not config.sink.hosts:
        problems.append(Problem("sink.hosts", 'the opensearch sink needs hosts, e.g. ["http://127.0.0.1:9200"]'))
    if not config.indexes:
        problems.append(Problem("indexes", "define at least one index"))
    for name, index in config.indexes.items():
        problems += _check_index(name, index)
    if problems:
        raise ConfigError(problems, source)
    return config


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> FlussoConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ConfigError([Problem("", f"cannot read {p}: {err.strerror}")], str(p)) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError([Problem("", f"not valid YAML: {err}")], str(p)) from None
    return parse_config(raw, env, str(p))


def redact_dsn(dsn: str) -> str:
    """A DSN with its password replaced, fit for a log line or a message."""
    dsn = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)(\S+)", r"\1***", dsn)
