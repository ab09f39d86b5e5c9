"""The one backoff: a capped exponential delay, and an interruptible loop of attempts.

Three loops wait between tries: a failing flush (`FailurePolicies.backoff`, with jitter, so that
several writers do not retry in lockstep), a lost replication connection (`capture/wal/stream.py`)
and a batch whose database connection went away (`pipeline.handle_retrying`). They differ in their
numbers and their messages, which their callers keep; the arithmetic and the waiting are here.
The wait is `stop.wait`, never `time.sleep`, so a stop ends it at once.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """The wait before retry n is `base_s * 2**(n-1)` seconds, capped at `max_s`, less up to
    `jitter` of it at random (the cap is never exceeded)."""

    base_s: float
    max_s: float
    jitter: float = 0.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (1 for the first retry)."""
        if attempt < 1:
            raise ValueError("attempt counts retries from 1")
        # the exponent is bounded so that a long outage (a large attempt) cannot overflow a float
        delay = min(self.max_s, self.base_s * 2 ** min(attempt - 1, 62))
        return delay * (1 - self.jitter * random.random())


class Attempts:
    """Failures of one step counted against a limit, with a backoff's pause between tries.

    For loops that cannot be a single call (a generator that yields between its tries): the
    caller counts a failure with `failed`, which says how long to pause or that the limit is
    reached, pauses with `pause` (interrupted by `stop`), and calls `succeeded` after a try that
    worked, so that only consecutive failures count.
    """

    def __init__(self, backoff: Backoff, limit: int, stop: threading.Event) -> None:
        self.backoff = backoff
        self.limit = limit  # the failures that end the loop
        self.stop = stop
        self.failures = 0

    def failed(self) -> float | None:
        """Count one failure: the seconds to pause before the next try, or None once `limit`
        failures in a row have happened."""
        self.failures += 1
        if self.failures >= self.limit:
            return None
        return self.backoff.delay(self.failures)

    def pause(self, seconds: float) -> bool:
        """Wait before the next try; True if `stop` was set (at once, or while waiting)."""
        return self.stop.wait(seconds)

    def succeeded(self) -> None:
        self.failures = 0


def retry(
    step: Callable[[], T],
    attempts: Attempts,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    on_retry: Callable[[BaseException, float], None],
) -> T:
    """`step()`, tried again after a `retry_on` error, up to `attempts.limit` tries.

    The last error is raised when the tries are used up, and also when `stop` is set by the time
    a try fails: a stop ends the retries. A stop during a pause still lets one more try run (what
    it would finish is worth finishing). `on_retry(error, pause)` runs before each pause (a log
    line: `attempts.failures` is the number of the failed try).
    """
    while True:
        try:
            return step()
        except retry_on as err:
            pause = attempts.failed()
            if pause is None or attempts.stop.is_set():
                raise
            on_retry(err, pause)
            attempts.pause(pause)
