"""The execution machinery: a capture thread feeding the bounded queue, and the worker that turns
each batch into flushed documents and says how far the slot may be acknowledged.

Everything here is stopped through `threading.Event`s, never through signals.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from . import failpoints
from .backoff import Attempts, Backoff, retry
from .changes import Change, DocId, Position
from .documents import DocumentBuilder
from .documents.visibility import batch_xids
from .error import SourceError
from .observer import BatchStats, Observer
from .queue import Queue
from .sinks import FlushReport, Sink

log = logging.getLogger(__name__)


class CaptureThread(threading.Thread):
    """Drains a change iterator into the queue; `put` blocks when the queue is full (back-pressure).

    An error is kept for the worker to raise: the worker owns the run's outcome.
    """

    def __init__(self, source: Callable[[], Iterable[Change]], queue: Queue, stop: threading.Event,
                 name: str = "flusso-capture") -> None:
        super().__init__(name=name, daemon=True)
        self._source = source
        self._queue = queue
        self._stop_event = stop
        self.error: BaseException | None = None
        self.count = 0

    def run(self) -> None:
        try:
            for change in self._source():
                if self._stop_event.is_set():
                    break
                if self._queue.put(change) is False:
                    break
                self.count += 1
        except BaseException as err:  # noqa: BLE001 - handed to the worker, which raises it
            self.error = err


def chunked(ids: Iterable[DocId], size: int) -> Iterator[list[DocId]]:
    chunk: list[DocId] = []
    for i in ids:
        chunk.append(i)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Flushes:
    """Flushes sent on background threads, at most `limit` at once, settled in the order they were sent.

    `send` waits for a free slot (the oldest flush) first, so memory stays bounded by `limit` + 1
    buffers. A flush's error is raised by the `settle` or `send` that finds it; nothing sent after
    the last settled flush is then acknowledged. With `limit` 0, or a sink that cannot `detach` its
    buffer, every flush runs in line.
    """

    def __init__(self, sink: Sink, limit: int, failpoint: str) -> None:
        self.sink = sink
        self.failpoint = failpoint
        detach = getattr(sink, "detach", None)
        self._detach: Callable[[], Callable[[], FlushReport]] | None = detach if limit > 0 else None
        self.limit = limit
        self._pool = (ThreadPoolExecutor(max_workers=limit, thread_name_prefix="flusso-flush")
                      if self._detach is not None else None)
        self._sent: deque[tuple[int, Future[FlushReport], BatchStats]] = deque()
        self.sent = 0  # flushes sent so far
        self.settled = 0  # every flush up to this one has succeeded
        self.documents = 0  # written or deleted by the settled flushes
        self.rejected = 0

    def send(self, stats: BatchStats, before: Callable[[], None] | None = None) -> None:
        """Send the sink's buffer, after `before` (on the same thread, so it runs beside the build
        of the next chunk); its report is credited to `stats` once it settles."""
        self.sent += 1
        if self._pool is None or self._detach is None:  # in line
            done: Future[FlushReport] = Future()
            done.set_result(self._run(self.sink.flush, before))
            self._sent.append((self.sent, done, stats))
            return
        while len(self._sent) >= self.limit:
            self._settle_oldest()
        self._sent.append((self.sent, self._pool.submit(self._run, self._detach(), before), stats))

    def _run(self, flush: Callable[[], FlushReport], before: Callable[[], None] | None = None) -> FlushReport:
        if before is not None:
            before()
        report = flush()
        failpoints.hit(self.failpoint)
        return report

    def _settle_oldest(self) -> None:
        seq, future, stats = self._sent[0]
        report = future.result()  # raises the flush's error
        self._sent.popleft()
        self.settled = seq
        stats.deleted += report.deleted
        stats.conflicts += report.conflicts
        stats.rejected += len(report.rejected)
        stats.requests += report.requests
        self.documents += report.written + report.deleted
        self.rejected += len(report.rejected)

    def settle(self, wait: bool = False) -> None:
        """Settle the flushes that finished, oldest first, up to the first still in flight; with
        `wait`, every flush sent."""
        while self._sent and (wait or self._sent[0][1].done()):
            self._settle_oldest()

    def close(self) -> None:
        """Wait for what is in flight (its retries are bounded and stop with the run), then let the
        threads go."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class Worker:
    """Resolve -> build -> write -> flush, batch after batch.

    Documents are built and flushed in chunks of at most `max_docs` ids, so a change that fans out
    to many documents stays in bounded memory. Up to `in_flight` flushes run in the background while
    the next chunk is built; `done` returns the batches all of whose flushes have succeeded, in
    order. A batch's `ack` is the end position of the last transaction whose commit marker the
    batch held, so a batch that ends inside a transaction acknowledges no further than the one before.

    `guard(confirm, version)`, when given, runs before each flush is sent (on the flush's thread),
    with the highest snapshot position the flush's documents were built at and the batch's last
    commit position: it durably raises the bounds of `slotstate.py` before any of those versions
    reaches the sink and before the batch can be acknowledged (a no-op unless they grow, so about
    once per batch).
    """

    def __init__(
        self,
        builder: DocumentBuilder,
        sink: Sink,
        max_docs: int,
        observer: Observer,
        only: Collection[str] | None = None,
        on_truncate: Callable[[str], None] | None = None,
        on_resync: Callable[[str, Position], None] | None = None,
        resolve: Callable[[Sequence[Change]], dict[str, set[DocId]]] | None = None,
        failpoint: str = "live_flush",
        in_flight: int = 0,
        guard: Callable[[Position, Position], None] | None = None,
    ) -> None:
        self.builder = builder
        self.resolve = resolve or builder.resolve
        self.sink = sink
        self.max_docs = max_docs
        self.observer = observer
        self.only = set(only) if only is not None else None
        self.on_truncate = on_truncate
        self.on_resync = on_resync
        self.flushes = Flushes(sink, in_flight, failpoint)
        self.guard = guard
        self._confirm: Position = 0  # the handled batch's last commit position
        self._version: Position = 0  # the highest build position buffered since the last send
        self._batches: deque[tuple[BatchStats, int, float]] = deque()  # stats, last flush, started

    @property
    def documents(self) -> int:
        """Documents written or deleted by the flushes settled so far."""
        return self.flushes.documents

    @property
    def rejected(self) -> int:
        return self.flushes.rejected

    def handle(self, batch: Sequence[Change]) -> BatchStats:
        """Build and send the batch; it counts as flushed once `done` returns it."""
        started = time.monotonic()
        stats = BatchStats(changes=sum(1 for c in batch if not c.is_commit))
        self._confirm = max((c.position for c in batch if c.is_commit), default=0)
        segment: list[Change] = []
        for change in batch:
            if change.op in ("truncate", "resync"):
                self._apply(segment, stats)
                segment = []
                if change.op == "truncate" and self.on_truncate is not None:
                    self.flushes.settle(wait=True)  # nothing older may land in the index the truncate rebuilds
                    self.on_truncate(change.table)
                elif change.op == "resync" and self.on_resync is not None:
                    self.flushes.settle(wait=True)  # the same for the rebuild
                    self.on_resync(change.table, change.position)
            elif change.is_commit:
                stats.ack = change.position
            else:
                segment.append(change)
        self._apply(segment, stats)
        self._batches.append((stats, self.flushes.sent, started))
        return stats

    def done(self, wait: bool = False) -> list[BatchStats]:
        """The handled batches whose every flush has succeeded, oldest first; `wait` waits for all."""
        self.flushes.settle(wait)
        finished = []
        while self._batches and self._batches[0][1] <= self.flushes.settled:
            stats, _, started = self._batches.popleft()
            stats.seconds = time.monotonic() - started
            self.observer.batch_flushed(stats)
            finished.append(stats)
        return finished

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
        buffered = 0
        for index, ids in affected.items():
            if self.only is not None and index not in self.only:
                continue
            for chunk in chunked(sorted(ids), self.max_docs):
                built = self.builder.build(index, chunk, after=xids)
                if built.docs:
                    self._version = max(self._version, built.position)
                for doc_id, doc in built.docs.items():
                    self.sink.write(index, doc_id, doc, built.position)
                buffered += len(built.docs)
                stats.documents += len(built.docs)
                if buffered >= self.max_docs:
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


def handle_retrying(worker: Worker, batch: Sequence[Change], stop: threading.Event,
                    attempts: int = 12, backoff: float = 0.5, max_backoff: float = 10.0) -> BatchStats:
    """Handle a batch, again after a lost database connection (a restart, a failover): documents
    are rebuilt from current rows, so repeating a batch is harmless. Sink failures have their own
    retries in the sink; other errors, and a database still gone after the attempts, stop the run."""
    tries = Attempts(Backoff(backoff, max_backoff), attempts, stop)

    def on_retry(err: BaseException, pause: float) -> None:
        log.warning("%s; trying the batch again in %.1fs (attempt %d of %d)", err, pause, tries.failures, attempts)

    return retry(lambda: worker.handle(batch), tries, SourceError, on_retry)


def drive(
    worker: Worker,
    queue: Queue,
    capture: CaptureThread,
    stop: threading.Event,
    capture_stop: threading.Event,
    max_changes: int,
    max_delay: float,
    ack: Callable[[Position], None] | None,
    on_batch: Callable[[], None] | None = None,
    on_tick: Callable[[], None] | None = None,
) -> None:
    """The worker's loop: batch, handle, ack what is flushed; on stop, drain what was read, flush,
    ack, return.

    A batch is acknowledged once all its flushes (and all earlier ones) have succeeded: while any are
    in flight the queue is polled briefly, so an idle stream is acknowledged within ~50 ms of its
    last flush. Raises whatever the capture thread or the worker raised; nothing past the last
    successful flush is acknowledged then.
    """

    def acknowledge_done() -> None:
        for stats in worker.done():
            if ack is not None and stats.ack is not None:
                ack(stats.ack)
            if on_batch is not None:
                on_batch()

    while True:
        if stop.is_set():
            capture_stop.set()
        if on_tick is not None:
            on_tick()
        batch = queue.get_batch(max_changes, max_delay, timeout=0.05 if worker.pending else 0.5)
        if batch:
            handle_retrying(worker, batch, stop)
            acknowledge_done()
            continue
        if worker.pending:
            acknowledge_done()
            continue
        if capture.error is not None:
            raise capture.error
        if not capture.is_alive() and queue.empty():
            return
