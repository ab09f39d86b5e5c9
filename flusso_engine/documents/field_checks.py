"""What `flusso validate` checks of path and sql fields: their columns, and each expression run live.

An expression is the operator's SQL: only PostgreSQL can say whether it parses and names columns of
its table. Each is prepared as `SELECT (<expr>) FROM <table> LIMIT 0` in a read-only transaction that
is rolled back, so validation writes nothing whatever it holds; its error becomes a problem at the
field's path. The table alone is in scope there, as in the build (`sql/values.py`), so a name that
is no column of it (a parent's, a join table's) is refused here rather than read from elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
from psycopg import sql

from ..catalog import Catalog, Table
from ..config import FlussoConfig, qualify, relation_path, split_table
from ..config.fields import PathField, SqlField
from ..error import Problem
from .checks import edges

_JSON = frozenset({"json", "jsonb"})


def _nodes(config: FlussoConfig) -> Iterator[tuple[str, str, Mapping[str, Any], str | None]]:
    """(path in the file, qualified table, fields, where) of every index and relation."""
    for name, index in config.indexes.items():
        yield relation_path(name), qualify(index.table), index.fields, index.where
    for edge in edges(config):
        yield edge.path, edge.table, edge.relation.fields, edge.relation.where


def path_problems(config: FlussoConfig, catalog: Catalog) -> list[Problem]:
    """A path's column must exist and hold json or jsonb (the missing column is `checks.py`'s)."""
    problems = []
    for base, name, fields, _ in _nodes(config):
        table = catalog.get(name)
        if table is None:
            continue
        for field, spec in fields.items():
            if not isinstance(spec, PathField) or spec.column not in table.columns:
                continue
            column = table.columns[spec.column]
            if column.base_type not in _JSON or column.element_type is not None:
                problems.append(Problem(f"{base}.fields.{field}.path", (
                    f"{table.qualified}.{spec.column} is {column.type_name}, not json or jsonb, so it has "
                    f"no keys to follow: make it a column field ({field}: {spec.column}), or read it with "
                    "sql: and give its type"
                )))
    return problems


def expression_problems(config: FlussoConfig, conn: psycopg.Connection, catalog: Catalog) -> list[Problem]:
    """Every sql field and `where` prepared against its table, in a read-only transaction rolled back."""
    problems = []
    for base, name, fields, where in _nodes(config):
        table = catalog.get(name)
        if table is None:
            continue
        for field, spec in fields.items():
            if isinstance(spec, SqlField):
                error = _try(conn, table, spec.sql)
                if error is not None:
                    problems.append(Problem(f"{base}.fields.{field}", _message(table, spec.sql, error)))
        if where is not None and (error := _try(conn, table, where, condition=True)) is not None:
            problems.append(Problem(f"{base}.where", _message(table, where, error, "condition")))
    return problems


def _try(conn: psycopg.Connection, table: Table, expression: str, condition: bool = False) -> str | None:
    """PostgreSQL's error for the expression (a condition: in WHERE, so it must be boolean) over the
    table's row, or None when it runs."""
    text = sql.SQL(expression.replace("%", "%%"))
    # a field's expression in WHERE too: PostgreSQL refuses aggregates, window and set-returning
    # functions there, which would read more than the one row the build gives it
    query = sql.SQL("SELECT 1 FROM {} WHERE ({}) LIMIT %s" if condition
                    else "SELECT ({1}) FROM {0} WHERE ({1}) IS NULL LIMIT %s")
    query = query.format(sql.Identifier(*split_table(table.qualified)), text)
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET LOCAL transaction_read_only = on")
            # a parameter makes it one statement (extended protocol): a `;` cannot start another
            conn.execute(query, (0,))
    except psycopg.errors.QueryCanceled:
        raise
    except psycopg.Error as err:
        message = err.diag.message_primary or str(err).splitlines()[0]
        if "not allowed in WHERE" in message and not condition:
            return message.replace(" in WHERE", "") + ": an expression reads its own row alone"
        return message
    return None


def _message(table: Table, expression: str, error: str, kind: str = "expression") -> str:
    shown = ", ".join(list(table.columns)[:12]) + (", ..." if len(table.columns) > 12 else "")
    return (
        f'the {kind} "{expression}" does not run on {table.qualified} ({error}): write a SQL '
        f"{kind} over its own columns ({shown})"
    )
