"""The backfill snapshot: every key of a root table, page by page, as the text live changes carry."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from psycopg import sql

from ...changes import Change
from ...config import qualify, split_table
from ...keys import key_text
from .base import WalBase, sql_errors

SNAPSHOT_PAGE = 5000


class Snapshot(WalBase):
    """The part of `WalCapture` that reads a table's keys for a backfill."""

    def snapshot(self, table: str, key: Sequence[str]) -> Iterator[Change]:
        """Every row's key, in key order, as `insert`s at position 0.

        Keyset pagination (`WHERE (k1, k2) > (...) ORDER BY k1, k2 LIMIT n`) walks the key's index
        page by page in short statements, so no long transaction pins the database. Only the key
        columns are read, as the text pgoutput would send for them (`keys.key_text`): the builder
        rebuilds each document from the current rows anyway.
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
        with self._sql() as conn:
            last: tuple | None = None
            while True:
                with sql_errors(f"table {qualified}"):
                    if last is None:
                        rows = conn.execute(first, (self._snapshot_page,)).fetchall()
                    else:
                        rows = conn.execute(after, (*last, self._snapshot_page)).fetchall()
                for r in rows:
                    yield Change(qualified, "insert", new=dict(zip(names, r, strict=True)))
                if len(rows) < self._snapshot_page:
                    return
                last = rows[-1]

