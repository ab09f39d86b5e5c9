"""`WalCapture`: live changes from a logical replication slot, over the streaming replication protocol.

One replication connection (psycopg 3's libpq layer, `replication=database`) runs
`START_REPLICATION SLOT ... LOGICAL` with `pgoutput`; `stream()` decodes what arrives into `Change`s,
and `ack()` moves the slot with standby status updates. The design points:

- **Two threads share the connection, under one lock.** `stream()` is a generator that its
  consumer drives, and the consumer blocks when the queue is full (back-pressure), possibly for
  longer than `wal_sender_timeout`. So replies cannot live only inside the generator: a small
  feedback thread sends a status update every `status_interval_s`, and `ack()` sends one at once.
  libpq connections are not thread-safe, so every use of the `PGconn` holds `_io`; the generator
  holds it only while it reads what is already buffered (never across a `select` or a `yield`).
  While the consumer is blocked nothing is read, the socket fills, and the server's walsender
  waits on it while still reading our replies, so the connection lives and memory stays flat.
- **Never more than the caller acked**, except one case the contract asks for: when nothing
  received is still unflushed (no transaction in progress, the last commit yielded is acked), a
  keepalive's WAL end is reported as flushed, so an idle publication never pins WAL. And never
  more than `limit`, when the caller sets one: the highest position it has durably recorded as
  confirmable (`slotstate.py`), so that a slot moved by someone else can be told from this one.
- **Reconnect and resume.** A dropped connection is reopened with backoff up to a bound, starting
  from the last flushed position; transactions at or before it that the server resends are skipped.
- **A slot still held** by another connection (a crashed run's walsender not yet gone) is waited
  for, up to `slot_wait_s`.
- **Stop** is the `threading.Event` handed in: `stream()` notices it within a fraction of a second,
  sends a last status update and returns. An `ack()` that comes after that (the pipeline acks
  what it flushed on the way down) advances the slot with `pg_replication_slot_advance`.

The pieces, one concern each (`base.py` says what they share): `setup.py` (publication, replica
identity, slot, teardown), `snapshot.py` (backfill keys), `stream.py` (START_REPLICATION, the receive
loop, reconnects), `feedback.py` (acks, status updates, the feedback thread), `watch.py` (schema
changes under capture; the rules are `schema.py`'s), `slot.py` (the one query of the slot's state),
`checks.py` (what `flusso validate` checks of the server for this backend).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence

from ...changes import Position
from ...config import qualify
from .base import Rel, Repairs, log
from .feedback import Feedback
from .schema import Expected
from .setup import Setup
from .snapshot import SNAPSHOT_PAGE, Snapshot
from .stream import Stream
from .watch import SchemaWatch


class WalCapture(Setup, Snapshot, Stream, Feedback, SchemaWatch):
    """The `ChangeCapture` over a pgoutput logical replication slot."""

    def __init__(
        self,
        dsn: str,
        slot: str,
        publication: str,
        stop: threading.Event,
        full_identity: set[str] | frozenset[str] = frozenset(),
        slot_wait_s: float = 60.0,
        logger: logging.Logger | None = None,
        *,
        status_interval_s: float = 10.0,
        reconnect_attempts: int = 8,
        reconnect_backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        snapshot_page: int = SNAPSHOT_PAGE,
        expected: Mapping[str, Expected] | None = None,
        baseline: Position = 0,
        watch_interval_s: float = 5.0,
        matviews: Sequence[str] = (),
    ) -> None:
        self._dsn = dsn
        self.slot = slot
        self.publication = publication
        self._stop = stop
        self._full_identity = {qualify(t) for t in full_identity}
        self._slot_wait_s = slot_wait_s
        self._log = logger or log
        self._status_interval_s = status_interval_s
        self._reconnect_attempts = reconnect_attempts
        self._backoff_s = reconnect_backoff_s
        self._max_backoff_s = max_backoff_s
        self._snapshot_page = snapshot_page

        self._io = threading.Lock()  # every use of the replication PGconn
        self._state = threading.Lock()  # the positions below
        self._conn = None
        self._streaming = False
        self._acked: Position = 0  # the most the caller has acknowledged
        self._idle: Position = 0  # a keepalive's WAL end, taken when nothing received was unflushed
        self._sent: Position = 0  # the last position reported to the server
        self._last_yielded: Position = 0  # end LSN of the last commit marker handed out
        self._limit: Position | None = None  # never report more than this (None: no limit)
        self._relations: dict[int, Rel] = {}
        self.reconnects = 0  # connections lost and reopened, for tests and observers
        # Schema changes under capture (see `schema.py`): what the config needs of each table; the
        # WAL position before the catalog the engine runs on was read (a change to a table's definition
        # committed before it is in that catalog already); the catalog as `prepare` left it.
        self._expected = dict(expected) if expected is not None else None
        self._baseline = baseline
        self._watch_interval_s = watch_interval_s
        self._tables: list[str] = []
        self._catalog_state = None
        self._matviews = sorted(qualify(v) for v in matviews)  # watched for REFRESH (`capture/refresh.py`)
        self._refreshes: dict[str, list[int]] | None = None
        self._watch_lock = threading.Lock()
        self._watch_error = None
        self._watch_resync: list[tuple[str, Position]] = []
        self.repairs = Repairs()
        # called once the slot is ours (after START_REPLICATION, before anything is read), at the
        # first start and after every reconnect: raises to refuse a slot that is not the one followed
        self.verify_slot: Callable[[], None] | None = None
