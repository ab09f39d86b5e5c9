"""A decoder of the `pgoutput` logical replication protocol, version 1.

`pgoutput` is the output plugin built into PostgreSQL (10+): the slot's WAL is decoded on the
server and each change arrives as one binary message inside the streaming replication protocol's
XLogData (see `replication.py` for that envelope). Version 1 is all flusso asks for: whole
transactions, sent at commit, no in-progress streaming, values in text format.

**Values stay text.** pgoutput sends every column in PostgreSQL's text output format, and flusso's
consumers only compare key and foreign-key values inside SQL (`WHERE key = ANY(%s)`), where text
is cast to the column's type by the server itself. Keeping the exact text therefore loses nothing
and avoids a lossy round trip (numeric scale, timestamp zones, float digits, arrays, ranges,
custom types all come back exactly as PostgreSQL writes them). A column is:

- `str`: its type's output function's text (what `keys.key_text` renders in SQL; `col::text`
  differs for boolean, char(n), inet and cidr);
- `None`: SQL NULL;
- `UNCHANGED`: an unchanged TOASTed value the server did not send (`u`, only in an update's new
  row; `stream.py` fills it from the old row when REPLICA IDENTITY FULL sent that; defined in
  `changes.py`, since resolve reads rows of every capture).

"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from ...changes import UNCHANGED, Value
from ...error import SourceError


class DecodeError(SourceError):
    """A message that is not valid pgoutput version 1 (a server or protocol mismatch)."""


# --- messages -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Begin:
    """A transaction starts; `final_lsn` is its commit record's LSN, known up front because pgoutput
    v1 sends a transaction only once it has committed."""

    final_lsn: int
    commit_time: int  # microseconds since 2000-01-01 UTC
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    """The transaction ends. `end_lsn` (just past the commit record) is what a client acknowledges."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int


@dataclass(frozen=True, slots=True)
class Origin:
    """The transaction was replayed from elsewhere (it carries a replication origin)."""

    origin_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    is_key: bool  # part of the replica identity (primary key, the identity index, or all under FULL)


@dataclass(frozen=True, slots=True)
class Relation:
    """A table's shape, sent before the first change to it on each connection and after DDL.

    Tuples that follow carry exactly these columns, in this order (a publication's column list
    narrows both).
    """

    oid: int
    namespace: str  # "" on the wire means pg_catalog; kept as decoded
    name: str
    replica_identity: str  # d(efault), n(othing), f(ull), i(ndex)
    columns: tuple[Column, ...]

    @property
    def qualified(self) -> str:
        return f"{self.namespace or 'pg_catalog'}.{self.name}"


@dataclass(frozen=True, slots=True)
class Type:
    """A non-built-in type's name, sent before a Relation that uses it (enums, domains, composites)."""

    oid: int
    namespace: str
    name: str


OldKind = Literal["K", "O"]
"""`K`: only the replica identity's key columns (others are sent as NULL); `O`: the whole old row
(REPLICA IDENTITY FULL)."""


@dataclass(frozen=True, slots=True)
class Insert:
    relation_oid: int
    new: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Update:
    """`old` is None unless the identity is FULL (`O`) or the update changed the key (`K`)."""

    relation_oid: int
    new: tuple[Value, ...]
    old: tuple[Value, ...] | None = None
    old_kind: OldKind | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    relation_oid: int
    old: tuple[Value, ...]
    old_kind: OldKind


@dataclass(frozen=True, slots=True)
class Truncate:
    relation_oids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    """`pg_logical_emit_message()` output; only sent when the client asked for `messages 'true'`."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | LogicalMessage


# --- decoding -------------------------------------------------------------------------------

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_BEGIN = struct.Struct("!QqI")
_COMMIT = struct.Struct("!BQQq")
_REL_HEAD = struct.Struct("!I")
_COL_TAIL = struct.Struct("!Ii")
_TRUNC_HEAD = struct.Struct("!iB")


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Decode one pgoutput message (the payload of one XLogData).

    Raises `DecodeError` for a message type or a layout this version does not know.
    """
    buf = data if type(data) is bytes else bytes(data)
    try:
        return _DECODERS[buf[0]](buf)
    except KeyError:
        raise DecodeError(
            f"unknown pgoutput message type {chr(buf[0])!r}: flusso speaks pgoutput protocol version 1"
        ) from None
    except (IndexError, struct.error, UnicodeDecodeError) as err:
        raise DecodeError(f"malformed pgoutput message {buf[:1]!r} ({len(buf)} bytes): {err}") from None


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\x00", pos)
    return buf[pos:end].decode(), end + 1


def _tuple(buf: bytes, pos: int) -> tuple[tuple[Value, ...], int]:
    """TupleData: Int16 count, then per column `n` (NULL), `u` (unchanged TOAST) or `t` + Int32
    length + text. (`b`, binary, is only sent with the `binary` option, which flusso never asks for.)"""
    (count,) = _I16.unpack_from(buf, pos)
    pos += 2
    values: list[Value] = []
    append = values.append
    unpack_len = _I32.unpack_from
    for _ in range(count):
        marker = buf[pos]
        pos += 1
        if marker == 0x74:  # t
            (length,) = unpack_len(buf, pos)
            pos += 4
            append(buf[pos : pos + length].decode())
            pos += length
        elif marker == 0x6E:  # n
            append(None)
        elif marker == 0x75:  # u
            append(UNCHANGED)
        else:
            raise DecodeError(f"unexpected tuple column marker {chr(marker)!r} (binary was not asked for)")
    return tuple(values), pos


def _begin(buf: bytes) -> Begin:
    final_lsn, ts, xid = _BEGIN.unpack_from(buf, 1)
    return Begin(final_lsn, ts, xid)


def _commit(buf: bytes) -> Commit:
    flags, commit_lsn, end_lsn, ts = _COMMIT.unpack_from(buf, 1)
    return Commit(flags, commit_lsn, end_lsn, ts)


def _origin(buf: bytes) -> Origin:
    (lsn,) = _U64.unpack_from(buf, 1)
    name, _ = _cstring(buf, 9)
    return Origin(lsn, name)


def _relation(buf: bytes) -> Relation:
    (oid,) = _REL_HEAD.unpack_from(buf, 1)
    namespace, pos = _cstring(buf, 5)
    name, pos = _cstring(buf, pos)
    ident = chr(buf[pos])
    (ncols,) = _I16.unpack_from(buf, pos + 1)
    pos += 3
    columns = []
    for _ in range(ncols):
        flags = buf[pos]
        col, pos = _cstring(buf, pos + 1)
        type_oid, typmod = _COL_TAIL.unpack_from(buf, pos)
        pos += 8
        columns.append(Column(col, type_oid, typmod, bool(flags & 1)))
    return Relation(oid, namespace, name, ident, tuple(columns))


def _type(buf: bytes) -> Type:
    (oid,) = _U32.unpack_from(buf, 1)
    namespace, pos = _cstring(buf, 5)
    name, _ = _cstring(buf, pos)
    return Type(oid, namespace, name)


def _insert(buf: bytes) -> Insert:
    (oid,) = _U32.unpack_from(buf, 1)
    if buf[5] != 0x4E:  # N
        raise DecodeError(f"insert without a new tuple (got {chr(buf[5])!r})")
    new, _ = _tuple(buf, 6)
    return Insert(oid, new)


def _update(buf: bytes) -> Update:
    (oid,) = _U32.unpack_from(buf, 1)
    marker = buf[5]
    old: tuple[Value, ...] | None = None
    old_kind: OldKind | None = None
    pos = 6
    if marker in (0x4B, 0x4F):  # K, O
        old_kind = "K" if marker == 0x4B else "O"
        old, pos = _tuple(buf, pos)
        marker = buf[pos]
        pos += 1
    if marker != 0x4E:
        raise DecodeError(f"update without a new tuple (got {chr(marker)!r})")
    new, _ = _tuple(buf, pos)
    return Update(oid, new, old, old_kind)


def _delete(buf: bytes) -> Delete:
    (oid,) = _U32.unpack_from(buf, 1)
    marker = buf[5]
    if marker not in (0x4B, 0x4F):
        raise DecodeError(f"delete without an old key or tuple (got {chr(marker)!r})")
    old, _ = _tuple(buf, 6)
    return Delete(oid, old, "K" if marker == 0x4B else "O")


def _truncate(buf: bytes) -> Truncate:
    count, options = _TRUNC_HEAD.unpack_from(buf, 1)
    oids = struct.unpack_from(f"!{count}I", buf, 6)
    return Truncate(tuple(oids), bool(options & 1), bool(options & 2))


def _message(buf: bytes) -> LogicalMessage:
    flags = buf[1]
    (lsn,) = _U64.unpack_from(buf, 2)
    prefix, pos = _cstring(buf, 10)
    (length,) = _I32.unpack_from(buf, pos)
    pos += 4
    return LogicalMessage(bool(flags & 1), lsn, prefix, buf[pos : pos + length])


_DECODERS = {
    ord("B"): _begin,
    ord("C"): _commit,
    ord("O"): _origin,
    ord("R"): _relation,
    ord("Y"): _type,
    ord("I"): _insert,
    ord("U"): _update,
    ord("D"): _delete,
    ord("T"): _truncate,
    ord("M"): _message,
}


# --- rows -----------------------------------------------------------------------------------


def row(relation: Relation, values: tuple[Value, ...], kind: OldKind | None = None) -> dict[str, Value]:
    """A tuple as a dict of column name to value.

    For an old *key* (`K`) only the identity's columns are kept: the server sends the others as
    NULL, which would read as "this column was NULL" when in fact it is unknown.
    """
    if kind == "K":
        return {c.name: v for c, v in zip(relation.columns, values, strict=False) if c.is_key}
    return {c.name: v for c, v in zip(relation.columns, values, strict=False)}

