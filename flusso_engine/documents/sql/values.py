"""One field's value as SQL, in the build statement: its source, then `transform`'s replace, mapping
and concat, so that a transform costs nothing per document in Python.

A `sql` field is the operator's expression from the config file (never a value from data), spliced
in as SQL. It must see only its own row: it is evaluated over `(SELECT <alias>.*)`, so that an
unqualified name is the node's column (a many_to_many's join table, or a parent, is never in
scope first); `flusso validate` has checked that every name it uses is one (`documents/field_checks.py`).
"""

from __future__ import annotations

import json

from psycopg import sql

from ...config.fields import PathField, SqlField
from ..shape import Value

ROW = "flusso_row"


def literal(value: object) -> sql.Composable:
    """A constant from the config, quoted by psycopg, with `%` doubled: the build statement takes
    parameters, so a bare `%` in its text would read as a placeholder."""
    return sql.SQL(sql.Literal(value).as_string(None).replace("%", "%%"))


def expression(text: str) -> sql.Composable:
    """An operator's expression (a sql field, a `where`), as SQL (`%` doubled, as in `literal`)."""
    return sql.SQL(text.replace("%", "%%"))


def _text(expr: sql.Composable, is_json: bool) -> sql.Composable:
    """A value's text: a JSON scalar's own text (a string without its quotes), else the cast."""
    if is_json:
        return sql.SQL("(({}) #>> '{{}}')").format(expr)
    return sql.SQL("(({})::text)").format(expr)


def _keys(path: PathField) -> sql.Composable:
    return sql.SQL("{}::text[]").format(literal(path.keys))


def _source(v: Value, alias: str, fields: dict[str, Value], text: bool) -> tuple[sql.Composable, bool]:
    """The value before replace and mapping (as text when `text`), and whether it is json."""
    spec = v.spec
    if isinstance(spec, PathField):
        op = "#>>" if text else "#>"
        expr = sql.SQL("({} {} {})").format(sql.Identifier(alias, spec.column), sql.SQL(op), _keys(spec))
        return expr, not text
    if isinstance(spec, SqlField):
        return own_row(spec.sql, alias), False
    if isinstance(spec, str):
        return sql.Identifier(alias, spec), False
    assert v.concat is not None, "a value without a field is a concat's destination"
    parts = [value_text(fields[name], alias, fields) for name in v.concat.fields]
    return sql.SQL("concat_ws({}, {})").format(literal(v.concat.delimiter), sql.SQL(", ").join(parts)), False


def own_row(text: str, alias: str) -> sql.Composable:
    """An operator's expression (a sql field, a `where`) over the row at `alias` alone."""
    return sql.SQL("(SELECT ({}) FROM (SELECT {}.*) AS {})").format(
        expression(text), sql.Identifier(alias), sql.Identifier(ROW)
    )


def value(v: Value, alias: str, fields: dict[str, Value]) -> tuple[sql.Composable, bool]:
    """The field's final value read from the row at `alias`, and whether it is json."""
    if not v.replace and v.mapping is None:
        return _source(v, alias, fields, text=False)
    expr, is_json = _source(v, alias, fields, text=True)
    expr = _text(expr, is_json)
    for old, new, regex in v.replace:
        if regex:
            expr = sql.SQL("regexp_replace({}, {}, {}, 'g')").format(expr, literal(old), literal(new))
        else:
            expr = sql.SQL("replace({}, {}, {})").format(expr, literal(old), literal(new))
    if v.mapping is None:
        return expr, False
    whens = [
        sql.SQL("WHEN {} = {} THEN {}::json").format(expr, literal(k), literal(json.dumps(x)))
        for k, x in v.mapping.values.items()
    ]
    default = sql.SQL("{}::json").format(literal(json.dumps(v.mapping.default)))
    return sql.SQL("(CASE WHEN {} IS NULL THEN NULL::json {} ELSE {} END)").format(
        expr, sql.SQL(" ").join(whens), default
    ), True


def value_text(v: Value, alias: str, fields: dict[str, Value]) -> sql.Composable:
    """The field's final value as text (what concat joins)."""
    if not v.replace and v.mapping is None and isinstance(v.spec, PathField):
        return _source(v, alias, fields, text=True)[0]
    return _text(*value(v, alias, fields))
