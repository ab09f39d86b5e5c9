"""Document ids: one rendering of key values, whatever path a change takes.

A root row reaches an `_id` on four paths: the backfill's snapshot, the build statement, resolve's
upward queries, and a live change from the slot. Live changes carry what pgoutput sends: each
value's *output function* (`boolout` gives `t`, `bpcharout` keeps char(n)'s padding, `inet_out`
leaves out a host's `/32`). So that is the canonical text of a key value on every path: in SQL it
is `concat(col)` (concat takes "any" and renders each argument with its type's output function;
`col::text` does not for bool, char(n), inet and cidr, whose casts to text are functions of their
own; `format('%s', col)` would do as well, but a `%` cannot pass through psycopg's placeholders),
and `doc_id` joins those texts.

Some output functions read session settings (timestamptz and `TimeZone`, dates and `DateStyle`,
intervals and `IntervalStyle`, floats and `extra_float_digits`, bytea and `bytea_output`), so every
connection flusso opens, the replication connection included (pgoutput renders in the walsender,
with that session's settings), pins them (`SESSION`): the text of a value is then the same in every
session whatever the server's, database's or role's defaults. This applies to the documents too:
their timestamptz values come out in UTC (`2024-05-01T12:00:00+00:00`), whatever the server's
TimeZone, and their intervals in the `postgres` style.

Only key types whose text is one value's alone are supported (`KEY_TYPES`); `key_type_problem` says
why the others are refused, for `flusso validate`.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql

from .catalog import Column

SESSION: dict[str, str] = {
    "TimeZone": "UTC",
    "DateStyle": "ISO,YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}
"""The settings that change output functions, pinned on every connection (no value has a space,
so they pass through libpq's `options` as they are)."""

_INTEGERS = frozenset({"int2", "int4", "int8"})
KEY_TYPES = _INTEGERS | {
    "numeric", "text", "varchar", "bpchar", "uuid", "bool", "date", "time", "timestamp", "timestamptz",
    "interval", "inet", "cidr", "macaddr",
}
"""Supported key column types (pg_type.typname), beside enums. Each has an output function that
depends on the value alone, once `SESSION` is pinned."""

# Equal values of these types (same type and modifier) always print the same. Not numeric without a
# scale (1.5 = 1.50), interval ('1 day' = '24:00:00'), nor text under a nondeterministic collation.
_EQUAL_PRINTS_EQUAL = KEY_TYPES - {"numeric", "interval"}

_REFUSED = {  # category or type name: why its text is no id
    "float4": "a floating-point value is approximate: 0 and -0 are equal but print differently",
    "float8": "a floating-point value is approximate: 0 and -0 are equal but print differently",
    "money": "money prints by the server's lc_monetary setting",
    "bytea": "binary values print as escaped hex, not a readable id",
    "json": "json has no equality, so it cannot identify a row",
    "jsonb": "a JSON document is not a scalar id (and its text grows with it)",
    "A": "an array prints as a literal ({1,2}) that does not identify one value",
    "R": "a range prints as a literal ([1,5)) whose bounds are not one value",
    "G": "a geometric value prints with floating-point coordinates",
    "C": "a composite value prints as a row literal ((1,x)) that does not identify one value",
}
KEY_FIX = (
    "use a NOT NULL column of a supported type with a unique index as the key instead "
    "(integers, numeric, text, varchar, char(n), uuid, boolean, date, time, timestamp, timestamptz, "
    "interval, inet, cidr, macaddr or an enum), or several such columns as a composite key"
)


def conninfo(dsn: str, **extra: object) -> str:
    """`dsn` with `SESSION` added to its libpq `options` (after the DSN's own, so that ours win) and
    `extra` parameters the DSN does not set itself."""
    given = psycopg.conninfo.conninfo_to_dict(dsn)
    pinned = " ".join(f"-c {name}={value}" for name, value in SESSION.items())
    options = f"{given['options']} {pinned}" if given.get("options") else pinned
    defaults = {k: v for k, v in extra.items() if k not in given}
    return psycopg.conninfo.make_conninfo(dsn, options=options, **defaults)


def pin_session(conn: psycopg.Connection) -> None:
    """Pin `SESSION` on a connection opened by someone else's function (no `options` of ours)."""
    settings = sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, false)").format(sql.Literal(name), sql.Literal(value))
        for name, value in SESSION.items()
    )
    conn.execute(sql.SQL("SELECT {}").format(settings))


def key_text(columns: Sequence[sql.Composable]) -> sql.Composable:
    """The canonical text of each key column, as a select list: its output function's, NULL kept
    NULL (concat() would turn it into '', which a real empty key would collide with)."""
    return sql.SQL(", ").join(
        sql.SQL("CASE WHEN {c} IS NULL THEN NULL ELSE concat({c}) END").format(c=c) for c in columns
    )


def key_type_problem(column: Column) -> str | None:
    """Why `column`'s type cannot be part of a document id, or None when it can (see `KEY_FIX`)."""
    if column.element_type is None and (column.base_type in KEY_TYPES or column.category == "E"):
        return None
    return (
        _REFUSED.get(column.base_type)
        or _REFUSED.get("A" if column.element_type is not None else column.category)
        or "flusso cannot tell whether equal values of this type always print the same"
    )


def same_text(a: Column, b: Column) -> bool:
    """Whether a value of `a` prints exactly as the equal value of `b` does, so that one can stand
    for the other in an id without a query: integers of any width, or the same type and modifier
    of a type whose equal values always print equally, under a deterministic collation."""
    if not (a.collation_deterministic and b.collation_deterministic):
        return False
    if a.element_type is not None or b.element_type is not None:
        return False
    if a.base_type in _INTEGERS and b.base_type in _INTEGERS:
        return True
    if a.base_type != b.base_type or a.type_name != b.type_name:
        return False
    if a.base_type in ("numeric", "bpchar"):
        # numeric(p,s) rounds both sides to one scale, char(n) pads both to one width; without a
        # modifier 1.5 = 1.50 and 'ab' = 'ab ' print differently
        return a.type_name not in ("numeric", "bpchar")
    return a.base_type in _EQUAL_PRINTS_EQUAL or a.category == "E"
