"""What a node puts in its document, in order: its fields (after `transform`), the sub-objects `move`
makes, and its relations (a flattened one's share of the parent in its place).

The build statement (`sql/statements.py`) and the mapping (`mapping.py`) walk the same items, so a
field is typed exactly where the SQL writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from ..config.fields import ConcatRule, MappingRule, PathField, SqlField

if TYPE_CHECKING:
    from .tree import Node


@dataclass(frozen=True)
class Value:
    """One field: its source (a column, path or sql field; or a concat of other fields' values), then
    its replacements (old, new, is a regex) in order, then its value map."""

    name: str
    spec: str | PathField | SqlField | None
    concat: ConcatRule | None = None
    replace: tuple[tuple[str, str, bool], ...] = ()
    mapping: MappingRule | None = None


@dataclass(frozen=True)
class Obj:
    """A sub-object that `move` makes."""

    name: str
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Child:
    """A relation as an object, an array of objects, or (scalar) an array of values."""

    node: Node

    @property
    def name(self) -> str:
        return self.node.name


@dataclass(frozen=True)
class Flat:
    """A one_to_one/many_to_one relation whose items become the parent's, named `prefix` + name."""

    node: Node
    prefix: str


Item = Union[Value, Obj, Child, Flat]  # noqa: UP007 (a forward reference)


def _replacements(rules: dict[str, object]) -> tuple[tuple[str, str, bool], ...]:
    out: list[tuple[str, str, bool]] = []
    for old, new in rules.items():
        if old == "regex" and isinstance(new, dict):
            out += [(str(p), str(r), True) for p, r in new.items()]
        else:
            out.append((old, str(new), False))
    return tuple(out)


def values(node: Node) -> dict[str, Value]:
    """Every field of the node, concat destinations included, by name, in order."""
    t = node.transform
    out: dict[str, Value] = {}
    for name, spec in node.fields.items():
        out[name] = Value(
            name,
            spec,
            replace=_replacements(t.replace.get(name, {})) if t else (),
            mapping=t.mapping.get(name) if t else None,
        )
    for rule in t.concat if t else []:
        out[rule.destination] = Value(rule.destination, None, concat=rule)
    return out


def items(node: Node) -> list[Item]:
    """The node's document, in order: fields, moved sub-objects, relations."""
    fields = values(node)
    move = node.transform.move if node.transform else {}
    out: list[Item] = [v for n, v in fields.items() if n not in move]
    tree: dict[str, dict] = {}
    for name, dest in move.items():
        level = tree
        for part in dest.split("."):
            level = level.setdefault(part, {})
        level[name] = fields[name]
    out += _objects(tree)
    for child in node.children:
        if child.variant == "flatten":
            out.append(Flat(child, child.prefix))
        else:
            out.append(Child(child))
    return out


def _objects(tree: dict[str, dict]) -> list[Item]:
    out: list[Item] = []
    for name, inside in tree.items():
        if isinstance(inside, Value):
            out.append(inside)
        else:
            out.append(Obj(name, tuple(_objects(inside))))
    return out


def scalar_value(node: Node) -> Value:
    """A scalar relation's one field."""
    return next(iter(values(node).values()))
