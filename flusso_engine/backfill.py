"""Filling one physical index from its root table: keys -> build -> write, with progress.

Key ranges of `max_changes` keys are read in short keyset pages and built on
`batch.backfill_connections` connections at once, all importing one exported snapshot (taken again
every `shared.MAX_AGE_S`), and every document is versioned by its snapshot's WAL position: so the
fill may run beside live capture writing the same index (DESIGN §4, and "Zero-downtime reseeds" in
docs/architecture.md). A builder that cannot share a snapshot walks the capture's key snapshot
through the live pipeline instead, each chunk built at its own snapshot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import registry
from .backoff import Attempts, Backoff, retry
from .changes import Change, DocId, doc_id
from .documents import Built, DocumentBuilder
from .error import SourceError
from .observer import BackfillReport, BatchStats
from .pipeline import CaptureThread, Flushes, Worker, drive
from .sinks import Sink, write_built

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)
T = TypeVar("T")
Exported = Any  # documents/sql/shared.py's: an exported snapshot with its `position`


class SharingBuilder(DocumentBuilder, Protocol):
    """A builder whose forks build from one exported snapshot (`SharingBuilder`)."""

    def fork(self) -> SharingBuilder: ...
    def shared_snapshots(self) -> Any: ...  # `use()` -> Exported, `broken(snapshot)`, `close()`
    def build_in(self, snapshot: Exported, index: str, ids: Sequence[DocId]) -> Built: ...
    def key_page(self, index: str, after: DocId | None, limit: int,
                 snapshot: Exported | None = None) -> list[DocId]: ...


def fill(engine: Engine, index: str, target: str, *, builder: DocumentBuilder, sink: Sink,
         stop: threading.Event, failpoint: str = "backfill_flush",
         on_progress: Callable[[int], None] | None = None) -> BackfillReport:
    """Write every document of `index` into the physical index `target`; `report.skipped` when `stop`
    was set before the end. A builder that can share a snapshot (`documents/sql/shared.py`) builds
    on `batch.backfill_connections` connections at once; any other walks the capture's snapshot."""
    started = time.monotonic()
    plan = engine.plan.index(index)
    rows = engine.count_rows(plan.root)
    engine.observer.backfill_started(index, rows)

    def progress(done: int) -> None:
        engine.observer.backfill_progress(index, done)
        if on_progress is not None:
            on_progress(done)

    fill_with = _shared if hasattr(builder, "shared_snapshots") else _walked
    documents, rejected = fill_with(engine, index, target, builder, sink, stop, failpoint, progress)
    report = BackfillReport(index=index, documents=documents, rows=rows, rejected=rejected,
                            seconds=time.monotonic() - started)
    if stop.is_set():
        report.skipped, report.reason = True, "stopped before it finished; the index stays unseeded"
    return report


def _walked(engine: Engine, index: str, target: str, builder: DocumentBuilder, sink: Sink,
            stop: threading.Event, failpoint: str, progress: Callable[[int], None]) -> tuple[int, int]:
    """The root's keys from the capture's snapshot through the live pipeline (`drive`), each chunk
    built from the current rows at its own snapshot."""
    plan = engine.plan.index(index)
    key = plan.key

    def resolve(changes: Sequence[Change]) -> dict[str, set[str]]:
        return {index: {doc_id([c.new[k] for k in key]) for c in changes if c.new is not None}}

    worker = Worker(builder, sink, engine.batch.max_changes, engine.observer, only={index}, resolve=resolve,
                    failpoint=failpoint, in_flight=engine.batch.in_flight, guard=engine.raise_bounds,
                    targets=lambda _index: (target,))
    halt = threading.Event()
    # always the channel: a snapshot has no position to resume from, so a durable queue would add nothing
    queue = registry.create("queue", "channel", engine.context, halt)
    thread = CaptureThread(lambda: engine.capture.snapshot(plan.root, key), queue, halt, name="flusso-snapshot")
    thread.start()
    try:
        drive(worker, queue, thread, stop, halt, engine.batch.max_changes, engine.batch.max_delay,
              ack=None, on_batch=lambda: progress(worker.documents))
    finally:
        halt.set()
        worker.close()
        thread.join(timeout=10)
    return worker.documents, worker.rejected


def _shared(engine: Engine, index: str, target: str, builder: SharingBuilder, sink: Sink,
            stop: threading.Event, failpoint: str, progress: Callable[[int], None]) -> tuple[int, int]:
    """Key ranges of `max_changes` root keys, read page by page and built on K connections at once,
    all from one exported snapshot (taken again every `shared.MAX_AGE_S`), versioned by its
    position; written and flushed here, up to `flushes_in_flight` in the background. K builds run
    while the next page is read, so PostgreSQL builds on several cores while OpenSearch indexes."""
    k, size = engine.batch.backfill_connections, engine.batch.max_changes
    snapshots = builder.shared_snapshots()
    reader = builder.fork()
    free: SimpleQueue[SharingBuilder] = SimpleQueue()
    forks = [builder.fork() for _ in range(k)]
    for f in forks:
        free.put(f)
    flushes = Flushes(sink, engine.batch.in_flight, failpoint)
    pool = ThreadPoolExecutor(max_workers=k, thread_name_prefix="flusso-build")

    def in_snapshot(step: Callable[[Exported], T]) -> T:
        def once() -> T:
            with snapshots.use() as snapshot:
                try:
                    return step(snapshot)
                except SourceError:
                    snapshots.broken(snapshot)  # the next try exports another
                    raise
        tries = Attempts(Backoff(0.5, 10.0), 12, stop)
        return retry(once, tries, SourceError, lambda err, pause: log.warning(
            "%s; trying again in %.1fs (attempt %d of 12)", err, pause, tries.failures))

    def build(ids: list[DocId]) -> Built:
        fork = free.get()
        try:
            return in_snapshot(lambda snapshot: fork.build_in(snapshot, index, ids))
        finally:
            free.put(fork)

    def write(built: Built) -> None:
        stats = BatchStats(changes=len(built.docs), documents=len(built.docs))
        write_built(sink, target, built)
        position = built.position
        flushes.send(stats, lambda: engine.raise_bounds(0, position))
        flushes.settle()
        progress(flushes.documents)

    pending: deque[Future[Built]] = deque()
    after: DocId | None = None
    try:
        while not stop.is_set():
            ids = in_snapshot(lambda snapshot, last=after: reader.key_page(index, last, size, snapshot=snapshot))
            if not ids:
                break
            after = ids[-1]
            pending.append(pool.submit(build, ids))
            while len(pending) > k:  # k builds at work, the next page already read
                write(pending.popleft().result())
        while pending and not stop.is_set():
            write(pending.popleft().result())
        flushes.settle(wait=True)
        progress(flushes.documents)
        log.info("backfill of %s: built on %d connections from %d shared snapshot(s)", index, k, snapshots.taken)
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        flushes.close()
        snapshots.close()
        for f in (reader, *forks):
            f.close()
    return flushes.documents, flushes.rejected
