"""Reading a PGSync `schema.json` into plain objects, with PGSync's own rules about it.

PGSync's format: a list of documents, each with `database`, `index` and a tree of `nodes` (table,
schema, label, columns, primary_key, children, relationship, transform, base_tables) and the
index-wide `setting`, `mapping`/`mappings`, `routing`, `pipeline` and `plugins`. As PGSync does
(pgsync/utils.py `config_loader`), the documents' top-level strings take `$VAR`/`${VAR}` from the
environment. Every mistake is reported at once with where it is, as `flusso.yaml`'s are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from ..error import ConfigError, Problem

NODE_ATTRIBUTES = frozenset(
    {"base_tables", "children", "columns", "label", "primary_key", "relationship", "schema", "table", "transform"}
)
RELATIONSHIP_ATTRIBUTES = frozenset({"foreign_key", "through_tables", "type", "variant"})
DOCUMENT_ATTRIBUTES = frozenset(
    {"database", "index", "nodes", "setting", "mapping", "mappings", "routing", "pipeline", "plugins"}
)
TRANSFORMS = frozenset({"rename", "mapping", "concat", "replace", "move"})


@dataclass
class PgRelationship:
    type: str = "one_to_one"  # PGSync's types: one_to_one, one_to_many
    variant: str = "object"  # object or scalar
    through_tables: list[str] = field(default_factory=list)
    foreign_key: dict[str, list[str]] | None = None  # {"parent": [...], "child": [...]}
    type_given: bool = True


@dataclass
class PgNode:
    table: str
    schema: str = "public"
    label: str = ""
    columns: list[str] = field(default_factory=list)  # empty: every column (PGSync's rule)
    primary_key: list[str] = field(default_factory=list)
    transform: dict[str, Any] = field(default_factory=dict)
    base_tables: list[str] = field(default_factory=list)
    relationship: PgRelationship = field(default_factory=PgRelationship)
    children: list[PgNode] = field(default_factory=list)
    path: str = "nodes"  # where it is in schema.json, for messages

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    def through(self) -> str | None:
        """The join table, qualified: PGSync reads an unqualified one in the node's schema."""
        if not self.relationship.through_tables:
            return None
        name = self.relationship.through_tables[0]
        return name if "." in name else f"{self.schema}.{name}"


@dataclass
class PgDocument:
    database: str
    index: str
    nodes: PgNode
    setting: dict[str, Any] = field(default_factory=dict)
    mapping: dict[str, Any] = field(default_factory=dict)
    mappings: dict[str, Any] = field(default_factory=dict)
    routing: str | None = None
    pipeline: str | None = None
    plugins: list[str] = field(default_factory=list)
    path: str = "[0]"


def read_schema(path: str | Path, env: Mapping[str, str]) -> list[PgDocument]:
    """The documents of a PGSync schema file; a `ConfigError` lists everything wrong with it."""
    source = str(path)
    try:
        data = json.loads(Path(path).read_text())
    except OSError as err:
        raise ConfigError([Problem("", f"cannot read it ({err.strerror}): give the path of PGSync's schema.json")],
                          source) from None
    except json.JSONDecodeError as err:
        raise ConfigError([Problem("", f"not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}: "
                                       "fix the syntax there")], source) from None
    if isinstance(data, dict):
        data = [data]
    problems: list[Problem] = []
    if not isinstance(data, list) or not data:
        raise ConfigError([Problem("", "expected a list of PGSync documents ([{database, index, nodes}])")], source)
    docs = [d for i, raw in enumerate(data) if (d := _document(raw, f"[{i}]", env, problems)) is not None]
    if problems:
        raise ConfigError(problems, source)
    return docs


def _document(raw: Any, path: str, env: Mapping[str, str], problems: list[Problem]) -> PgDocument | None:
    if not isinstance(raw, dict):
        problems.append(Problem(path, "expected an object with database, index and nodes"))
        return None
    raw = {k: _substitute(v, f"{path}.{k}", env, problems) for k, v in raw.items()}
    for key in sorted(set(raw) - DOCUMENT_ATTRIBUTES):
        problems.append(Problem(f"{path}.{key}", f"PGSync has no document attribute {key!r}: remove it (known: "
                                                 f"{', '.join(sorted(DOCUMENT_ATTRIBUTES))})"))
    if "nodes" not in raw or not isinstance(raw["nodes"], dict):
        problems.append(Problem(f"{path}.nodes", "missing or not an object: give the root node, {table: ...}"))
        return None
    database = raw.get("database") or raw.get("index")
    if not isinstance(database, str) or not database:
        problems.append(Problem(f"{path}.database", "missing: name the database (PGSync's default is the index)"))
        return None
    index = raw.get("index") or database
    nodes = _node(raw["nodes"], f"{path}.nodes", problems, root=True)
    if nodes is None:
        return None
    plugins = raw.get("plugins") or []
    return PgDocument(
        database=database, index=str(index), nodes=nodes, setting=_object(raw, "setting", path, problems),
        mapping=_object(raw, "mapping", path, problems), mappings=_object(raw, "mappings", path, problems),
        routing=raw.get("routing"), pipeline=raw.get("pipeline"),
        plugins=[str(p) for p in plugins] if isinstance(plugins, list) else [str(plugins)], path=path,
    )


def _substitute(value: Any, path: str, env: Mapping[str, str], problems: list[Problem]) -> Any:
    """PGSync's `Template(value).safe_substitute(os.environ)` on a top-level string; one left unset is
    a problem here (PGSync would use the placeholder itself as a name)."""
    if not isinstance(value, str) or "$" not in value:
        return value
    out = Template(value).safe_substitute(env)
    if "$" in out:
        problems.append(Problem(path, f"{value!r} names an environment variable that is not set: export it "
                                      "(PGSync reads it from the environment too)"))
    return out


def _object(raw: dict, key: str, path: str, problems: list[Problem]) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        problems.append(Problem(f"{path}.{key}", "expected an object"))
        return {}
    return value


def _names(value: Any, path: str, problems: list[Problem]) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(Problem(path, "expected a list of names"))
        return []
    return list(value)


def _node(raw: dict, path: str, problems: list[Problem], root: bool = False) -> PgNode | None:
    for key in sorted(set(raw) - NODE_ATTRIBUTES):
        problems.append(Problem(f"{path}.{key}", f"PGSync has no node attribute {key!r}: remove it (known: "
                                                 f"{', '.join(sorted(NODE_ATTRIBUTES))})"))
    table = raw.get("table")
    if not isinstance(table, str) or not table:
        problems.append(Problem(f"{path}.table", "missing: name the node's table"))
        return None
    transform = raw.get("transform") or {}
    if not isinstance(transform, dict):
        problems.append(Problem(f"{path}.transform", "expected an object"))
        transform = {}
    for key in sorted(set(transform) - TRANSFORMS):
        problems.append(Problem(f"{path}.transform.{key}", f"PGSync has no transform {key!r} (known: "
                                                           f"{', '.join(sorted(TRANSFORMS))}): remove it"))
    node = PgNode(
        table=table, schema=raw.get("schema") or "public", label=raw.get("label") or table,
        columns=_names(raw.get("columns"), f"{path}.columns", problems),
        primary_key=_names(raw.get("primary_key"), f"{path}.primary_key", problems),
        transform=transform, base_tables=_names(raw.get("base_tables"), f"{path}.base_tables", problems),
        relationship=_relationship(raw.get("relationship"), f"{path}.relationship", problems, root), path=path,
    )
    children = raw.get("children") or []
    if not isinstance(children, list):
        problems.append(Problem(f"{path}.children", "expected a list of nodes"))
        children = []
    for i, child in enumerate(children):
        where = f"{path}.children[{i}]"
        if not isinstance(child, dict):
            problems.append(Problem(where, "expected a node, {table: ...}"))
        elif (made := _node(child, where, problems)) is not None:
            node.children.append(made)
    return node


def _relationship(raw: Any, path: str, problems: list[Problem], root: bool) -> PgRelationship:
    if raw is None:
        return PgRelationship(type_given=root)
    if not isinstance(raw, dict):
        problems.append(Problem(path, "expected an object with variant and type"))
        return PgRelationship()
    for key in sorted(set(raw) - RELATIONSHIP_ATTRIBUTES):
        problems.append(Problem(f"{path}.{key}", f"PGSync has no relationship attribute {key!r}: remove it"))
    kind = str(raw.get("type") or "one_to_one").lower()
    variant = str(raw.get("variant") or "object").lower()
    if kind not in ("one_to_one", "one_to_many"):
        problems.append(Problem(f"{path}.type", f"{kind!r} is not a PGSync type: use one_to_one or one_to_many"))
    if variant not in ("object", "scalar"):
        problems.append(Problem(f"{path}.variant", f"{variant!r} is not a PGSync variant: use object or scalar"))
    through = _names(raw.get("through_tables"), f"{path}.through_tables", problems)
    if len(through) > 1:
        problems.append(Problem(f"{path}.through_tables", "PGSync takes one through table: keep one"))
    fk = raw.get("foreign_key")
    foreign_key = None
    if fk is not None:
        if not isinstance(fk, dict) or sorted(fk) != ["child", "parent"]:
            problems.append(Problem(f"{path}.foreign_key", "must hold parent and child (column lists)"))
        else:
            foreign_key = {side: _names(fk[side], f"{path}.foreign_key.{side}", problems) for side in fk}
            if len(foreign_key["parent"]) != len(foreign_key["child"]):
                problems.append(Problem(f"{path}.foreign_key", "parent and child list different numbers of "
                                                               "columns: pair them one to one"))
    return PgRelationship(type=kind, variant=variant, through_tables=through, foreign_key=foreign_key,
                          type_given="type" in raw)
