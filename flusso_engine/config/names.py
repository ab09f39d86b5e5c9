"""Table names and the places of things in flusso.yaml: the small helpers every part uses."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .indexes import RelationConfig

RELATION_TYPES = ("many_to_one", "one_to_one", "one_to_many", "many_to_many")
OBJECT_RELATIONS = ("many_to_one", "one_to_one")
DEAD_LETTER_SUFFIX = "-deadletter"


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


def join_path(path: str, key: str) -> str:
    """`sink` + `hosts` -> `sink.hosts`; a key at the top has no dot before it."""
    return f"{path}.{key}" if path else key


def walk_relations(
    relations: Mapping[str, RelationConfig], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], RelationConfig]]:
    """Every relation below a node, depth first, with its path of field names."""
    for name, rel in relations.items():
        path = (*prefix, name)
        yield path, rel
        yield from walk_relations(rel.relations, path)
