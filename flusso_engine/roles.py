"""`flusso run --role capture` and `--role worker`: live capture split over processes by a durable queue.

The capture role owns the slot: it prepares it, backfills what is unseeded, starts reseeds, streams
the slot into the queue and acknowledges the slot as far as the queue holds whole transactions
(`confirmed`). Workers, any number on any machine, own the documents: they join the queue's consumer
group, resolve, build and flush, and commit their offsets only after the flush (`batch_done`). A
worker keeps live capture's write set (`routing.py`): it refreshes it after every batch's builds and
before committing, and answers a rebuild's handshake, so a reseed beside live is exact with any
number of workers (docs/architecture.md, "The Kafka queue"); and it writes a heartbeat of what it did
for `flusso status` (`heartbeat.py`). Only a queue with both hooks will do.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from . import registry
from .error import ConfigError, Problem, SourceError
from .heartbeat import Heartbeat
from .pipeline import CaptureThread, Worker, drive
from .routing import Routing

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)

ROLES = ("capture", "worker")
IDLE_RAISE_S = 5.0


def _durable_queue(engine: Engine, **sides: bool) -> Any:
    check_role_queue(engine)
    queue = registry.create("queue", engine.config.queue.type, engine.context, engine._capture_stop, **sides)
    if not (hasattr(queue, "confirmed") and hasattr(queue, "batch_done")):
        getattr(queue, "close", lambda: None)()
        raise ConfigError([Problem("queue.type", f"{engine.config.queue.type} is not a durable queue, and "
                                   "--role capture/worker need one: set queue.type: kafka, or run without --role")])
    return queue


def check_role_queue(engine: Engine) -> None:
    """Refuse a role with the channel before anything runs (the factory's kwargs are kafka's)."""
    if engine.config.queue.type == "channel":
        raise ConfigError([Problem("queue.type", "channel is not a durable queue, and --role capture/worker need "
                                   "one: set queue.type: kafka (with bootstrap and topic), or run without --role")])


def run_capture(engine: Engine) -> None:
    """The slot into the queue until the stop event; the slot acked to what the queue confirmed."""
    engine._capture_stop.clear()
    queue = _durable_queue(engine, consume=False)
    thread = CaptureThread(engine.capture.stream, queue, engine._capture_stop)
    thread.start()
    log.info("live capture started on slot %s (capture role, into %s)", engine.config.source.slot,
             engine.config.queue.topic)
    acked, idle_raised = 0, 0.0
    last = [time.monotonic(), 0]

    def ack_held() -> int:
        position = queue.confirmed()
        if position > acked:
            engine._ack(position)
        return max(acked, position)

    try:
        while True:
            if engine.stop.is_set():
                engine._capture_stop.set()
            if engine.rebuild_errors:
                raise engine.rebuild_errors.pop(0)
            acked = ack_held()
            now = time.monotonic()
            bound = engine.slot_guard.state
            if bound is not None and engine.capture.idle > bound.confirmed_bound and now - idle_raised >= IDLE_RAISE_S:
                engine.slot_guard.raise_to(confirm=engine.capture.idle)  # lets the idle keepalives through
                idle_raised = now
            if now - last[0] >= engine.lag_every:
                engine.report_lag(worker_changes=thread.count - last[1], seconds=now - last[0])
                last[0], last[1] = now, thread.count
            if thread.error is not None:
                raise thread.error
            if not thread.is_alive():
                break
            engine._capture_stop.wait(0.05)
    finally:
        engine._capture_stop.set()
        thread.join(timeout=30)
        queue.close()
        for rebuild, _ in list(engine._rebuilding.values()):
            rebuild.join(timeout=30)
    ack_held()  # what the queue took while stopping


class _UntilStopped(threading.Thread):
    """`drive` follows a capture thread; a worker has none, so this one lives until the stop."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__(name="flusso-worker-wait", daemon=True)
        self._stop_event = stop
        self.error: BaseException | None = None
        self.count = 0

    def run(self) -> None:
        self._stop_event.wait()


def attach(engine: Engine) -> None:
    """A worker holds no slot: it reads the slot's state that the capture role adopted (waiting for it
    up to `source.slot_wait_s`), so its flushes raise the version bound and its markers carry the
    incarnation."""
    deadline = time.monotonic() + engine.config.source.slot_wait_s
    while engine.slot_guard.attach() is None:
        if time.monotonic() >= deadline or engine.stop.is_set():
            raise SourceError(f"slot {engine.config.source.slot} has no state in the sink yet: start "
                              "`flusso run --role capture` first (it creates the slot and records its identity)")
        time.sleep(1.0)


def run_worker(engine: Engine) -> None:
    """Consume, resolve, build, flush, commit offsets, until the stop event; then finish what was handed out."""
    engine._capture_stop.clear()
    attach(engine)
    engine.started = True
    queue = _durable_queue(engine, produce=False)
    if engine.generations is not None:
        hashes = {i: engine.builder.definition_hash(i) for i in engine.config.indexes}
        engine.routing = Routing(engine.generations, hashes, owner=uuid.uuid4().hex,
                                 position=engine.capture.current_position)
        engine.routing.refresh()
    worker = Worker(engine.builder, engine.sink, engine.batch.max_changes, engine.observer,
                    on_truncate=engine._on_truncate, on_resync=engine._on_resync, in_flight=engine.batch.in_flight,
                    guard=engine.raise_bounds, routing=engine.routing)
    until = _UntilStopped(engine._capture_stop)
    until.start()
    log.info("worker started on %s (group %s)", engine.config.queue.topic, engine.config.queue.consumer_group)
    last = [time.monotonic(), 0]
    heartbeat = Heartbeat(engine.sink, engine.config.queue.consumer_group)

    def tick() -> None:
        if engine.rebuild_errors:
            raise engine.rebuild_errors.pop(0)
        if engine.routing is not None:
            engine.routing.maybe_refresh()
        heartbeat.beat(queue.consumer.member_id(), queue.consumer.consumed, worker.documents)
        now = time.monotonic()
        if now - last[0] >= engine.lag_every:
            consumed = queue.consumer.consumed
            log.info("worker: %.0f changes/s, %d documents flushed", (consumed - last[1]) / (now - last[0]),
                     worker.documents)
            last[0], last[1] = now, consumed

    try:
        drive(worker, queue, until, engine.stop, engine._capture_stop, engine.batch.max_changes,
              engine.batch.max_delay, ack=None, on_batch=queue.batch_done, on_tick=tick)
    finally:
        engine._capture_stop.set()
        worker.close()
        until.join(timeout=5)
        queue.close()
        for rebuild, _ in list(engine._rebuilding.values()):
            rebuild.join(timeout=30)
