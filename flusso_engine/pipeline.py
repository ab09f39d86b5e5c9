"""The execution machinery: a capture thread feeding the bounded queue, and the worker that turns
each batch into flushed documents and says how far the slot may be acknowledged.

Everything here is stopped through `threading.Event`s, never through signals.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence

from . import failpoints
from .changes import Change, DocId, Position
from .documents import DocumentBuilder
from .documents.visibility import batch_xids
from .error import SourceError
from .observer import BatchStats, Observer
from .queue import Queue
from .sinks import FlushReport, Sink

log = logging.getLogger("flusso.pipeline")


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


class Worker:
    """Resolve -> build -> write -> flush for one batch at a time.

    Documents are built and flushed in chunks of at most `max_docs` ids, so a change that fans out
    to many documents stays in bounded memory. `handle` returns only after every document of the
    batch is flushed; its `ack` is the end position of the last transaction whose commit marker the
    batch held, so a batch that ends inside a transaction acknowledges no further than the one before.
    """

    def __init__(
        self,
        builder: DocumentBuilder,
        sink: Sink,
        max_docs: int,
        observer: Observer,
        only: Collection[str] | None = None,
        on_truncate: Callable[[str], None] | None = None,
        resolve: Callable[[Sequence[Change]], dict[str, set[DocId]]] | None = None,
        failpoint: str = "live_flush",
    ) -> None:
        self.builder = builder
        self.resolve = resolve or builder.resolve
        self.failpoint = failpoint
        self.sink = sink
        self.max_docs = max_docs
        self.observer = observer
        self.only = set(only) if only is not None else None
        self.on_truncate = on_truncate
        self.documents = 0
        self.rejected = 0

    def handle(self, batch: Sequence[Change]) -> BatchStats:
        started = time.monotonic()
        stats = BatchStats(changes=sum(1 for c in batch if not c.is_commit))
        segment: list[Change] = []
        for change in batch:
            if change.op == "truncate":
                self._apply(segment, stats)
                segment = []
                if self.on_truncate is not None:
                    self.on_truncate(change.table)
            elif change.is_commit:
                stats.ack = change.position
            else:
                segment.append(change)
        self._apply(segment, stats)
        stats.seconds = time.monotonic() - started
        self.observer.batch_flushed(stats)
        return stats

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
                for doc_id, doc in built.docs.items():
                    self.sink.write(index, doc_id, doc, built.position)
                buffered += len(built.docs)
                stats.documents += len(built.docs)
                if buffered >= self.max_docs:
                    self._flush(stats)
                    buffered = 0
        if buffered:
            self._flush(stats)

    def _flush(self, stats: BatchStats) -> None:
        report: FlushReport = self.sink.flush()
        failpoints.hit(self.failpoint)
        stats.deleted += report.deleted
        stats.conflicts += report.conflicts
        stats.rejected += len(report.rejected)
        stats.requests += report.requests
        self.documents += report.written + report.deleted
        self.rejected += len(report.rejected)


def handle_retrying(worker: Worker, batch: Sequence[Change], stop: threading.Event,
                    attempts: int = 12, backoff: float = 0.5, max_backoff: float = 10.0) -> BatchStats:
    """Handle a batch, again after a lost database connection (a restart, a failover): documents
    are rebuilt from current rows, so repeating a batch is harmless. Sink failures have their own
    retries in the sink; other errors, and a database still gone after the attempts, stop the run."""
    for attempt in range(1, attempts + 1):
        try:
            return worker.handle(batch)
        except SourceError as err:
            if attempt == attempts or stop.is_set():
                raise
            pause = min(backoff * 2 ** (attempt - 1), max_backoff)
            log.warning("%s; trying the batch again in %.1fs (attempt %d of %d)", err, pause, attempt, attempts)
            stop.wait(pause)
    raise AssertionError("unreachable")


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
    """The worker's loop: batch, handle, ack; on stop, drain what was read, flush, ack, return.

    Raises whatever the capture thread or the worker raised; nothing past the last successful flush
    is acknowledged then.
    """
    while True:
        if stop.is_set():
            capture_stop.set()
        if on_tick is not None:
            on_tick()
        batch = queue.get_batch(max_changes, max_delay, timeout=0.5)
        if batch:
            stats = handle_retrying(worker, batch, stop)
            if ack is not None and stats.ack is not None:
                ack(stats.ack)
            if on_batch is not None:
                on_batch()
            continue
        if capture.error is not None:
            raise capture.error
        if not capture.is_alive() and queue.empty():
            return
