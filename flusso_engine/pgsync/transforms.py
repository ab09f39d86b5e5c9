"""PGSync's columns and `transform` block in flusso's words: JSON-path columns, replace, concat, move.

PGSync applies replace (keyed by the column names), then rename, then concat (keyed by the renamed
names) (pgsync/transform.py `transform`); flusso's `transform` names fields by their final names, so
replace's keys are renamed here. `move` is a PGSync constant without an implementation (7.3.0): it
changes nothing there, and is not converted. PGSync's `transform.mapping` is the OpenSearch mapping,
not a value map: it becomes flusso's `mapping:` (convert.py).
"""

from __future__ import annotations

import re
from typing import Any

from psycopg import sql

from ..config.indexes import IndexConfig, RelationConfig

_JSON_OPERATOR = re.compile(r"(->>|->|#>>|#>)")


def fields_syntax() -> bool:
    """Whether this flusso's config has path fields, `transform` and relation variants (issue #16 items
    1-3); without them those parts are written as `# not converted yet:` comments."""
    return "variant" in RelationConfig.model_fields and "transform" in IndexConfig.model_fields


def is_json_column(column: str) -> bool:
    return bool(_JSON_OPERATOR.search(column))


def json_column(column: str) -> tuple[str, dict[str, str]] | str:
    """PGSync's `doc->a->0` / `doc#>{a,b}->>c`: (PGSync's field name, flusso's field), or why not.

    PGSync names the field by the column and keys joined with `_`, braces dropped (pgsync/node.py
    `setup`). flusso's field is `{path: doc.a.0}` (the JSON value, as `->` gives it); when the last
    operator gives text (`->>`, `#>>`) it is the same extraction as a `sql` field of type keyword,
    so a number stays text as in PGSync."""
    tokens = [t.strip() for t in _JSON_OPERATOR.split(column) if t.strip()]
    parts = [t for t in tokens if not _JSON_OPERATOR.fullmatch(t)]
    name = "_".join(p.replace("{", "").replace("}", "") for p in parts)
    keys: list[str] = []
    for part in parts[1:]:
        if part.startswith("{") and part.endswith("}"):
            keys += [k.strip().strip("\"'") for k in part[1:-1].split(",") if k.strip()]
        else:
            keys.append(part.strip("\"'"))
    if not keys or any("." in k or not k for k in [parts[0], *keys]):
        return f"{column!r}: a key holding a dot (or none at all) cannot be a flusso path"
    operators = [t for t in tokens if _JSON_OPERATOR.fullmatch(t)]
    if operators[-1] in ("->>", "#>>"):
        path = sql.SQL("{} #>> {}").format(sql.Identifier(parts[0]), sql.Literal("{" + ",".join(
            '"' + k.replace("\\", "\\\\").replace('"', '\\"') + '"' for k in keys) + "}"))
        return name, {"sql": path.as_string(None), "type": "keyword"}
    return name, {"path": ".".join([parts[0], *keys])}


def convert_transform(where: str, transform: dict[str, Any], rename: dict[str, str], fields: dict[str, Any],
                      problems: list[str], differences: list[str]) -> dict[str, Any]:
    """flusso's `transform` for a node whose fields (final names) are `fields`."""
    out: dict[str, Any] = {}
    replace = transform.get("replace") or {}
    if isinstance(replace, dict):
        rules: dict[str, Any] = {}
        for column, pairs in replace.items():
            name = rename.get(column, column)
            if name not in fields:
                problems.append(f"{where}.replace.{column}: not a field of this node: skipped")
            elif not isinstance(pairs, dict) or not all(isinstance(v, str) for v in pairs.values()):
                problems.append(f"{where}.replace.{column}: expected {{old: new}} texts: skipped")
            else:
                rules[name] = dict(pairs)
        if rules:
            out["replace"] = rules
    concat = transform.get("concat") or []
    rules_c: list[dict[str, Any]] = []
    for i, rule in enumerate([concat] if isinstance(concat, dict) else concat):
        if not isinstance(rule, dict) or "columns" not in rule or "destination" not in rule:
            problems.append(f"{where}.concat[{i}]: expected {{columns, destination, delimiter}}: skipped")
            continue
        named = [c for c in rule["columns"] if c in fields]
        literal = [c for c in rule["columns"] if c not in fields]
        if literal:
            problems.append(f"{where}.concat[{i}]: {', '.join(map(repr, literal))} not fields: PGSync joins such "
                            "names as literal text; flusso joins fields only: left out")
        if not named:
            continue
        entry: dict[str, Any] = {"fields": named, "destination": rule["destination"]}
        if rule.get("delimiter"):
            entry["delimiter"] = rule["delimiter"]
        rules_c.append(entry)
        differences.append(f"{where}.concat[{i}]: PGSync skips every false value (0, false, \"\") and writes "
                           "Python's text (True); flusso skips nulls only and writes PostgreSQL's text (true)")
    if rules_c:
        out["concat"] = rules_c
    if transform.get("move"):
        problems.append(f"{where}.move: PGSync (7.3.0) has no implementation of move (it changes nothing): "
                        "not converted; flusso's is transform.move {field: sub-object}")
    return out
