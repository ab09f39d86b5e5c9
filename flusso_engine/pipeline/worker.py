"""The worker: resolve, build, write and flush each batch, and say which batches are done."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..changes import Change, DocId, Position
from ..documents import DocumentBuilder
from ..documents.routed import previous_routings, routed_indexes
from ..documents.visibility import batch_xids
from ..observer import BatchStats, Observer
from ..sinks import Sink, write_built
from .flushes import Flushes, chunked

if TYPE_CHECKING:
    from ..routing import Routing


@dataclass
class _Handled:
    """A batch handled and not yet returned by `done`: kept whole, in case it must be built again."""

    stats: BatchStats
    last_flush: int  # done once every flush up to this one has settled
    started: float
    batch: Sequence[Change]
    epoch: int  # the write set it was built for


class Worker:
    """Resolve -> build -> write -> flush, batch after batch.

    Documents are built and flushed in chunks of at most `max_changes` ids, so a change that fans out
    to many documents stays in bounded memory. Up to `in_flight` flushes run in the background while
    the next chunk is built; `done` returns the batches all of whose flushes have succeeded, in
    order. A batch's `ack` is the end position of the last transaction whose commit marker the
    batch held, so a batch that ends inside a transaction acknowledges no further than the one before.

    `guard(confirm, version)`, when given, runs before each flush is sent (on the flush's thread),
    with the highest snapshot position the flush's documents were built at and the batch's last
    commit position: it durably raises the bounds of `slotstate.py` before any of those versions
    reaches the sink and before the batch can be acknowledged (a no-op unless they grow, so about
    once per batch).

    `routing` (live capture, `routing.py`) says which physical generations each index's documents go
    to. It is read again once a batch's flushes are done, before the batch is returned for its ack;
    a batch handled before a generation joined is then built again for the new write set (documents
    are rebuilt from current rows, so that is harmless), and only then returned. `targets` fixes the
    write set instead (a backfill writes only the generation it builds).
    """

    def __init__(
        self,
        builder: DocumentBuilder,
        sink: Sink,
        max_changes: int,
        observer: Observer,
        only: Collection[str] | None = None,
        on_truncate: Callable[[str, Position], None] | None = None,
        on_resync: Callable[[str, Position], None] | None = None,
        resolve: Callable[[Sequence[Change]], dict[str, set[DocId]]] | None = None,
        failpoint: str = "live_flush",
        in_flight: int = 0,
        guard: Callable[[Position, Position], None] | None = None,
        routing: Routing | None = None,
        targets: Callable[[str], Sequence[str]] | None = None,
    ) -> None:
        self.builder = builder
        self.resolve = resolve or builder.resolve
        self.sink = sink
        self.max_changes = max_changes
        self.observer = observer
        self.only = set(only) if only is not None else None
        self.on_truncate = on_truncate
        self.on_resync = on_resync
        self.flushes = Flushes(sink, in_flight, failpoint)
        self.guard = guard
        self.routing = routing
        self.targets = targets or (routing.targets if routing is not None else (lambda index: (index,)))
        self._confirm: Position = 0  # the handled batch's last commit position
        self._version: Position = 0  # the highest build position buffered since the last send
        self._batches: deque[_Handled] = deque()
        plan = getattr(builder, "plan", None)  # routed indexes delete under old routing values (routed.py)
        self._plan = plan if plan is not None and routed_indexes(plan) else None

    @property
    def documents(self) -> int:
        """Documents written or deleted by the flushes settled so far."""
        return self.flushes.documents

    @property
    def rejected(self) -> int:
        return self.flushes.rejected

    def handle(self, batch: Sequence[Change], replay: bool = False) -> BatchStats:
        """Build and send the batch; it counts as flushed once `done` returns it. A `replay` builds a
        batch handled before again, for a grown write set: its truncates were handled already."""
        started = time.monotonic()
        epoch = self.routing.epoch if self.routing is not None else 0
        stats = BatchStats(changes=sum(1 for c in batch if not c.is_commit))
        self._confirm = max((c.position for c in batch if c.is_commit), default=0)
        segment: list[Change] = []
        for change in batch:
            if change.op in ("truncate", "resync"):
                self._apply(segment, stats)
                segment = []
                if replay:
                    continue
                if change.op == "truncate" and self.on_truncate is not None:
                    self.flushes.settle(wait=True)  # nothing older may land in the index the truncate rebuilds
                    self.on_truncate(change.table, change.position)
                elif change.op == "resync" and self.on_resync is not None:
                    self.flushes.settle(wait=True)  # the same for the rebuild
                    self.on_resync(change.table, change.position)
            elif change.is_commit:
                stats.ack = change.position
            else:
                segment.append(change)
        self._apply(segment, stats)
        self._batches.append(_Handled(stats, self.flushes.sent, started, batch, epoch))
        return stats

    def done(self, wait: bool = False) -> list[BatchStats]:
        """The handled batches whose every flush has succeeded, oldest first; `wait` waits for all."""
        self.flushes.settle(wait)
        finished = []
        read = False
        while self._batches and self._batches[0].last_flush <= self.flushes.settled:
            handled = self._batches[0]
            if self.routing is not None:
                if not read:  # once per round, after every build it vouches for
                    self.routing.refresh()
                    read = True
                if handled.epoch != self.routing.epoch:
                    self._replay()
                    return finished + self.done(wait)
            self._batches.popleft()
            handled.stats.seconds = time.monotonic() - handled.started
            self.observer.batch_flushed(handled.stats)
            finished.append(handled.stats)
        return finished

    def _replay(self) -> None:
        """Build every batch not yet returned again, for the write set as it is now."""
        pending = list(self._batches)
        self._batches.clear()
        for handled in pending:
            self.handle(handled.batch, replay=True)

    @property
    def pending(self) -> bool:
        """Batches handled and not yet done (their flushes, or earlier ones, still in flight)."""
        return bool(self._batches)

    def close(self) -> None:
        self.flushes.close()

    def _apply(self, changes: Sequence[Change], stats: BatchStats) -> None:
        if not changes:
            return
        affected = self.resolve(changes)
        xids = batch_xids(changes)
        before = previous_routings(self._plan, changes) if self._plan is not None else {}
        buffered = 0
        for index, ids in affected.items():
            if self.only is not None and index not in self.only:
                continue
            for chunk in chunked(sorted(ids), self.max_changes):
                built = self.builder.build(index, chunk, after=xids)
                if built.docs:
                    self._version = max(self._version, built.position)
                for target in self.targets(index):
                    write_built(self.sink, target, built, before.get(index))
                buffered += len(built.docs)
                stats.documents += len(built.docs)
                if buffered >= self.max_changes:
                    self._send(stats)
                    buffered = 0
        if buffered:
            self._send(stats)

    def _send(self, stats: BatchStats) -> None:
        before = None
        if self.guard is not None:
            guard, confirm, version = self.guard, self._confirm, self._version
            before = lambda: guard(confirm, version)  # noqa: E731 - bound now, run on the flush's thread
        self._version = 0
        self.flushes.send(stats, before)
        self.flushes.settle(wait=False)


