"""PGSync's `base_tables` as flusso's `depends_on` (`config/views.py`): each base table's columns
mapped onto the view's.

PGSync names the base tables only; flusso needs to know which view column each base column equals.
The import maps a base table's primary key onto the view's columns of the same names, and says so
in the report; a base table whose key columns the view does not have by name is left for the user
to map (a comment in place and a line in the report).
"""

from __future__ import annotations

from typing import Any

from .infer import Database
from .schema import PgNode
from .writer import Entry


def depends_on(db: Database, node: PgNode, report: Any) -> list[Entry]:
    """The `depends_on` entry of a node whose table is a view (none for a table)."""
    view = db.table(node.qualified)
    if view is None or view.kind != "view":
        return []
    if not node.base_tables:
        what = (f"{node.qualified} is a view and the node lists no base_tables: add depends_on: [{{table: <a "
                "table it reads>, key: {<base column>: <view column>}}] for each table it reads")
        report.not_converted.append(f"{node.path}: {what}")
        return [Entry(None, None, above=[f"not converted: {what}"])]
    deps: list[dict[str, Any]] = []
    lines: list[str] = []
    for given in node.base_tables:
        name = given if "." in given else f"{node.schema}.{given}"
        base = db.table(name)
        key = base.primary_key if base is not None else []
        if base is None or not key or any(c not in view.columns for c in key):
            why = ("is not a table here" if base is None else "has no primary key" if not key else
                   f"has key columns ({', '.join(key)}) the view does not have by name")
            what = f"base table {name} {why}: map its columns onto the view's in depends_on by hand"
            report.not_converted.append(f"{node.path}.base_tables: {what}")
            lines.append(f"not converted: {what}")
            continue
        deps.append({"table": name, "key": {c: c for c in key}})
        report.inferred.append(f"{node.path}.base_tables: {name}: its primary key ({', '.join(key)}) mapped onto "
                               "the view's columns of the same names: check them")
    out = [Entry("depends_on", deps, "PGSync's base_tables: base column -> view column")] if deps else []
    return out + ([Entry(None, None, above=lines)] if lines else [])


def view_key(entries: list[Entry]) -> list[str]:
    """A view's key when PGSync's node gives no primary_key: the view columns its first base table's
    primary key maps onto (the rows a base row identifies), or none."""
    deps = next((e.value for e in entries if e.key == "depends_on"), [])
    return list(deps[0]["key"].values()) if deps else []
