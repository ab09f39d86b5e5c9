"""One poll of the change log: the statement, and its rows as `Change`s grouped by transaction.

Why snapshots and not a cursor on `id`: a change-log row becomes visible when its transaction
commits, not in `id` order, so "every id above the last one seen" loses the rows of a transaction
that was still open when a later one's rows were read. Instead poll k runs in one REPEATABLE READ
transaction whose snapshot is S_k, and returns the rows whose transaction is visible in S_k and was
not visible in S_(k-1) (the previous poll's snapshot). Every committed transaction T is visible in
some first snapshot S_k and in every later one, so its rows are returned exactly once, by poll k,
however long T stayed open; a transaction that rolled back is never visible, and neither are its
rows. `xid >= pg_snapshot_xmin(S_(k-1))` is implied (a transaction below the previous snapshot's
xmin had finished before it, so it was visible in it or rolled back) and lets the `(slot, xid, id)`
index do the work: one range scan per poll, however many tables.

Positions: each poll reads `pg_current_wal_lsn()` in the statement that takes its snapshot, and a
poll is only delivered when that position P_k is above the last delivered one (otherwise it is
taken again later: acknowledgements and writers move the WAL). So positions are WAL positions this
server has written, increasing, and comparable with the builder's versions and everything in
`slotstate.py` (whose `current` is the same function: no later check can find the server behind a
position polling handed out). Inside a poll, each transaction's changes are followed by a commit
marker; only the last one carries P_k, the others the previous poll's position (already
delivered): an acknowledgement of P_k means the whole poll is durable, and the cursor moves to S_k.

Order inside a poll: transactions that ran a TRUNCATE come first, then by xid. Documents are built
from the current rows, so the order of transactions only matters for a truncate, whose handling
empties or rebuilds an index: a transaction that committed after the truncate must be written after
it, and one that committed before has no rows left to lose.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from psycopg import sql

from ...changes import Change, Op, Position, commit
from ...config import split_table

_OPS: dict[str, Op] = {"I": "insert", "U": "update", "D": "delete", "T": "truncate"}
_EPOCH = 1 << 32


def _render(side: str, columns: Mapping[str, Sequence[str]]) -> sql.Composable:
    """The stored jsonb of `side` (old or new) back as each column's text under the pinned session:
    `jsonb_populate_record` reverses `to_jsonb` for every type, and `concat` is its output function."""
    stored = sql.SQL("c.") + sql.Identifier(side)
    cases = []
    for table, cols in columns.items():
        pairs = sql.SQL(", ").join(
            sql.SQL("{name}, CASE WHEN r.{col} IS NULL THEN NULL ELSE concat(r.{col}) END").format(
                name=sql.Literal(c), col=sql.Identifier(c))
            for c in cols
        )
        cases.append(sql.SQL("WHEN {t} THEN (SELECT jsonb_build_object({pairs}) FROM "
                             "jsonb_populate_record(NULL::{rel}, {stored}) AS r)").format(
            t=sql.Literal(table), pairs=pairs, rel=sql.Identifier(*split_table(table)), stored=stored))
    if not cases:  # no table to capture (materialized views alone): the log stays empty
        return sql.SQL("NULL::jsonb")
    return sql.SQL("CASE WHEN {stored} IS NULL THEN NULL ELSE CASE c.tbl {cases} END END").format(
        stored=stored, cases=sql.SQL(" ").join(cases))


def poll_statement(changes: sql.Composable, columns: Mapping[str, Sequence[str]]) -> sql.Composed:
    """The rows of the transactions visible now and not in `%(prev)s`, grouped by transaction."""
    return sql.SQL(
        "SELECT c.xid::text, c.tbl, c.op, {old}, {new} FROM {changes} AS c "
        "WHERE c.slot = %(slot)s AND c.xid >= pg_snapshot_xmin(%(prev)s::pg_snapshot) "
        "AND NOT pg_visible_in_snapshot(c.xid, %(prev)s::pg_snapshot) "
        "ORDER BY bool_or(c.op = 'T') OVER (PARTITION BY c.xid) DESC, c.xid, c.id"
    ).format(old=_render("old", columns), new=_render("new", columns), changes=changes)


def changes_of(rows: Iterable[tuple], position: Position, before: Position,
               tables: Iterable[str]) -> Iterator[Change]:
    """A poll's rows as changes at `position`, each transaction closed by a commit marker: the last
    one at `position`, the others at `before` (a position already delivered; see the module doc).
    Rows of tables the config does not read (a trigger left by another config) are skipped."""
    known = set(tables)
    current: int | None = None
    for xid_text, table, op, old, new in rows:
        xid = int(xid_text)
        if current is not None and xid != current:
            yield commit(before, current % _EPOCH)
        current = xid
        if table not in known:
            continue
        yield Change(table=table, op=_OPS[op], old=old, new=new, position=position, xid=xid % _EPOCH)
    if current is not None:
        yield commit(position, current % _EPOCH)
