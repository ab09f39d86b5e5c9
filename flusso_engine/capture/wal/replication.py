"""The streaming replication protocol's framing: what travels inside COPY BOTH after START_REPLICATION.

Server to client: `w` XLogData (one pgoutput message each, for a logical slot) and `k` primary
keepalives. Client to server: `r` standby status updates, which is how a logical slot's
`confirmed_flush_lsn` moves. Kept apart from the stream so the byte layouts are unit-testable
without a server.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Final

_XLOG = struct.Struct("!QQq")
_KEEPALIVE = struct.Struct("!QqB")
_STATUS = struct.Struct("!cQQQqB")

_UNIX_TO_PG_EPOCH_US: Final = 946_684_800 * 1_000_000
XLOG_HEADER: Final = 1 + _XLOG.size
"""Bytes before the pgoutput message in an XLogData: `w`, start LSN, WAL end, send time."""


@dataclass(frozen=True, slots=True)
class Keepalive:
    wal_end: int  # the server has sent everything before this
    send_time: int
    reply_requested: bool


def keepalive(data: bytes | memoryview) -> Keepalive:
    wal_end, ts, reply = _KEEPALIVE.unpack_from(data, 1)
    return Keepalive(wal_end, ts, bool(reply))


def now_pg_micros() -> int:
    """The current time as PostgreSQL counts it on the wire (microseconds since 2000-01-01 UTC)."""
    return time.time_ns() // 1000 - _UNIX_TO_PG_EPOCH_US


def standby_status(position: int, reply_requested: bool = False) -> bytes:
    """A standby status update reporting `position` as written, flushed and applied.

    For a logical slot the flushed position becomes `confirmed_flush_lsn`: the server will not
    send anything that committed at or before it again, and may recycle the WAL behind it.
    """
    return _STATUS.pack(b"r", position, position, position, now_pg_micros(), 1 if reply_requested else 0)
