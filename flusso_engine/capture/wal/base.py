"""What every piece of `WalCapture` shares: its state, its connections, and how their errors read.

`WalCapture` (`capture.py`) is one object composed of pieces, one concern each: `setup.py` (slot,
publication, replica identity, teardown), `snapshot.py`, `stream.py` (START_REPLICATION and the
receive loop), `feedback.py` (acks and status updates), `watch.py` (schema changes under capture).
They read and write the state declared here, which `WalCapture.__init__` sets.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import errors

from ...changes import Position
from ...error import SourceError
from ...keys import conninfo
from ...refusals import connect_failure
from .. import Repairs  # noqa: F401 - re-exported
from ..errors import first_line, retryable  # noqa: F401 - re-exported
from .schema import Expected, State

log = logging.getLogger("flusso_engine.capture.wal")  # one logger for the backend, whatever the piece


class Lost(Exception):
    """The replication connection failed in a way a reconnect may cure."""


@dataclass(frozen=True, slots=True)
class Rel:
    """A Relation message reduced to what building rows needs."""

    table: str
    names: tuple[str, ...]
    keys: tuple[tuple[int, str], ...]  # (position, name) of the identity's columns
    full: bool = False  # the config needs whole old rows of this table


class WalBase:
    """The state the pieces of `WalCapture` share (set in `WalCapture.__init__`), and connections."""

    _dsn: str
    slot: str
    publication: str
    _stop: threading.Event
    _full_identity: set[str]
    _slot_wait_s: float
    _log: logging.Logger
    _status_interval_s: float
    _reconnect_attempts: int
    _backoff_s: float
    _max_backoff_s: float
    _snapshot_page: int

    _io: threading.Lock  # every use of the replication PGconn
    _state: threading.Lock  # the positions below
    _conn: psycopg.Connection | None
    _streaming: bool
    _acked: Position  # the most the caller has acknowledged
    _idle: Position  # a keepalive's WAL end, taken when nothing received was unflushed
    _sent: Position  # the last position reported to the server
    _last_yielded: Position  # end LSN of the last commit marker handed out
    _limit: Position | None  # never report more than this (None: no limit)
    _relations: dict[int, Rel]
    reconnects: int

    _expected: dict[str, Expected] | None
    _baseline: Position
    _watch_interval_s: float
    _tables: list[str]
    _catalog_state: State | None
    _watch_lock: threading.Lock
    _watch_error: SourceError | None
    _watch_resync: list[tuple[str, Position]]
    _matviews: list[str]
    _refreshes: dict[str, list[int]] | None
    repairs: Repairs
    verify_slot: Callable[[], None] | None

    def _conninfo(self) -> str:
        """The DSN plus defaults that suit a long-lived connection, unless the DSN sets them, and the
        pinned settings that make pgoutput's and the snapshot's key texts the same (`keys.SESSION`)."""
        return conninfo(
            self._dsn,
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
            application_name="flusso",
        )

    @contextmanager
    def _sql(self) -> Iterator[psycopg.Connection]:
        """A short-lived ordinary connection (autocommit) for set-up, inspection and snapshots."""
        try:
            conn = psycopg.connect(self._conninfo(), autocommit=True)
        except psycopg.OperationalError as err:
            raise SourceError(connect_failure(self._dsn, err)) from err
        try:
            yield conn
        finally:
            conn.close()


@contextmanager
def sql_errors(what: str) -> Iterator[None]:
    """Turn a database's refusal during set-up into a `SourceError` that says what to do."""
    try:
        yield
    except errors.InsufficientPrivilege as err:
        raise SourceError(
            f"{what}: {first_line(err)} (the source user needs to own the tables, or be a superuser, "
            "to create the publication and set replica identity; or create them beforehand)"
        ) from err
    except psycopg.Error as err:
        raise SourceError(f"{what}: {first_line(err)}") from err

