"""The slot's identity: telling the slot flusso has been following from one that only has its name.

PostgreSQL 15 does not expose when a slot was created, and a slot dropped and recreated by hand
under the same name looks like the old one, but the changes committed in between were never
decoded for it: every index it feeds must be rebuilt. Positions alone are tricky, since a
legitimate slot's `confirmed_flush_lsn` moves forward too. flusso therefore keeps, per slot and
database, a small state document in the sink (`SlotState`, written with compare-and-set) holding
two upper bounds it raises durably *before* it goes past them:

- `confirmed_bound` (Bc) is at least every position flusso has confirmed, or may confirm, to the
  slot: the engine raises it before an ack or an idle keepalive's confirmation passes it, and the
  capture never reports more than the bound it was given (`WalCapture.limit`). Bc only ever takes
  positions the slot itself handed out (commit end positions, keepalive WAL ends) or the slot's own
  `confirmed_flush_lsn` when flusso adopts it.
- `version_bound` (Bv) is at least every version flusso has written to an index: each flush raises
  it (on the flush's own thread, before its bulk request) to the newest snapshot position its
  documents were built at, together with Bc to the batch's last commit.

The argument, for a slot only flusso moves: its `confirmed_flush_lsn` C only moves by flusso's
status updates (or its `pg_replication_slot_advance`), which never exceed Bc, so C <= Bc at every
moment. A slot created afresh (by hand, after a drop) starts at the end of a WAL record written
during its creation, which is beyond every position the server had written before; every Bc value
written before the creation is such a position (handed out by the old slot), so C > Bc. So at
start, and again whenever the running capture (re)connects, **C > Bc means someone else recreated
or advanced the slot**, changes may be missing, and a new incarnation is declared. The check reads
C before Bc: Bc only grows, so a concurrent legitimate run (a Dagster backfill beside the live run)
cannot make it fire. It also holds across a reconnect inside one run: while disconnected the engine
raises Bc only to positions received from the old slot, all older than a recreation.

Restores and failovers: every Bc and Bv value is a WAL position this server once reached, so a
server whose current position is below max(Bc, Bv) went back in time (a restored backup, a
promoted replica that was behind): the indexes may hold versions above any write flusso could
send now, each of which would be a silent 409. A changed timeline (`pg_walfile_name` of the
current position; a point-in-time restore or a promotion) means the same even when the position
is ahead: the indexes may hold changes of the old timeline that the database no longer has.
Both declare a new incarnation too. The indexes are then rebuilt by the normal backfill, which
recreates each index empty first: an empty index has no old versions for the new documents'
versions to lose against, whatever position the restored server is at.

An incarnation is a random token stored in the state and in every seeded marker (`SeedMarker
.slot_incarnation`): declaring a new one unseeds every index fed by the slot in one durable
write, which a crash cannot leave half done. With no state at all (a first start with this version
of flusso, or a deleted state index) flusso cannot vouch for the slot and declares one as well.

The cost is one small indexed document per raise, about once per batch (a flush whose documents
were built at a newer snapshot position; an ack beyond what that raise covered), never per
document, and off the worker's path while flushes run in the background: see `SlotGuard`.

What this cannot see: a slot recreated while flusso is disconnected *and* the sink is down, so
that the new incarnation cannot be written (the run exits 2 and the next start checks again
against Bc, which the same argument covers unless a build raised it in that window).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from .changes import Position, int_to_lsn
from .error import SinkError, SourceError
from .sinks import Sink

log = logging.getLogger(__name__)  # under flusso_engine, whose level --log-level sets

Kind = Literal["same", "created", "unknown", "moved", "restored", "timeline", "gone", "lost"]


class SlotMoved(SourceError):
    """The slot was recreated or advanced by someone else while flusso was following it."""


@dataclass(frozen=True)
class SlotState:
    """The state document of one slot of one database (see the module doc)."""

    slot: str
    system_identifier: str
    incarnation: str
    timeline: int
    confirmed_bound: Position
    version_bound: Position

    def as_doc(self) -> dict:
        return {
            "slot": self.slot,
            "system_identifier": self.system_identifier,
            "incarnation": self.incarnation,
            "timeline": self.timeline,
            "confirmed_bound": self.confirmed_bound,
            "version_bound": self.version_bound,
        }

    @classmethod
    def from_doc(cls, doc: Any) -> SlotState | None:
        """The state `as_doc` wrote, or None for anything else (then flusso cannot vouch for the slot)."""
        if not isinstance(doc, Mapping):
            return None
        try:
            return cls(
                slot=str(doc["slot"]),
                system_identifier=str(doc["system_identifier"]),
                incarnation=str(doc["incarnation"]),
                timeline=int(doc["timeline"]),
                confirmed_bound=int(doc["confirmed_bound"]),
                version_bound=int(doc["version_bound"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Verdict:
    """Whether the slot is the one the state describes; if not, why (a log line)."""

    kind: Kind
    reason: str = ""

    @property
    def same(self) -> bool:
        return self.kind == "same"


def state_key(slot: str, system_identifier: str) -> str:
    return f"{slot}@{system_identifier}"


def judge(state: SlotState | None, *, slot: str, created: bool, confirmed: Position | None,
          current: Position, timeline: int, floor: Position = 0) -> Verdict:
    """Is the slot (confirmed at `confirmed`, just read) the one `state` (read after it) describes?

    `current` is the server's WAL position read after the state, `floor` the highest position a
    seeded marker of this database records. Pure: the engine reads, this decides.
    """
    everything = f"every index slot {slot} feeds is rebuilt"
    if created:
        return Verdict("created", f"created replication slot {slot}: {everything}")
    if state is None:
        return Verdict("unknown", (
            f"there is no record of the positions flusso reached on replication slot {slot} (first start "
            "with this version of flusso, or its state document was deleted), so it cannot be told from a "
            f"slot recreated by hand: {everything}"))
    if timeline != state.timeline:
        return Verdict("timeline", (
            f"the database is on WAL timeline {timeline}, but flusso last followed it on timeline "
            f"{state.timeline}: it was restored to a point in time, or a replica was promoted, and the "
            f"indexes may hold changes the database no longer has: {everything} from empty"))
    reached = max(state.confirmed_bound, state.version_bound, floor)
    if current < reached:
        return Verdict("restored", (
            f"the database is at WAL position {int_to_lsn(current)}, below {int_to_lsn(reached)}, which "
            "flusso had already reached on it: it was restored from a backup, or failed over to a replica "
            f"that was behind, and every write would silently lose against the newer versions in the "
            f"indexes: {everything} from empty (a recreated index has no old versions)"))
    if (confirmed or 0) > state.confirmed_bound:
        return Verdict("moved", (
            f"replication slot {slot} is confirmed up to {int_to_lsn(confirmed or 0)}, beyond "
            f"{int_to_lsn(state.confirmed_bound)}, the most flusso ever confirmed to it: it was dropped and "
            f"recreated, or advanced, by someone else, and changes in between may be missing: {everything}"))
    return Verdict("same")


class SlotGuard:
    """The slot's state for one engine: adopts the slot at start, raises the bounds before anything
    goes past them, and checks the slot again whenever capture (re)connects.

    Raises are compare-and-set writes of one document, so two engines on one slot (a Dagster
    backfill beside the live run) never lower each other's bounds. `writes` and `write_seconds`
    count what the raises cost.
    """

    def __init__(self, sink: Sink, slot: str, system_identifier: str,
                 on_limit: Callable[[Position], None] | None = None) -> None:
        self.sink = sink
        self.slot = slot
        self.system_identifier = system_identifier
        self.key = state_key(slot, system_identifier)
        self.on_limit = on_limit
        self._state: SlotState | None = None
        self._token: Any = None
        self._lock = threading.Lock()
        self.writes = 0
        self.write_seconds = 0.0

    @property
    def state(self) -> SlotState | None:
        return self._state

    @property
    def incarnation(self) -> str | None:
        return None if self._state is None else self._state.incarnation

    def read(self) -> SlotState | None:
        stored = self.sink.read_state(self.key)
        return None if stored is None else SlotState.from_doc(stored[0])

    def attach(self) -> SlotState | None:
        """The state as stored, for a process that writes documents without holding the slot (a
        queue's worker role): its raises keep the version bound above its writes. None: none yet."""
        with self._lock:
            stored = self.sink.read_state(self.key)
            self._state, self._token = (None, None) if stored is None else (SlotState.from_doc(stored[0]), stored[1])
        return self._state

    def adopt(self, *, created: bool, read_slot: Callable[[], Position | None],
              read_current: Callable[[], Position], timeline: int, floor: Position = 0) -> Verdict:
        """Judge the slot (read in the order the module doc argues for) and record the outcome: the
        state as it is, or a new incarnation. Returns the first verdict (what the log should say)."""
        first: Verdict | None = None
        with self._lock:
            for _ in range(10):
                confirmed = read_slot()
                stored = self.sink.read_state(self.key)
                state = None if stored is None else SlotState.from_doc(stored[0])
                token = None if stored is None else stored[1]
                current = read_current()
                verdict = judge(state, slot=self.slot, created=created, confirmed=confirmed, current=current,
                                timeline=timeline, floor=floor)
                first = first or verdict
                if verdict.same:
                    assert state is not None
                    self._state, self._token = state, token
                    break
                new = SlotState(self.slot, self.system_identifier, uuid.uuid4().hex, timeline,
                                confirmed_bound=confirmed or 0, version_bound=current)
                if self._write(new, token):
                    break
                # someone else wrote the state in between (a concurrent start, a raise): judge again;
                # whatever they wrote was written after the slot existed as it is now
                created = False
            else:
                raise SinkError(f"the state of slot {self.slot} ({self.key}) kept changing under flusso: "
                                "is another flusso starting on the same slot in a loop?")
        self._limit()
        assert first is not None
        return first

    def renew(self, confirmed: Position, current: Position, timeline: int) -> SlotState:
        """Declare a new incarnation now (the slot was found moved while running)."""
        with self._lock:
            new = SlotState(self.slot, self.system_identifier, uuid.uuid4().hex, timeline,
                            confirmed_bound=confirmed, version_bound=current)
            for _ in range(10):
                if self._write(new, self._token):
                    break
                stored = self.sink.read_state(self.key)
                self._token = None if stored is None else stored[1]
        self._limit()
        return new

    def raise_to(self, confirm: Position = 0, version: Position = 0) -> None:
        """Make the stored bounds at least `confirm` and `version` before anything goes past them."""
        state = self._state
        if state is None or (confirm <= state.confirmed_bound and version <= state.version_bound):
            return
        with self._lock:
            for _ in range(10):
                state = self._state
                assert state is not None
                if confirm <= state.confirmed_bound and version <= state.version_bound:
                    return
                new = replace(state, confirmed_bound=max(state.confirmed_bound, confirm),
                              version_bound=max(state.version_bound, version))
                if self._write(new, self._token):
                    break
                stored = self.sink.read_state(self.key)
                fresh = None if stored is None else SlotState.from_doc(stored[0])
                # another engine raised it (keep its incarnation: if it declared a new one, our own
                # markers read unseeded, which is safe), or the document is gone (write it again)
                self._state = fresh or state
                self._token = None if stored is None else stored[1]
            else:
                raise SinkError(f"could not raise the bounds of slot {self.slot} ({self.key}): it kept "
                                "changing under flusso")
        self._limit()

    def _write(self, state: SlotState, token: Any) -> bool:
        started = time.monotonic()
        new_token = self.sink.write_state(self.key, state.as_doc(), token)
        self.writes += 1
        self.write_seconds += time.monotonic() - started
        if new_token is None:
            return False
        self._state, self._token = state, new_token
        return True

    def _limit(self) -> None:
        if self.on_limit is not None and self._state is not None:
            self.on_limit(self._state.confirmed_bound)
