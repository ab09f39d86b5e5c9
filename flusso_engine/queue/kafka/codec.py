"""The Kafka message format of a `Change`: versioned, compact, and readable with any console consumer.

Why JSON and not a binary format: every value of a captured row is already text (its type's output
function) or NULL, so a binary encoding would save little beyond the framing, while JSON lets a user
read the topic with `kafka-console-consumer` and needs no schema registry. Compactness comes from
the shape: one array, one-letter ops, no field names outside the rows, no whitespace, and the
producer's batch compression (lz4) over what repeats between messages (table and column names).

Version 1, the message's value (UTF-8 JSON):

    [1, op, table, position, xid, new, old]

- `op`: `i` insert, `u` update, `d` delete, `t` truncate, `r` resync, `c` commit marker.
- `table`: the qualified table ("public.book"; "" for a commit marker).
- `position`: the WAL position as an integer (a data change's commit LSN, a commit marker's end LSN).
- `xid`: the transaction id (32 bits; 0 for none).
- `new`, `old`: the row images, `{"column": text}`, NULL as `null`, an unchanged TOASTed value
  the server did not send (`UNCHANGED`) as `false` (no column's text is ever a boolean); an absent
  image is `null`, and trailing absent images are left out: `[1,"i","public.book",23612928,741,{"id":"1"}]`.

A reader refuses a version it does not know, naming it (the fix: run every role on the same flusso).

The message's key is `table` NUL `row key` (`message_key`): NUL is in no identifier and no text
value, so two rows never share a key, and Kafka's partitioner keeps one row's changes in one
partition, in order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ...changes import UNCHANGED, Change, Op, Row, doc_id

VERSION: Final = 1

_OPS: Final[dict[str, str]] = {
    "insert": "i", "update": "u", "delete": "d", "truncate": "t", "resync": "r", "commit": "c",
}
_NAMES: Final[dict[str, Op]] = {v: k for k, v in _OPS.items()}  # type: ignore[misc]

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


class FormatError(ValueError):
    """A message that is not a flusso change of a version this reader knows."""


def _row_out(row: Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {name: (False if value is UNCHANGED else value) for name, value in row.items()}


def _row_in(raw: Any, what: str) -> Row | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise FormatError(f"its {what} row is {type(raw).__name__}, not an object")
    row: Row = {}
    for name, value in raw.items():
        if value is False:
            row[name] = UNCHANGED
        elif value is None or isinstance(value, str):
            row[name] = value
        else:
            raise FormatError(f"column {name!r} of its {what} row is {value!r}: a text, null or false is expected")
    return row


def encode(change: Change) -> bytes:
    """The message value of one change (version 1)."""
    fields: list[Any] = [VERSION, _OPS[change.op], change.table, change.position, change.xid,
                         _row_out(change.new), _row_out(change.old)]
    while fields[-1] is None and len(fields) > 5:
        fields.pop()
    return _encoder.encode(fields).encode("utf-8")


def decode(value: bytes | str) -> Change:
    """The change of a message value; a FormatError says what is wrong with it."""
    try:
        raw = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FormatError(f"it is not UTF-8 JSON ({err})") from err
    if not isinstance(raw, list) or not raw or not isinstance(raw[0], int) or isinstance(raw[0], bool):
        raise FormatError("it is not a versioned flusso change (a JSON array whose first item is its version)")
    if raw[0] != VERSION:
        raise FormatError(f"it is in format version {raw[0]}, and this flusso reads version {VERSION} only: "
                          "run the capture and every worker on the same flusso version")
    if not 5 <= len(raw) <= 7:
        raise FormatError(f"a version {VERSION} change has 5 to 7 items, this one {len(raw)}")
    _, op, table, position, xid, *images = raw
    if op not in _NAMES:
        raise FormatError(f"op {op!r} is none of {', '.join(_NAMES)}")
    if not isinstance(table, str):
        raise FormatError(f"its table is {table!r}, not a text")
    for name, number in (("position", position), ("xid", xid)):
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise FormatError(f"its {name} is {number!r}, not a non-negative integer")
    images += [None] * (2 - len(images))
    return Change(table=table, op=_NAMES[op], new=_row_in(images[0], "new"), old=_row_in(images[1], "old"),
                  position=position, xid=xid)


def message_key(change: Change, key_columns: Mapping[str, Sequence[str]]) -> bytes:
    """The Kafka key that keeps one row's changes in one partition: `table` NUL its row key.

    The row key is the table's key columns (`key_columns[table]`) of the new row, or of the old
    one for a delete, joined like a document id. A change without them (a truncate, a resync, a
    commit marker, a table without a known key, a key value that is NULL or an unchanged TOASTed
    value) is keyed by its table alone.
    """
    columns = key_columns.get(change.table)
    row = change.old if change.op == "delete" else change.new
    if columns and row is not None:
        values = [row.get(c) for c in columns]
        if all(isinstance(v, str) for v in values):
            return f"{change.table}\0{doc_id(values)}".encode()
    return change.table.encode()
