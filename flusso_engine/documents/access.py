"""What the connected role may read (`flusso validate`): SELECT on every table the config reads and
USAGE on its schema, and the database's tables and views (for "did you mean")."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from ..catalog import Catalog
from ..config import FlussoConfig, split_table
from ..error import Problem
from .checks import first_paths, sql_name, sql_table


@dataclass(frozen=True)
class Access:
    """What the connected role may read, and what the database holds, for the checks below."""

    user: str
    superuser: bool
    readable: dict[str, bool] = field(default_factory=dict)  # SELECT on the table and USAGE on its schema
    relations: dict[str, str] = field(default_factory=dict)  # every table and view: "table" | "view"


_ROLE = "SELECT current_user, r.rolsuper FROM pg_roles r WHERE r.rolname = current_user"
_READABLE = """
SELECT n.nspname || '.' || c.relname,
       has_table_privilege(c.oid, 'SELECT') AND has_schema_privilege(n.oid, 'USAGE')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm') AND n.nspname || '.' || c.relname = ANY(%s)
"""
_RELATIONS = """
SELECT n.nspname || '.' || c.relname, CASE WHEN c.relkind IN ('r', 'p') THEN 'table' ELSE 'view' END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY n.nspname = 'public' DESC, 1
"""


def read_access(conn: psycopg.Connection, catalog: Catalog) -> Access:
    """The role, its SELECT/USAGE on the config's existing tables, and every table and view (read-only)."""
    row = conn.execute(_ROLE).fetchone()
    assert row is not None  # current_user is always a role
    readable = dict(conn.execute(_READABLE, ([*catalog.tables, *catalog.views],)).fetchall())
    relations = dict(conn.execute(_RELATIONS).fetchall())
    return Access(user=row[0], superuser=row[1], readable=readable, relations=relations)


def access_problems(config: FlussoConfig, access: Access) -> list[Problem]:
    """SELECT on every table, and USAGE on its schema: snapshots and builds read them."""
    problems = []
    for name, path in first_paths(config).items():
        readable = access.readable.get(name)
        if readable is not None and not readable and not access.superuser:
            schema = split_table(name)[0]
            problems.append(
                Problem(
                    path,
                    f'role "{access.user}" may not read {name}: run GRANT SELECT ON {sql_table(name)} TO '
                    f"{sql_name(access.user)} (and GRANT USAGE ON SCHEMA {sql_name(schema)} TO "
                    f"{sql_name(access.user)})",
                )
            )
    return problems
