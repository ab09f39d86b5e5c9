"""The loop: a capture thread feeding the bounded queue, and `drive`, which gathers changes (group
commit, `batching.py`), handles them and acknowledges what is flushed."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from ..backoff import Attempts, Backoff, retry
from ..changes import Change, Position
from ..error import SourceError
from ..observer import BatchStats
from ..queue import Queue
from .batching import GroupCommit
from .worker import Worker

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
    on_batch: Callable[[int], None] | None = None,
    on_tick: Callable[[], None] | None = None,
) -> None:
    """The worker's loop: gather, handle, ack what is flushed; on stop, drain what was read, flush,
    ack, return.

    Changes are gathered by group commit (`batching.GroupCommit`): handed over as soon as the queue
    is momentarily empty and no flush is in flight, gathered while one is (up to `max_changes`, for
    at most `max_delay`). A batch is acknowledged once all its flushes (and all earlier ones) have
    succeeded: while any are in flight the queue is polled briefly, so an idle stream is
    acknowledged within ~50 ms of its last flush. Raises whatever the capture thread or the worker
    raised; nothing past the last successful flush is acknowledged then.

    The gathered changes are held here (at most `max_changes` beside the queue's capacity), and
    `max_delay` counts from when the first of them was taken from the queue.

    `on_batch(n)` is called once per batch flushed, with the number of `get_batch` calls that
    gathered it (a durable queue commits those reads' offsets then).
    """
    policy = GroupCommit(max_changes, max_delay)

    def acknowledge_done() -> None:
        for stats in worker.done():
            if ack is not None and stats.ack is not None:
                ack(stats.ack)
            if on_batch is not None:
                on_batch(reads.popleft())

    gathered: list[Change] = []
    reads: deque[int] = deque()  # per batch handed over and not yet done: the get_batch calls it took
    gets = 0
    since = 0.0
    while True:
        if stop.is_set():
            capture_stop.set()
        if on_tick is not None:
            on_tick()
        age = time.monotonic() - since if gathered else 0.0
        wanted = max_changes - len(gathered)
        got = queue.get_batch(wanted, 0.0, timeout=policy.wait(len(gathered), age, in_flight=worker.pending))
        if got:
            if not gathered:
                since = time.monotonic()
            gathered.extend(got)
            gets += 1
        if worker.pending:
            acknowledge_done()  # settles the flushes that finished: the decision below sees them
        stopping = stop.is_set() or not capture.is_alive()
        if policy.hand_over(len(gathered), time.monotonic() - since, in_flight=worker.pending,
                            drained=len(got) < wanted, stopping=stopping):
            batch, gathered = gathered, []
            reads.append(gets)
            gets = 0
            handle_retrying(worker, batch, stop)
            acknowledge_done()
            continue
        if got or gathered or worker.pending:
            continue
        if capture.error is not None:
            raise capture.error
        if not capture.is_alive() and queue.empty():
            return
