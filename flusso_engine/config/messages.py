"""pydantic's errors in the user's words: each says what is wrong and what to do, never a secret.

`problems_from` turns a `ValidationError` into `Problem`s at their paths in the file; `tidy` drops
the echoes (a value emptied by an unset variable, a missing key that the typo beside it explains)
and orders what is left as the file does. `did_you_mean` is shared with `validate`'s checks.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Iterable, Iterator
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from ..error import Problem
from ..redact import redact_dsn
from .names import RELATION_TYPES, join_path

_SECRET_PATHS = frozenset({"source.dsn", "sink.password"})

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


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The closest of `choices` to a misspelt `word` (case-insensitive first), or None."""
    choices = list(choices)
    for c in choices:
        if c.lower() == word.lower():
            return c
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def suggest(word: str, choices: Iterable[str]) -> str:
    """` (did you mean "x"?)`, or nothing when no choice is close."""
    best = did_you_mean(word, choices)
    return f' (did you mean "{best}"?)' if best else ""


def show(value: Any, path: str = "") -> str:
    """A value for a message: short, never a secret, never a URL's password, never a container's insides."""
    if path in _SECRET_PATHS:
        return "a hidden value"
    if value is None:
        return "nothing"
    if isinstance(value, dict | list | tuple | set):
        return "a mapping" if isinstance(value, dict) else "a list"
    shown = f'"{redact_dsn(value)}"' if isinstance(value, str) else repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def problems_from(err: ValidationError, root: type[BaseModel]) -> list[Problem]:
    """Every error of validating `root`, at its path in the file, in the user's words."""
    out = []
    for e in err.errors():
        # a validator's own name, a dict key's `[key]` marker and a field kind's tag
        # (config/fields.py) are not places in the file
        loc = tuple(
            p for p in e["loc"] if not (isinstance(p, str) and (p.startswith(("function-", "field:")) or p == "[key]"))
        )
        e = {**e, "loc": loc}
        path = _loc(loc)
        out.append(Problem(path, _message(e, path, root)))
    return out


def tidy(env_problems: list[Problem], problems: list[Problem], data: Any) -> list[Problem]:
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
            yield from _paths(v, join_path(path, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, f"{path}[{i}]")


def _loc(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        out = out + f"[{part}]" if isinstance(part, int) else join_path(out, str(part))
    return out


def _unwrap(tp: Any) -> Any:
    """`X | None` -> X."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _model_at(root: type[BaseModel], loc: Iterable[Any]) -> type[BaseModel] | None:
    """The model that validates the mapping at `loc` (dict keys and list indexes step inside)."""
    tp: Any = root
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


def _message(e: Any, path: str, root: type[BaseModel]) -> str:
    """One pydantic error, rewritten to say what is wrong and what to do."""
    kind, ctx, value = e["type"], e.get("ctx", {}), e.get("input")
    loc = e["loc"]
    got = show(value, path)
    if kind == "missing":
        model = _model_at(root, loc[:-1])
        hint = _REQUIRED.get((model.__name__ if model else "", str(loc[-1])))
        if model is None and len(loc) >= 3 and loc[-3] == "fields" and loc[-1] == "type":  # a sql field
            hint = "the OpenSearch type of the expression's values, e.g. type: keyword"
        return f'required key "{loc[-1]}" is missing: add it' + (f" ({hint})" if hint else "")
    if kind == "extra_forbidden":
        model = _model_at(root, loc[:-1])
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
        return f"{got} is not one of {', '.join(expected)}{suggest(word, expected)}: {fix}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        model = _model_at(root, loc)
        required = [n for n, f in model.model_fields.items() if f.is_required()] if model else []
        example = f" with {', '.join(required)}" if required else " (key: value)"
        return f"expected a mapping{example}, got {got}: write it as one"
    if kind == "value_error":
        return str(ctx.get("error", e["msg"]))
    if kind == "field_kind":  # config/fields.py: a field that is neither a column, a path nor sql
        return f"{e['msg']} (got {got})"
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
