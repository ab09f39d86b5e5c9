"""Filling one physical index from its root table: snapshot keys -> build -> write, with progress.

The snapshot walks the root table's keys in short keyset pages (no long transaction), and every
document is built from the current rows at its build's snapshot, versioned by that snapshot's WAL
position: so the fill may run beside live capture writing the same index (DESIGN §4).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from . import registry
from .changes import Change, doc_id
from .documents import DocumentBuilder
from .observer import BackfillReport
from .pipeline import CaptureThread, Worker, drive
from .sinks import Sink

if TYPE_CHECKING:
    from .engine import Engine


def fill(engine: Engine, index: str, target: str, *, builder: DocumentBuilder, sink: Sink,
         stop: threading.Event, failpoint: str = "backfill_flush",
         on_progress: Callable[[int], None] | None = None) -> BackfillReport:
    """Write every document of `index` into the physical index `target`; `report.skipped` when `stop`
    was set before the end."""
    started = time.monotonic()
    plan = engine.plan.index(index)
    rows = engine.count_rows(plan.root)
    engine.observer.backfill_started(index, rows)
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

    def progress() -> None:
        engine.observer.backfill_progress(index, worker.documents)
        if on_progress is not None:
            on_progress(worker.documents)

    try:
        drive(worker, queue, thread, stop, halt, engine.batch.max_changes, engine.batch.max_delay,
              ack=None, on_batch=progress)
    finally:
        halt.set()
        worker.close()
        thread.join(timeout=10)
    report = BackfillReport(index=index, documents=worker.documents, rows=rows, rejected=worker.rejected,
                            seconds=time.monotonic() - started)
    if stop.is_set():
        report.skipped, report.reason = True, "stopped before it finished; the index stays unseeded"
    return report
