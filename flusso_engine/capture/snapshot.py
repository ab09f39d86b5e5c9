"""The backfill snapshot every capture backend shares: a root table's keys, page by page, as the
text live changes carry (`keys.key_text`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager

import psycopg
from psycopg import sql

from ..changes import Change
from ..config import qualify, split_table
from ..keys import key_text

SNAPSHOT_PAGE = 5000


def keyset_snapshot(
    connect: Callable[[], AbstractContextManager[psycopg.Connection]],
    table: str,
    key: Sequence[str],
    page: int = SNAPSHOT_PAGE,
    errors: Callable[[str], AbstractContextManager[None]] | None = None,
) -> Iterator[Change]:
    """Every row's key, in key order, as `insert`s at position 0.

    Keyset pagination (`WHERE (k1, k2) > (...) ORDER BY k1, k2 LIMIT n`) walks the key's index page
    by page in short statements, so no long transaction pins the database. Only the key columns are
    read, as the text pgoutput would send for them: the builder rebuilds each document from the
    current rows anyway. `connect` opens an autocommit connection with the pinned session settings;
    `errors(what)` turns a database's refusal into the backend's error.
    """
    qualified = qualify(table)
    schema, name = split_table(qualified)
    # Qualified column references: a bare `ORDER BY id` would sort by the output column `id::text`.
    cols = [sql.Identifier(schema, name, k) for k in key]
    names = list(key)
    select_list = key_text(cols)
    order = sql.SQL(", ").join(cols)
    source = sql.Identifier(schema, name)
    first = sql.SQL("SELECT {} FROM {} ORDER BY {} LIMIT %s").format(select_list, source, order)
    after = sql.SQL("SELECT {} FROM {} WHERE ({}) > ({}) ORDER BY {} LIMIT %s").format(
        select_list, source, order, sql.SQL(", ").join(sql.Placeholder() * len(cols)), order
    )
    guard = errors or (lambda _what: _nothing())
    with connect() as conn:
        last: tuple | None = None
        while True:
            with guard(f"table {qualified}"):
                if last is None:
                    rows = conn.execute(first, (page,)).fetchall()
                else:
                    rows = conn.execute(after, (*last, page)).fetchall()
            for r in rows:
                yield Change(qualified, "insert", new=dict(zip(names, r, strict=True)))
            if len(rows) < page:
                return
            last = rows[-1]


class _nothing(AbstractContextManager[None]):
    def __exit__(self, *exc: object) -> None:
        return None
