"""What PGSync infers from the database, asked of the catalog: the joins between a node and its parent
(from foreign keys, or the schema's `foreign_key`), their direction, and so flusso's relation type.

PGSync joins a child to its parent on every foreign key between the two tables, whichever way it
points (pgsync/querybuilder.py `get_foreign_keys`), and knows only `one_to_one` and `one_to_many`.
flusso writes the join down (`on`, `through`) and names the direction: a key of the parent pointing
at the child's key is `many_to_one` (or `one_to_one` when the parent's side is unique too); the
child's column pointing at the parent is `one_to_one` when it is unique in the child, else
`one_to_many`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from ..catalog import Catalog, Table, read_catalog


@dataclass(frozen=True)
class ForeignKey:
    table: str  # qualified: the referencing table
    columns: tuple[str, ...]
    references: str  # qualified: the referenced table
    referenced: tuple[str, ...]


@dataclass
class Database:
    """The catalog of the schema's tables, their foreign keys, and which names are views."""

    catalog: Catalog
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)  # qualified name: relkind (r, p, v, m, f)
    conn: psycopg.Connection | None = None  # open while converting: JSON paths are typed from samples

    def json_mapping(self, table: str, column: str, keys: list[str]) -> dict[str, Any] | None:
        """A mapping for the values at `keys` in a json/jsonb column, from up to 1,000 rows: PGSync leaves
        it to OpenSearch's dynamic mapping, flusso maps a path keyword unless told (which an object
        or a number in it would not be). None: strings (keyword is right), or nothing to go by."""
        if self.conn is None:
            return None
        schema, name = table.split(".", 1)
        query = sql.SQL(
            "SELECT jsonb_typeof(v), bool_and(jsonb_typeof(v) <> 'number' OR (v #>> '{{}}')::numeric % 1 = 0) "
            "FROM (SELECT to_jsonb(c) #> {keys} AS v FROM (SELECT {col} AS c FROM {table} LIMIT 1000) s) x "
            "WHERE jsonb_typeof(v) IS DISTINCT FROM 'null' AND v IS NOT NULL GROUP BY 1"
        ).format(keys=sql.Literal(keys), col=sql.Identifier(column), table=sql.Identifier(schema, name))
        kinds = dict(self.conn.execute(query).fetchall())
        if "object" in kinds or "array" in kinds:
            return {"type": "object", "enabled": False}  # as flusso maps a json column: kept, not indexed
        if set(kinds) == {"number"}:
            return {"type": "long" if kinds["number"] else "double"}
        if set(kinds) == {"boolean"}:
            return {"type": "boolean"}
        return None

    def table(self, name: str) -> Table | None:
        return self.catalog.get(name)

    def between(self, source: str, target: str) -> list[ForeignKey]:
        """The foreign keys of `source` that reference `target`."""
        return [fk for fk in self.foreign_keys if fk.table == source and fk.references == target]


_FOREIGN_KEYS = """
SELECT cn.nspname || '.' || c.relname,
       ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY u(n, o)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.o),
       rn.nspname || '.' || r.relname,
       ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY u(n, o)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.o)
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class r ON r.oid = k.confrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE k.contype = 'f' AND (cn.nspname || '.' || c.relname) = ANY(%(t)s)
  AND (rn.nspname || '.' || r.relname) = ANY(%(t)s)
ORDER BY 1, k.conname
"""

_KINDS = """
SELECT n.nspname || '.' || c.relname, c.relkind::text FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE (n.nspname || '.' || c.relname) = ANY(%s)
"""


def read_database(conn: psycopg.Connection, tables: Iterable[str]) -> Database:
    names = sorted(set(tables))
    fks = [ForeignKey(t, tuple(c), r, tuple(rc)) for t, c, r, rc in conn.execute(_FOREIGN_KEYS, {"t": names})]
    kinds = dict(conn.execute(_KINDS, (names,)).fetchall())
    return Database(read_catalog(conn, names), fks, kinds)


@dataclass
class Join:
    """How a node joins its parent, in flusso's words; `notes` say what was chosen and why."""

    type: str  # flusso's: many_to_one, one_to_one, one_to_many, many_to_many
    on: dict[str, str] | None = None
    through: dict | None = None
    notes: list[str] = field(default_factory=list)
    differs: list[str] = field(default_factory=list)  # how its documents differ from PGSync's


def direct_join(db: Database, parent: str, child: str, pg_type: str,
                foreign_key: dict[str, list[str]] | None) -> Join | str:
    """The join of `child` below `parent` without a through table, or why there is none."""
    if foreign_key:
        pairs = list(zip(foreign_key["parent"], foreign_key["child"], strict=False))
        origin = "the schema's foreign_key"
    else:
        up = db.between(child, parent)  # child.fk -> parent
        down = db.between(parent, child) if parent != child else []  # parent.fk -> child (a self-reference: the
        # child row points at its parent, as in PGSync's examples/node)
        found = [(fk, "up") for fk in up] + [(fk, "down") for fk in down]
        if not found:
            return (f"no foreign key between {parent} and {child}: add one, or give the PGSync node "
                    'relationship.foreign_key {"parent": [...], "child": [...]}, and import again')
        fk, way = found[0]
        pairs = (list(zip(fk.referenced, fk.columns, strict=True)) if way == "up"
                 else list(zip(fk.columns, fk.referenced, strict=True)))
        origin = f"the foreign key {fk.table}({', '.join(fk.columns)}) -> {fk.references}"
        notes = [f"joined by {origin}"]
        if len(found) > 1:
            others = ", ".join(f"{f.table}({', '.join(f.columns)})" for f, _ in found[1:])
            notes.append(f"{len(found)} foreign keys join these tables; took the first (others: {others}); "
                         "PGSync ANDs them all: check `on`, or give PGSync's foreign_key")
    if foreign_key:
        notes = [f"joined by {origin}"]
    on = dict(pairs)
    join = Join(type="one_to_many", on=on, notes=notes)
    parent_t, child_t = db.table(parent), db.table(child)
    child_unique = child_t is not None and child_t.is_unique(on.values())
    parent_unique = parent_t is not None and parent_t.is_unique(on.keys())
    if pg_type == "one_to_many":
        return join
    if child_unique:
        join.type = "one_to_one" if parent_unique else "many_to_one"
        return join
    join.differs.append(
        f"PGSync's one_to_one over {', '.join(on.values())}, not unique in {child}: PGSync makes one object "
        "of one of the matching rows (each a write of the same document, the last wins); flusso makes an "
        "array of them all (one_to_many)")
    return join


def through_join(db: Database, parent: str, child: str, through: str, pg_type: str) -> Join | str:
    """The many_to_many of `child` below `parent` through `through`, from its two foreign keys."""
    if db.table(through) is None:
        return f"the through table {through} is not in the database: create it, or fix through_tables"
    to_parent, to_child = db.between(through, parent), db.between(through, child)
    if parent == child and len(to_parent) >= 2:
        to_parent, to_child = to_parent[:1], to_parent[1:2]
    if not to_parent or not to_child:
        missing = parent if not to_parent else child
        return (f"{through} has no foreign key to {missing}: add it (PGSync needs it too), then import again")
    up, down = to_parent[0], to_child[0]
    join = Join(
        type="many_to_many",
        through={"table": through, "parent": dict(zip(up.referenced, up.columns, strict=True)),
                 "child": dict(zip(down.columns, down.referenced, strict=True))},
        notes=[f"through {through}, by its foreign keys to {parent} and {child}"],
    )
    if len(to_parent) > 1 or len(to_child) > 1:
        join.notes.append(f"{through} has several foreign keys to these tables; took the first of each: check")
    if pg_type == "one_to_one":
        join.differs.append("PGSync's one_to_one through a table makes one object; flusso's many_to_many makes "
                            "an array (of at most one element if the through table allows one row per parent)")
    return join
