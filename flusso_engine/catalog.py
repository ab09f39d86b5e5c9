"""What the database says about the config's tables: columns and their types, keys, replica identity.

Read once at start from `pg_catalog` (one query for all tables), shared by validation, the
mapping's derived types, the builder's default array order and `prepare`'s replica identity.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg

from .config import split_table


@dataclass(frozen=True)
class Column:
    name: str
    type_name: str  # format_type(): "integer", "character varying(200)", "text[]", ...
    type_oid: int
    element_type: str | None  # for arrays, the element's type name (typname), else None
    category: str  # pg_type.typcategory of the column (or of the element, for arrays)
    not_null: bool
    base_type: str = ""  # pg_type.typname of the column (or element), e.g. int4, varchar, timestamptz
    collation_deterministic: bool = True  # false: equal texts may differ (a case-insensitive ICU collation)
    generated: bool = False  # GENERATED ALWAYS AS (...) STORED: pgoutput (PostgreSQL < 18) never sends it


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: dict[str, Column]
    primary_key: list[str]
    unique_keys: list[list[str]]  # each unique index (incl. the primary key) whose columns are all plain
    replica_identity: str  # d(efault), f(ull), n(othing), i(ndex)
    kind: str = "table"  # or "view", "materialized view": read by builds, never captured (`Catalog.views`)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def is_unique(self, columns: Iterable[str]) -> bool:
        cols = set(columns)
        return any(set(k) <= cols for k in self.unique_keys)


@dataclass
class Catalog:
    tables: dict[str, Table] = field(default_factory=dict)  # by qualified name
    views: dict[str, Table] = field(default_factory=dict)  # views and materialized views, by qualified name

    def get(self, name: str) -> Table | None:
        """A table or a view: what builds and validation read (capture iterates `tables` alone)."""
        qualified = ".".join(split_table(name))
        return self.tables.get(qualified) or self.views.get(qualified)


_QUERY = """
SELECT n.nspname, c.relname, c.relreplident, c.relkind, a.attname,
       format_type(a.atttypid, a.atttypmod), a.atttypid, a.attnotnull,
       t.typcategory, et.typname, et.typcategory, t.typname, coalesce(coll.collisdeterministic, true),
       a.attgenerated <> '',
       (SELECT jsonb_agg(jsonb_build_array(i.indisprimary, ARRAY(
            SELECT att.attname::text FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
            JOIN pg_attribute att ON att.attrelid = i.indrelid AND att.attnum = k.attnum
            WHERE k.ord <= i.indnkeyatts  -- INCLUDE columns are carried, not part of the key
            ORDER BY k.ord)))
          FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique AND i.indpred IS NULL
            AND i.indexprs IS NULL AND i.indisvalid)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
LEFT JOIN pg_collation coll ON coll.oid = a.attcollation
WHERE c.relkind IN ('r', 'p', 'v', 'm') AND (n.nspname || '.' || c.relname) = ANY(%s)
ORDER BY n.nspname, c.relname, a.attnum
"""


_KINDS = {"v": "view", "m": "materialized view"}


def read_catalog(conn: psycopg.Connection, tables: Iterable[str]) -> Catalog:
    """Describe the given tables and views (qualified names); one that does not exist is simply absent."""
    names = [".".join(split_table(t)) for t in tables]
    rows = conn.execute(_QUERY, (names,)).fetchall()
    catalog = Catalog()
    by_table: dict[tuple[str, str], dict] = {}
    for (schema, rel, ident, kind, col, fmt, oid, notnull, cat, elem, elemcat, typname, determ, gen, indexes) in rows:
        entry = by_table.setdefault((schema, rel), {"ident": ident, "kind": kind, "columns": {},
                                                    "indexes": indexes or []})
        entry["columns"][col] = Column(
            name=col,
            type_name=fmt,
            type_oid=oid,
            element_type=elem,
            category=elemcat if elem else cat,
            not_null=notnull,
            base_type=elem if elem else typname,
            collation_deterministic=determ,
            generated=gen,
        )
    for (schema, rel), entry in by_table.items():
        primary: list[str] = []
        uniques: list[list[str]] = []
        for idx in entry["indexes"]:
            is_primary, cols = bool(idx[0]), list(idx[1])
            uniques.append(cols)
            if is_primary:
                primary = cols
        kind = _KINDS.get(entry["kind"], "table")
        (catalog.tables if kind == "table" else catalog.views)[f"{schema}.{rel}"] = Table(
            schema=schema,
            name=rel,
            columns=entry["columns"],
            primary_key=primary,
            unique_keys=uniques,
            replica_identity=entry["ident"],
            kind=kind,
        )
    return catalog
