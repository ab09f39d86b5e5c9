"""The `flusso.yaml` model: pydantic types, `${VAR}` expansion, and every problem at once.

A config is checked in three passes over the same expanded YAML, and all their problems are
reported together (DESIGN §3, §7): environment variables, then the pydantic models (shapes and
types, unknown keys), then the rules pydantic cannot express (a many_to_many needs `through`, a
mapping may only name configured fields, index and slot names, ...). The rule pass reads the raw
data rather than the models, so one bad relation does not hide the mistakes next to it. Every
problem carries its path in the file and ends with what would fix it; nothing echoes a secret.
What only the live database can tell (tables, columns, keys, privileges) is `validate.py`'s job.
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import psycopg
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from .error import ConfigError, Problem
from .redact import redact_dsn

RELATION_TYPES = ("many_to_one", "one_to_one", "one_to_many", "many_to_many")
OBJECT_RELATIONS = ("many_to_one", "one_to_one")
DEAD_LETTER_SUFFIX = "-deadletter"

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

_NAME = re.compile(r"^[a-z0-9_]{1,63}$")  # replication slot and publication names
_INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_INDEX_NAME_MAX = 255 - len(DEAD_LETTER_SUFFIX)  # OpenSearch's limit, leaving room for `-deadletter`
_TABLE_NAME = re.compile(r"^[^.\s]+(\.[^.\s]+)?$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_PATHS = frozenset({"source.dsn", "sink.password"})


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _one_or_many(v: Any) -> Any:
    """`key: id` means `key: [id]`: a single name where a list is expected is not worth an error."""
    return [v] if isinstance(v, str) else v


def split_table(name: str) -> tuple[str, str]:
    """`public.book` -> (`public`, `book`); an unqualified name is in `public`."""
    schema, _, table = name.rpartition(".")
    return (schema or "public", table)


def qualify(name: str) -> str:
    """`book` -> `public.book`: the one spelling used to compare and look up tables."""
    return ".".join(split_table(name))


def relation_path(index: str, path: Iterable[str] = ()) -> str:
    """Where an index or one of its relations sits in the file: `indexes.books.relations.reviews`."""
    return f"indexes.{index}" + "".join(f".relations.{p}" for p in path)


class SourceConfig(_Strict):
    dsn: SecretStr
    capture: Literal["wal"] = "wal"
    slot: str
    publication: str
    slot_wait_s: float = Field(60.0, ge=0)

    @field_validator("slot", "publication")
    @classmethod
    def _name(cls, v: str, info: ValidationInfo) -> str:
        """Names go into SQL and the replication protocol unquoted by some tools: keep them plain."""
        if not _NAME.match(v):
            what = "replication slot" if info.field_name == "slot" else "publication"
            fixed = re.sub(r"[^a-z0-9_]", "_", v.lower())[:63] or "flusso"
            raise ValueError(
                f'"{v}" is not a valid {what} name (lower-case letters, digits and _ only, at most 63): '
                f'use e.g. "{fixed}"'
            )
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
    # flusso's own state (one small document per slot and database: see slotstate.py)
    state_index: str = Field("flusso-state", min_length=1, pattern=r"^[a-z0-9][a-z0-9._-]*$")

    @field_validator("hosts", mode="before")
    @classmethod
    def _one_host(cls, v: Any) -> Any:
        return _one_or_many(v)

    @field_validator("username", "ca_certs", "password", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        """`${OPENSEARCH_USER:-}` expands to "": no credentials, not an empty user name."""
        return None if v == "" else v

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # A host URL may carry `user:password@`: keep it out of repr() and str().
        for name, value in super().__repr_args__():
            yield name, ([redact_dsn(h) for h in value] if name == "hosts" else value)


class BatchConfig(_Strict):
    max_changes: int = Field(1000, gt=0)
    max_delay_ms: int = Field(200, ge=0)
    # bulk requests sent in the background while the next chunk is built; 0 flushes in line
    flushes_in_flight: int = Field(2, ge=0, le=8)


class QueueConfig(_Strict):
    type: Literal["channel"] = "channel"
    capacity: int = Field(20000, gt=0)


class FlushErrorConfig(_Strict):
    retries: int = Field(5, ge=0)
    backoff_ms: int = Field(200, ge=0)
    max_backoff_ms: int = Field(10000, ge=0)


class FailuresConfig(_Strict):
    item_rejection: Literal["fail", "skip", "dead_letter"] = "dead_letter"
    # what stays in the index when a document is rejected: none (its previous version is deleted, so
    # search never shows a document that no longer matches its rows) or the previous version
    item_rejection_keeps: Literal["none", "previous"] = "none"
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

    @field_validator("key", "order_by", mode="before")
    @classmethod
    def _one_column(cls, v: Any) -> Any:
        return _one_or_many(v)

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

    @field_validator("key", mode="before")
    @classmethod
    def _one_column(cls, v: Any) -> Any:
        return _one_or_many(v)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 0, "kb": 1, "kib": 1, "mb": 2, "mib": 2, "gb": 3, "gib": 3, "tb": 4, "tib": 4}


def parse_size(value: Any) -> int:
    """A size in bytes from a number of bytes or a text like "1GB", "512 MB" (PostgreSQL's units: 1GB = 1024^3)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size, got {value!r}: write e.g. 1GB, 512MB or a number of bytes")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float) and value.is_integer():
        size = int(value)
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(float(m.group(1)) * 1024 ** _SIZE_UNITS[(m.group(2) or "b").lower()])
    else:
        shown = f'"{value}"' if isinstance(value, str) else repr(value)
        raise ValueError(f"{shown[:40]} is not a size: write e.g. 1GB, 512MB or a number of bytes")
    if size < 0:
        raise ValueError(f"{value!r} is negative: give a size of at least 0, e.g. 1GB")
    return size


class SlotConfig(_Strict):
    """How `flusso status`, `validate` and the Dagster slot check judge the slot's health."""

    # an inactive slot holding more WAL than this (bytes, or "1GB") needs attention
    warn_lag: int = 1024**3

    @field_validator("warn_lag", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)


class FlussoConfig(_Strict):
    source: SourceConfig
    sink: SinkConfig
    slot: SlotConfig = Field(default_factory=SlotConfig)
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
    """Expand `${VAR}` and `${VAR:-default}` in every string value, as a POSIX shell would.

    `${VAR:-default}` takes the default when VAR is unset or empty; an unset `${VAR}` is a problem.
    """
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if env.get(name):
                return env[name]
            if default is not None:
                return default
            if name in env:
                return ""
            problems.append(
                Problem(
                    path,
                    f"environment variable {name} is not set: export it, "
                    f"or give a default with ${{{name}:-default}}",
                )
            )
            return ""

        expanded = _VAR.sub(sub, value)
        if "${" in _VAR.sub("", value):
            problems.append(
                Problem(
                    path, "a malformed ${...}: write ${VAR} or ${VAR:-default} (names: letters, digits, _)"
                )
            )
        return expanded
    if isinstance(value, dict):
        return {k: expand_env(v, env, _join(path, str(k)), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    return value


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 reads a bare `on` key (our join key) as True."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read_yaml(text: str, source: str = "flusso.yaml") -> Any:
    """Parse a flusso.yaml text; bad syntax and a key given twice are `ConfigError`s.

    The parser's own message is not shown as is: its snippet of the offending line could hold a
    password.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        problems = _duplicate_keys(node, "") if node is not None else []
        if problems:
            raise ConfigError(problems, source)
        return loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = "; ".join(p for p in (err.context, err.problem) if p) or "syntax error"
        raise ConfigError(
            [Problem("", f"not valid YAML{where}: {what}: fix the syntax there")], source
        ) from None
    except yaml.YAMLError:
        raise ConfigError([Problem("", "not valid YAML: check the file's syntax")], source) from None
    finally:
        loader.dispose()


def _duplicate_keys(node: yaml.Node, path: str) -> list[Problem]:
    """PyYAML keeps the last of two equal keys; in a config that silently drops an index or a field."""
    problems: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                problems.append(
                    Problem(
                        _join(path, name),
                        f'"{name}" appears twice here (line {key.start_mark.line + 1}): remove or rename one',
                    )
                )
            seen.add(name)
            problems += _duplicate_keys(value, _join(path, name))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems += _duplicate_keys(item, f"{path}[{i}]")
    return problems


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> FlussoConfig:
    """Read, expand and validate a flusso.yaml; raise `ConfigError` listing every problem."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(
            [Problem("", f"cannot read {p}: {reason}: check the path (flusso -c FILE)")], str(p)
        ) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem("", f"{p} is not UTF-8 text: save it as UTF-8")], str(p)) from None
    return parse_config(read_yaml(text, str(p)), env, str(p))


def parse_config(raw: Any, env: Mapping[str, str] | None = None, source: str = "flusso.yaml") -> FlussoConfig:
    """Validate a loaded YAML document; raise `ConfigError` listing every problem."""
    if raw is None:
        raise ConfigError([Problem("", "the file is empty: give it source, sink and indexes")], source)
    if not isinstance(raw, dict):
        raise ConfigError(
            [Problem("", "the file must hold a mapping (source:, sink:, indexes:), not a list or a value")],
            source,
        )
    env_problems: list[Problem] = []
    data = expand_env(_yaml11_on(raw), os.environ if env is None else env, "", env_problems)
    problems = _rule_problems(data)
    config: FlussoConfig | None = None
    try:
        config = FlussoConfig.model_validate(data)
    except ValidationError as err:
        problems = _problems_from(err) + problems
    problems = _tidy(env_problems, problems, data)
    if problems or config is None:
        raise ConfigError(problems, source)
    return config


def _yaml11_on(value: Any) -> Any:
    """A dict from plain `yaml.safe_load` has key True where the file says `on`: give it its name back."""
    if isinstance(value, dict):
        return {("on" if k is True else k): _yaml11_on(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_yaml11_on(v) for v in value]
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _loc(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        out = out + f"[{part}]" if isinstance(part, int) else _join(out, str(part))
    return out


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The closest of `choices` to a misspelt `word` (case-insensitive first), or None."""
    choices = list(choices)
    for c in choices:
        if c.lower() == word.lower():
            return c
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def _suggest(word: str, choices: Iterable[str]) -> str:
    """` (did you mean "x"?)`, or nothing when no choice is close."""
    best = did_you_mean(word, choices)
    return f' (did you mean "{best}"?)' if best else ""


# --- pydantic's errors, in the user's words ----------------------------------------------------

# What each required key holds, shown when it is missing: (model, key) -> example.
_REQUIRED = {
    ("FlussoConfig", "source"): "the database to read: dsn, slot and publication",
    ("FlussoConfig", "sink"): "where documents go, e.g. sink: {type: opensearch, hosts: [...]}",
    ("FlussoConfig", "indexes"): "the indexes to keep in sync, each with table, key and fields",
    ("SourceConfig", "dsn"): "the PostgreSQL connection string, e.g. dsn: ${FLUSSO_PG_DSN}",
    ("SourceConfig", "slot"): "the logical replication slot's name, e.g. slot: flusso_main",
    ("SourceConfig", "publication"): "the publication's name, e.g. publication: flusso_main",
    ("SinkConfig", "type"): "opensearch or stdout",
    ("IndexConfig", "table"): "the root table, e.g. table: public.book",
    ("IndexConfig", "key"): "the root table's key columns, e.g. key: [id]",
    ("IndexConfig", "fields"): "document field: column, e.g. fields: {title: title}",
    ("RelationConfig", "table"): "the related table, e.g. table: public.review",
    ("RelationConfig", "type"): "one of " + ", ".join(RELATION_TYPES),
    ("RelationConfig", "fields"): "document field: column, e.g. fields: {name: name}",
    ("ThroughConfig", "table"): "the join table, e.g. table: public.book_author",
    ("ThroughConfig", "parent"): "parent column: join-table column, e.g. parent: {id: book_id}",
    ("ThroughConfig", "child"): "join-table column: child column, e.g. child: {author_id: id}",
}


def _unwrap(tp: Any) -> Any:
    """`X | None` -> X."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _model_at(loc: Iterable[Any]) -> type[BaseModel] | None:
    """The model that validates the mapping at `loc` (dict keys and list indexes step inside)."""
    tp: Any = FlussoConfig
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _show(value: Any, path: str) -> str:
    """A value for a message: short, never a secret, never a URL's password, never a container's insides."""
    if path in _SECRET_PATHS:
        return "a hidden value"
    if value is None:
        return "nothing"
    if isinstance(value, dict | list | tuple | set):
        return "a mapping" if isinstance(value, dict) else "a list"
    shown = f'"{redact_dsn(value)}"' if isinstance(value, str) else repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _message(e: Any, path: str) -> str:
    """One pydantic error, rewritten to say what is wrong and what to do."""
    kind, ctx, value = e["type"], e.get("ctx", {}), e.get("input")
    loc = e["loc"]
    got = _show(value, path)
    if kind == "missing":
        model = _model_at(loc[:-1])
        hint = _REQUIRED.get((model.__name__ if model else "", str(loc[-1])))
        return f'required key "{loc[-1]}" is missing: add it' + (f" ({hint})" if hint else "")
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        allowed = list(model.model_fields) if model else []
        best = did_you_mean(str(loc[-1]), allowed)
        if best:
            return f'unknown key "{loc[-1]}" (did you mean "{best}"?): rename it'
        return f'unknown key "{loc[-1]}": remove it' + (
            f" (allowed here: {', '.join(allowed)})" if allowed else ""
        )
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        word = str(value)
        fix = f"use {expected[0]}" if len(expected) == 1 else "use one of them"
        return f"{got} is not one of {', '.join(expected)}{_suggest(word, expected)}: {fix}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        model = _model_at(loc)
        required = [n for n, f in model.model_fields.items() if f.is_required()] if model else []
        example = f" with {', '.join(required)}" if required else " (key: value)"
        return f"expected a mapping{example}, got {got}: write it as one"
    if kind == "value_error":
        return str(ctx.get("error", e["msg"]))
    if kind == "list_type":
        return f"expected a list, got {got}: write it as [a, b]"
    if kind in ("string_type", "string_sub_type"):
        scalar = isinstance(value, int | float | bool)
        return f"expected text, got {got}: " + ("quote it" if scalar else "write a name or a value here")
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected a whole number, got {got}: write e.g. 1000"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"expected a number, got {got}: write e.g. 30"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true or false, got {got}: write one of them"
    for bound, words in (("gt", "greater than"), ("ge", "at least"), ("lt", "less than"), ("le", "at most")):
        if bound in ctx:
            return f"must be {words} {ctx[bound]}, got {got}: change it"
    return f"{e['msg'].lower()}, got {got}: fix it"


def _problems_from(err: ValidationError) -> list[Problem]:
    out = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        e = {**e, "loc": loc}
        path = _loc(loc)
        out.append(Problem(path, _message(e, path)))
    return out


def _tidy(env_problems: list[Problem], problems: list[Problem], data: Any) -> list[Problem]:
    """Drop echoes: a value emptied by an unset variable, a missing key the typo next to it explains.

    Then dedupe and order by where each path first appears in the file.
    """
    unset = {p.path for p in env_problems}
    typos = {
        (p.path.rpartition(".")[0], m.group(1))
        for p in problems
        if (m := re.search(r'\(did you mean "([^"]+)"\?\): rename it$', p.message))
    }
    kept: dict[tuple[str, str], Problem] = {}
    for p in [*env_problems, *problems]:
        if p not in env_problems and any(p.path == u or p.path.startswith(u + ".") for u in unset):
            continue
        m = re.match(r'required key "([^"]+)" is missing', p.message)
        if m and (p.path.rpartition(".")[0], m.group(1)) in typos:
            continue
        kept.setdefault((p.path, p.message), p)
    order = {path: i for i, path in enumerate(_paths(data, ""))}

    def position(p: Problem) -> int:
        path = p.path
        while path and path not in order:
            path = path.rpartition(".")[0]
        return order.get(path, len(order))

    return sorted(kept.values(), key=position)


def _paths(value: Any, path: str) -> Iterator[str]:
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, _join(path, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, f"{path}[{i}]")


# --- the rules pydantic cannot express, on the raw data ----------------------------------------


def _d(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _rule_problems(data: dict[str, Any]) -> list[Problem]:
    problems = _source_problems(_d(data.get("source"))) + _sink_problems(_d(data.get("sink")))
    flush = _d(_d(data.get("failures")).get("flush_error"))
    backoff, most = flush.get("backoff_ms"), flush.get("max_backoff_ms")
    if isinstance(backoff, int) and isinstance(most, int) and most < backoff:
        problems.append(
            Problem(
                "failures.flush_error.max_backoff_ms",
                f"is below backoff_ms ({backoff}): raise it or lower that",
            )
        )
    indexes = data.get("indexes")
    if isinstance(indexes, dict):
        if not indexes:
            problems.append(
                Problem("indexes", "no index defined: add at least one, with table, key and fields")
            )
        dead_letter = _d(data.get("failures")).get("item_rejection", "dead_letter") == "dead_letter"
        for name, index in indexes.items():
            problems += _index_problems(str(name), _d(index))
            if (
                dead_letter
                and str(name).endswith(DEAD_LETTER_SUFFIX)
                and str(name)[: -len(DEAD_LETTER_SUFFIX)] in indexes
            ):
                problems.append(
                    Problem(
                        f"indexes.{name}",
                        f"is the dead-letter index of {str(name)[: -len(DEAD_LETTER_SUFFIX)]}: rename it",
                    )
                )
    return problems


def _source_problems(source: dict[str, Any]) -> list[Problem]:
    problems = []
    dsn = source.get("dsn")
    if isinstance(dsn, str):
        if not dsn.strip():
            problems.append(
                Problem("source.dsn", "is empty: set it, e.g. postgresql://user:password@host:5432/dbname")
            )
        else:
            try:
                psycopg.conninfo.conninfo_to_dict(dsn)
            except psycopg.ProgrammingError:  # its message may quote the password: not shown
                problems.append(
                    Problem(
                        "source.dsn",
                        "is not a PostgreSQL connection string: write "
                        "postgresql://user:password@host:5432/dbname or host=... dbname=... user=...",
                    )
                )
    return problems


def _sink_problems(sink: dict[str, Any]) -> list[Problem]:
    problems = []
    hosts = _one_or_many(sink.get("hosts"))
    if sink.get("type") == "opensearch" and not hosts:
        problems.append(
            Problem("sink.hosts", 'the opensearch sink needs hosts: add e.g. ["http://127.0.0.1:9200"]')
        )
    if isinstance(hosts, list):
        for i, host in enumerate(hosts):
            if isinstance(host, str) and not host.strip():
                problems.append(
                    Problem(f"sink.hosts[{i}]", "is empty: give a URL like http://127.0.0.1:9200")
                )
    user, password = sink.get("username") not in (None, ""), sink.get("password") not in (None, "")
    if user != password:
        have, lack = ("username", "password") if user else ("password", "username")
        problems.append(Problem(f"sink.{lack}", f"{have} is set but {lack} is not: set both, or neither"))
    return problems


def _index_problems(name: str, index: dict[str, Any]) -> list[Problem]:
    base = f"indexes.{name}"
    problems = []
    if not _INDEX_NAME.match(name) or len(name) > _INDEX_NAME_MAX:
        fixed = re.sub(r"[^a-z0-9_\-]", "_", name.lower()).lstrip("_-")[:_INDEX_NAME_MAX] or "documents"
        problems.append(
            Problem(
                base,
                f'"{name}" is not a valid OpenSearch index name (lower-case letters, digits, _ and -, '
                f'starting with a letter or digit, at most {_INDEX_NAME_MAX}): rename it, e.g. "{fixed}"',
            )
        )
    problems += _table_problems(base, index.get("table"))
    key = _one_or_many(index.get("key"))
    if key == []:
        problems.append(Problem(f"{base}.key", "is empty: list the root table's key columns, e.g. [id]"))
    problems += _column_list_problems(f"{base}.key", key)
    problems += _node_problems(base, index)
    for rel_name, rel in _d(index.get("relations")).items():
        problems += _relation_problems(f"{base}.relations.{rel_name}", _d(rel))
    return problems


def _relation_problems(base: str, rel: dict[str, Any]) -> list[Problem]:
    problems = _table_problems(base, rel.get("table"))
    kind = rel.get("type")
    on, through = rel.get("on"), rel.get("through")
    if kind == "many_to_many":
        if through is None:
            problems.append(
                Problem(
                    f"{base}.through",
                    "a many_to_many relation needs `through` (its join table): add e.g. through: "
                    "{table: public.book_author, parent: {id: book_id}, child: {author_id: id}}",
                )
            )
        else:
            problems += _table_problems(f"{base}.through", _d(through).get("table"))
            for side, example in (("parent", "{id: book_id}"), ("child", "{author_id: id}")):
                if _d(through).get(side) == {}:
                    problems.append(
                        Problem(f"{base}.through.{side}", f"is empty: map the columns, e.g. {example}")
                    )
        if on is not None:
            problems.append(
                Problem(f"{base}.on", "a many_to_many relation joins through `through`: remove `on`")
            )
    elif kind in RELATION_TYPES:
        if not on:
            problems.append(
                Problem(f"{base}.on", "the relation needs `on`: add on: {parent column: child column}")
            )
        if through is not None:
            problems.append(
                Problem(
                    f"{base}.through",
                    f"only many_to_many joins through a table ({kind} uses `on`): remove it",
                )
            )
        if kind in OBJECT_RELATIONS:
            for key in ("nested", "order_by"):
                if rel.get(key):
                    problems.append(
                        Problem(
                            f"{base}.{key}",
                            f"{kind} gives one object, not an array: remove {key} (or use "
                            f"{'one_to_many' if kind == 'one_to_one' else 'many_to_many'})",
                        )
                    )
    key = _one_or_many(rel.get("key"))
    if key == []:
        problems.append(Problem(f"{base}.key", "is empty: list the child's key columns, or remove key"))
    problems += _column_list_problems(f"{base}.key", key)
    problems += _column_list_problems(f"{base}.order_by", _one_or_many(rel.get("order_by")))
    problems += _node_problems(base, rel)
    for rel_name, child in _d(rel.get("relations")).items():
        problems += _relation_problems(f"{base}.relations.{rel_name}", _d(child))
    return problems


def _table_problems(base: str, table: Any) -> list[Problem]:
    if isinstance(table, str) and not _TABLE_NAME.match(table):
        return [Problem(f"{base}.table", f'"{table}" is not a table name: write schema.table or table')]
    return []


def _column_list_problems(path: str, columns: Any) -> list[Problem]:
    if not isinstance(columns, list):
        return []
    repeated = sorted({c for c in columns if isinstance(c, str) and columns.count(c) > 1})
    return [Problem(path, f'"{c}" is listed twice: list it once') for c in repeated]


def _node_problems(base: str, node: dict[str, Any]) -> list[Problem]:
    """Fields and mapping of an index or a relation."""
    problems = []
    fields, relations = _d(node.get("fields")), _d(node.get("relations"))
    if "fields" in node and not fields and not relations and isinstance(node.get("fields"), dict):
        problems.append(Problem(f"{base}.fields", "no field listed: add at least one, e.g. {name: name}"))
    for field, column in fields.items():
        path = f"{base}.fields.{field}"
        if field in relations:
            problems.append(Problem(path, "a field and a relation share this name: rename one of them"))
        if str(field).startswith("_") or "." in str(field):
            problems.append(Problem(path, "a field name may not start with _ or contain a dot: rename it"))
        if isinstance(column, str) and not column.strip():
            problems.append(Problem(path, "names no column: give the column, e.g. title: title"))
    for field, spec in _d(node.get("mapping")).items():
        path = f"{base}.mapping.{field}"
        if field in relations:
            problems.append(
                Problem(
                    path,
                    f'"{field}" is a relation: map its fields in relations.{field}.mapping '
                    "(and set nested: true on it for the nested type)",
                )
            )
        elif field not in fields:
            problems.append(
                Problem(
                    path,
                    f'"{field}" is not a field here{_suggest(str(field), map(str, fields))}: '
                    f"map only the fields listed in fields ({', '.join(map(str, fields)) or 'none'})",
                )
            )
        if isinstance(spec, dict) and "type" in spec:
            problems += _type_problems(f"{path}.type", spec["type"])
    return problems


def _type_problems(path: str, kind: Any) -> list[Problem]:
    if not isinstance(kind, str):
        return [Problem(path, f"expected a type name, got {_show(kind, path)}: write e.g. type: keyword")]
    if kind in OPENSEARCH_FIELD_TYPES:
        return []
    if kind.lower() in _TYPE_ALIASES:
        meant = _TYPE_ALIASES[kind.lower()]
        return [Problem(path, f'"{kind}" is not an OpenSearch field type: use {meant}')]
    best = did_you_mean(kind, [*OPENSEARCH_FIELD_TYPES, *_TYPE_ALIASES])
    if best in _TYPE_ALIASES:
        hint = f'did you mean "{best}"? OpenSearch has no such type'
        return [
            Problem(path, f'"{kind}" is not an OpenSearch field type ({hint}): use {_TYPE_ALIASES[best]}')
        ]
    if best:
        return [Problem(path, f'"{kind}" is not an OpenSearch field type (did you mean "{best}"?): use that')]
    return [
        Problem(
            path,
            f'"{kind}" is not an OpenSearch field type: use e.g. text, keyword, long, double, boolean, date, '
            "object or nested (or leave the type out to derive it from the column)",
        )
    ]
