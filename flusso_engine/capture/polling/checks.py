"""What `flusso validate` checks for `capture: polling`: what installing triggers and a change log
needs (the TRIGGER privilege or ownership on each table, CREATE on flusso's schema or, before it
exists, on the database), instead of `wal_level` and `REPLICATION`; and what `run` will set up."""

from __future__ import annotations

import psycopg

from ...catalog import Catalog
from ...config import FlussoConfig
from ...documents.checks import first_paths, sql_name, sql_table
from ...error import Problem
from .. import Findings
from .install import trigger_names

_ROLE = """
SELECT current_user, current_database(), r.rolsuper, has_database_privilege(current_database(), 'CREATE'),
       n.oid IS NOT NULL, CASE WHEN n.oid IS NULL THEN NULL ELSE has_schema_privilege(n.oid, 'CREATE') END,
       CASE WHEN n.oid IS NULL THEN NULL ELSE pg_has_role(n.nspowner, 'MEMBER') END
FROM pg_roles r LEFT JOIN pg_namespace n ON n.nspname = %s WHERE r.rolname = current_user
"""
_TABLES = """
SELECT n.nspname || '.' || c.relname, pg_has_role(c.relowner, 'MEMBER'), has_table_privilege(c.oid, 'TRIGGER'),
       EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = ANY(%s) AND t.tgenabled = 'A')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname || '.' || c.relname = ANY(%s)
"""


def checks(config: FlussoConfig, conn: psycopg.Connection, catalog: Catalog) -> Findings:
    """The polling backend's checks against the server behind `conn` (read-only queries)."""
    found = Findings()
    source = config.source
    schema = source.polling_schema
    row = conn.execute(_ROLE, (schema,)).fetchone()
    assert row is not None
    user, database, superuser, create_db, schema_exists, create_schema, owns_schema = row
    if schema_exists and not (superuser or create_schema or owns_schema):
        found.problems.append(Problem(
            "source.polling_schema",
            f'role "{user}" may not create objects in schema {sql_name(schema)}, where capture: polling keeps its '
            f"change log: GRANT CREATE ON SCHEMA {sql_name(schema)} TO {sql_name(user)}; or set "
            "source.polling_schema to a schema it may create in"))
    elif not schema_exists and not (superuser or create_db):
        found.problems.append(Problem(
            "source.polling_schema",
            f'schema {sql_name(schema)} does not exist and role "{user}" may not create it: '
            f"GRANT CREATE ON DATABASE {sql_name(database)} TO {sql_name(user)}, or create it beforehand "
            f"(CREATE SCHEMA {sql_name(schema)} AUTHORIZATION {sql_name(user)})"))
    elif not schema_exists:
        found.notes.append(f"`flusso run` will create schema {sql_name(schema)} for the change log and cursor of "
                           f"slot {source.slot}")
    paths = first_paths(config)
    tables = sorted(catalog.tables)
    names = list(trigger_names(source.slot))
    missing = []
    for table, owned, trigger, installed in conn.execute(_TABLES, (names, tables)).fetchall():
        if not (superuser or owned or trigger):
            found.problems.append(Problem(
                paths.get(table, "source"),
                f'role "{user}" may not create triggers on {sql_table(table)}, which capture: polling needs: '
                f"GRANT TRIGGER ON {sql_table(table)} TO {sql_name(user)} (or have the table's owner run flusso)"))
        elif not installed:
            missing.append(table)
    if missing:
        found.notes.append(f"`flusso run` will create the triggers {names[0]} and {names[1]} on "
                           + ", ".join(sql_table(t) for t in missing))
    return found
