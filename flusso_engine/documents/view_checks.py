"""What `flusso validate` checks of views (`depends_on:`, `documents/views.py`): each a problem at
its path in the file, with the fix.

A view must say how its rows are found (`key`) and which tables change them (`depends_on`), since
neither the catalog nor logical decoding says so; those tables must be tables, and the columns the
mapping names must exist on both sides. A materialized view needs no `depends_on`: see `views.py`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from ..catalog import Catalog, Table
from ..config import FlussoConfig, RelationConfig, qualify, relation_path
from ..config.views import DependencyConfig
from ..error import Problem
from .checks import edges

_DEPENDS_ON_EXAMPLE = "depends_on: [{table: public.books, key: {id: book_id}}] (base column: view column)"


def _nodes(config: FlussoConfig) -> Iterator[tuple[str, str, Sequence[DependencyConfig], bool]]:
    """Every index root and relation: its path, table, depends_on, and whether it is the root."""
    for name, index in config.indexes.items():
        yield relation_path(name), index.table, index.depends_on, True
    for edge in edges(config):
        yield edge.path, edge.relation.table, edge.relation.depends_on, False
        if edge.through is not None:
            yield f"{edge.path}.through", edge.through, (), False


def view_problems(config: FlussoConfig, catalog: Catalog, relations: Mapping[str, str]) -> list[Problem]:
    """Views without `depends_on`, `depends_on` on a table or a materialized view, and dependencies
    whose table or columns are missing."""
    problems: list[Problem] = []
    for path, name, deps, _ in _nodes(config):
        table = catalog.get(name)
        if table is None:
            continue  # reported as a missing table
        through = path.endswith(".through")
        if table.kind == "materialized view" and deps:
            problems.append(Problem(f"{path}.depends_on", (
                f"{table.qualified} is a materialized view: its rows change only on REFRESH MATERIALIZED VIEW, "
                "which flusso watches for (each refresh rebuilds the indexes that read it), never when the "
                "tables it reads change: remove depends_on"
            )))
        elif table.kind == "view" and through:
            problems.append(Problem(f"{path}.table", (
                f"{table.qualified} is a view: a join table must be a table: join through the table it reads"
            )))
        elif table.kind == "view" and not deps:
            problems.append(Problem(f"{path}.depends_on", (
                f"{table.qualified} is a view: its rows change only through the tables it reads, which flusso "
                f"must capture instead: add {_DEPENDS_ON_EXAMPLE}, one entry per table it reads"
            )))
        elif table.kind == "table" and deps:
            problems.append(Problem(f"{path}.depends_on", (
                f"{table.qualified} is a table: its own changes reach its documents: remove depends_on "
                "(it is for views)"
            )))
        if table.kind == "view":
            problems += _dependency_problems(path, table, deps, catalog, relations)
    return problems


def _dependency_problems(path: str, view: Table, deps: Sequence[DependencyConfig], catalog: Catalog,
                         relations: Mapping[str, str]) -> list[Problem]:
    problems: list[Problem] = []
    for i, dep in enumerate(deps):
        where = f"{path}.depends_on[{i}]"
        base = catalog.get(dep.table)
        if base is None:
            kind = relations.get(qualify(dep.table))
            what = "is not a table" if kind else "does not exist"
            problems.append(Problem(f"{where}.table", (
                f"table {qualify(dep.table)} {what}: name a table {view.qualified} reads"
            )))
        elif base.kind != "table":
            problems.append(Problem(f"{where}.table", (
                f"{base.qualified} is a {base.kind}, whose changes capture cannot see: name the tables it reads"
            )))
        for base_column, view_column in dep.key.items():
            if base is not None and base_column not in base.columns:
                problems.append(Problem(f"{where}.key", (
                    f'column "{base_column}" does not exist in {base.qualified}: map its columns '
                    f"({', '.join(list(base.columns)[:12])}) onto {view.qualified}'s"
                )))
            if view_column not in view.columns:
                problems.append(Problem(f"{where}.key.{base_column}", (
                    f'column "{view_column}" does not exist in the view {view.qualified}: name one of its '
                    f"columns ({', '.join(list(view.columns)[:12])}), or add it to the view's select list"
                )))
    return problems


def view_notes(config: FlussoConfig) -> list[str]:
    """Dependencies mapped onto view columns other than the key the tree needs: their changes find
    the view's current rows, so one that removes a row from the view is not seen (`views.py`)."""
    notes = []
    for name, index in config.indexes.items():
        nodes = [(relation_path(name), index.depends_on, list(index.key))]
        nodes += [(e.path, e.relation.depends_on, list(_child_columns(e.relation))) for e in edges(config)
                  if e.path.startswith(relation_path(name) + ".")]
        for path, deps, needed in nodes:
            for i, dep in enumerate(deps):
                if not needed or not set(needed) <= set(dep.key.values()):
                    notes.append(
                        f"{path}.depends_on[{i}]: {qualify(dep.table)} maps onto {', '.join(dep.key.values())}, "
                        f"not onto {', '.join(needed)}: its changes find the view's current rows, so one that "
                        "takes a row out of the view is not seen; map it onto those columns too if it can")
    return notes


def _child_columns(rel: RelationConfig) -> list[str]:
    """The relation's columns that join it to its parent (`on`'s values, or `through.child`'s)."""
    if rel.through is not None:
        return list(rel.through.child.values())
    return list((rel.on or {}).values())
