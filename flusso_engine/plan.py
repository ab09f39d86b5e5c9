"""Each index's plan, derived once from the config and the catalog, and read by every part.

The relation tree (the config resolved against the catalog), the mapping, the resolve routes, the
tables an index reads and the tables whose old rows resolve needs in full: the builder compiles
its SQL from these, capture sets replica identity and checks Relation messages against them, the
sink creates indexes with the mapping, validation reports from them. Deriving them in one place
keeps them from disagreeing, and does the work once per start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .catalog import Catalog
from .config import FlussoConfig, IndexConfig, qualify
from .documents.mapping import index_mapping
from .documents.routes import Route, full_identity, index_routes, old_columns, routing_columns
from .documents.tree import Node, index_tree
from .sinks.marker import mapping_definition_hash


@dataclass(frozen=True)
class IndexPlan:
    name: str
    config: IndexConfig
    tree: Node
    mapping: dict[str, Any]
    routes: tuple[Route, ...]

    @property
    def root(self) -> str:
        return self.tree.table

    @property
    def key(self) -> list[str]:
        return list(self.config.key)

    @property
    def definition_hash(self) -> str:
        digest = mapping_definition_hash(self.mapping)
        assert digest is not None, "index_mapping always writes the definition hash"
        return digest

    @property
    def tables(self) -> frozenset[str]:
        """Every table the index reads and capture captures: its root, its relations' tables and
        their join tables, a view's base tables in the view's place (`documents/views.py`)."""
        out = set()
        for node, _ in self.tree.walk():
            if node.depends_on:
                out.update(d.table for d in node.depends_on)
            else:
                out.add(node.table)
            if node.through is not None:
                out.add(node.through.table)
        return frozenset(out)


@dataclass(frozen=True)
class Plan:
    indexes: Mapping[str, IndexPlan]
    full_identity: frozenset[str]
    """Tables (qualified) that need REPLICA IDENTITY FULL: resolve reads old values their default
    identity does not send (see `documents.routes.full_identity`)."""
    old_columns: Mapping[str, frozenset[str]]
    """Per table, the columns resolve reads from its rows (the old ones too), and a root's `routing`
    column, whose old value a routed index's deletes need."""
    matviews: frozenset[str] = frozenset()
    """Materialized views the indexes read: never captured, watched for REFRESH (`capture/refresh.py`)."""

    def index(self, name: str) -> IndexPlan:
        return self.indexes[name]

    def indexes_reading(self, table: str) -> list[str]:
        """The indexes that read `table` (qualified or not)."""
        table = qualify(table)
        return [name for name, plan in self.indexes.items() if table in plan.tables]


    def captured(self, tables: Sequence[str]) -> list[str]:
        """`tables` (the config's `captured_tables()`) without the materialized views, which send no
        changes: a refresh is seen by the catalog watch instead."""
        return [t for t in tables if qualify(t) not in self.matviews]


def materialized_views(config: FlussoConfig, catalog: Catalog) -> frozenset[str]:
    """The materialized views among every table the config names."""
    return frozenset(t for t in config.tables() if (found := catalog.get(t)) is not None
                     and found.kind == "materialized view")


def index_plan(name: str, index: IndexConfig, catalog: Catalog) -> IndexPlan:
    """A materialized view's rows send no changes, so it has no routes of its own: a refresh rebuilds."""
    tree = index_tree(index, catalog)
    routes = [r for r in index_routes(name, index, catalog, tree)
              if (found := catalog.get(r.table)) is None or found.kind != "materialized view"]
    return IndexPlan(name=name, config=index, tree=tree, mapping=index_mapping(index, catalog, tree),
                     routes=tuple(routes))


def make_plan(config: FlussoConfig, catalog: Catalog) -> Plan:
    indexes = {name: index_plan(name, index, catalog) for name, index in config.indexes.items()}
    routes = [r for plan in indexes.values() for r in plan.routes]
    routed = routing_columns(config.indexes)
    return Plan(
        indexes=indexes,
        full_identity=frozenset(full_identity(routes, catalog, routed)),
        old_columns={t: frozenset(c) for t, c in old_columns(routes, routed).items()},
        matviews=materialized_views(config, catalog),
    )
