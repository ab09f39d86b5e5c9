"""PGSync's `base_tables` as flusso's `depends_on` (`config/views.py`): each base table's columns
mapped onto the view's.

PGSync names the base tables only; flusso needs to know which view column each base column equals.
Names are no guide (a view of books joined to publishers has the book's `id`, not the publisher's),
so the import asks the view's own definition: each output column that is a plain column of a
table carries that table and column in the rewrite rule's target list (`resorigtbl`,
`resorigcol`). A base table's primary key is mapped onto the view columns taken from it; a base
table whose key the view does not select is left for the user to map (a comment in place and a
line in the report), as is every base table when the definition cannot be read.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

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
    origins = lineage(db.conn, node.qualified) if db.conn is not None else {}
    for given in node.base_tables:
        name = given if "." in given else f"{node.schema}.{given}"
        base = db.table(name)
        key = base.primary_key if base is not None else []
        onto = {c: origins.get((name, c)) for c in key}
        if base is None or not key or None in onto.values():
            why = ("is not a table here" if base is None else "has no primary key" if not key else
                   f"has key columns ({', '.join(key)}) the view does not select as they are")
            what = f"base table {name} {why}: map its columns onto the view's in depends_on by hand"
            report.not_converted.append(f"{node.path}.base_tables: {what}")
            lines.append(f"not converted: {what}")
            continue
        deps.append({"table": name, "key": onto})
        report.inferred.append(f"{node.path}.base_tables: {name}: its primary key ({', '.join(key)}) mapped onto "
                               "the view columns selected from it")
    out = [Entry("depends_on", deps, "PGSync's base_tables: base column -> view column")] if deps else []
    return out + ([Entry(None, None, above=lines)] if lines else [])


_TARGET = re.compile(r":resname (\S+) :ressortgroupref \d+ :resorigtbl (\d+) :resorigcol (\d+)")
_ORIGINS = """
SELECT ev_action::text FROM pg_rewrite WHERE ev_class = %s::regclass AND rulename = '_RETURN'
"""
_COLUMNS = """
SELECT a.attrelid::int, a.attnum::int, n.nspname || '.' || c.relname, a.attname::text
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE (a.attrelid, a.attnum) IN (SELECT * FROM unnest(%s::int[], %s::int[]))
"""


def lineage(conn: psycopg.Connection, view: str) -> dict[tuple[str, str], str]:
    """(table, column) -> the view column that selects it as it is. A name the rule's text gives
    several origins (a subquery's column of the same name) is left out: better unmapped than wrong."""
    row = conn.execute(_ORIGINS, (view,)).fetchone()
    if row is None:
        return {}
    seen: dict[str, set[tuple[int, int]]] = {}
    for name, table, column in _TARGET.findall(row[0]):
        if int(table):
            seen.setdefault(name, set()).add((int(table), int(column)))
    one = {name: next(iter(o)) for name, o in seen.items() if len(o) == 1}
    if not one:
        return {}
    oids, nums = zip(*one.values(), strict=True)
    names = {(t, n): (qualified, col) for t, n, qualified, col in conn.execute(_COLUMNS, (list(oids), list(nums)))}
    return {names[o]: view_column for view_column, o in one.items() if o in names}


def view_key(entries: list[Entry]) -> list[str]:
    """A view's key when PGSync's node gives no primary_key: the view columns its first base table's
    primary key maps onto (the rows a base row identifies), or none."""
    deps = next((e.value for e in entries if e.key == "depends_on"), [])
    return list(deps[0]["key"].values()) if deps else []
