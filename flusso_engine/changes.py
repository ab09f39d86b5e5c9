"""The values that flow through the pipeline: changes, positions, document ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

Position = int
"""A WAL position (LSN) as an integer; positions of successive transactions only grow."""

DocId = str
"""A document's `_id`: the root key's values joined with `|` (see `doc_id`)."""

Op = Literal["insert", "update", "delete", "truncate", "resync", "commit"]
"""`resync`: rows of `table` changed in a way no row change reports (partitions attached, detached or
truncated; a change made under another definition of the table): its indexes are rebuilt."""

Row = dict[str, Any]


class _Unchanged:
    """The type of `UNCHANGED`: a singleton, so `value is UNCHANGED` is the test."""

    __slots__ = ()
    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __reduce__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()
"""An unchanged TOASTed column that the server did not send (its value is whatever it was): a
value of a live change's row, which resolve must not read as a value."""

Value = str | None | _Unchanged
"""One column of a captured row: its text output, None for NULL, or `UNCHANGED`."""


@dataclass(frozen=True, slots=True)
class Change:
    """One row change, or the marker that closes a transaction.

    Data changes carry their transaction's commit LSN (known at its Begin); the `commit`
    marker that follows the last of them carries the commit's *end* LSN, the position that
    may be acknowledged once every change before it is flushed. Snapshot rows are `insert`s
    with position 0 and no marker: a backfill acknowledges nothing.

    `xid` is the transaction's id (32 bits, as pgoutput sends it; 0 for snapshot rows). A
    transaction reaches the slot a moment before it is visible to other sessions' snapshots, so
    the builder waits for these ids to be visible before it reads the rows they changed.
    """

    table: str
    op: Op
    new: Row | None = None
    old: Row | None = None
    position: Position = 0
    xid: int = 0

    @property
    def is_commit(self) -> bool:
        return self.op == "commit"


def commit(position: Position, xid: int = 0) -> Change:
    return Change(table="", op="commit", position=position, xid=xid)


def _key_part(value: Any) -> str:
    if value is None:  # never the id "None": a NULL key has no document (validate refuses them)
        raise ValueError("a document id cannot be made from a NULL key value")
    return value if isinstance(value, str) else str(value)


def escape_key_part(value: Any) -> str:
    return _key_part(value).replace("\\", "\\\\").replace("|", "\\|")


def doc_id(values: tuple[Any, ...] | list[Any]) -> DocId:
    """Join key values into an `_id`, escaping `|` and `\\` inside them with `\\`.

    The values are key texts as pgoutput sends them and `keys.key_text` renders them in SQL (the
    type's output function): every path to an id goes through that one rendering and this join.
    A single-column key is its value's text as it is, so `GET books/_doc/42` works. NULL raises.
    """
    if len(values) == 1:
        return _key_part(values[0])
    return "|".join(escape_key_part(v) for v in values)


def split_doc_id(value: DocId, parts: int) -> list[str]:
    """The inverse of `doc_id` (values come back as text)."""
    if parts == 1:
        return [value]
    out: list[str] = []
    cur: list[str] = []
    it = iter(value)
    for ch in it:
        if ch == "\\":
            cur.append(next(it, ""))
        elif ch == "|":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def lsn_to_int(text: str) -> Position:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def int_to_lsn(value: Position) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"
