"""The in-process queue: a bounded, blocking channel between the capture thread and the worker.

Bounded so that a backlog never grows memory: `put` blocks while the channel is full, which stops
capture from reading the slot any faster than documents are flushed (back-pressure). Neither side
can be interrupted by a signal on a worker thread, so both wake up every `poll` seconds to look at
the stop event; everything else is driven by one lock and two conditions, never by sleeps.

Semantics, for one consumer (the worker) and any number of producers:

- `put(item)` enqueues and returns True; while the channel is full it blocks, and it returns False
  without enqueuing once the stop event is set (the producer should stop reading).
- `get_batch(max_items, max_delay, timeout=None)` waits until at least one item is there, then
  returns as soon as `max_items` are available (or the channel is full), or when `max_delay`
  seconds have passed since the oldest item it returns was put, with what there is. It returns []
  when nothing arrived within `timeout` seconds (None: wait for ever). Once the stop event is set
  it no longer waits: it returns at once what is there, so a stopping worker can drain the channel
  batch by batch.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Channel(Generic[T]):
    def __init__(self, capacity: int, stop: threading.Event | None = None, poll: float = 0.1) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._stop = stop or threading.Event()
        self._poll = poll
        self._items: deque[tuple[float, T]] = deque()  # (time put, item)
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._wanted = 1  # how many items the waiting consumer needs before it is worth waking

    def put(self, item: T) -> bool:
        """Enqueue `item`, blocking while the channel is full; False (not enqueued) once stopped."""
        with self._lock:
            while len(self._items) >= self.capacity:
                if self._stop.is_set():
                    return False
                self._not_full.wait(self._poll)
            if self._stop.is_set():
                return False
            self._items.append((time.monotonic(), item))
            n = len(self._items)
            # wake the consumer only when it can act: the first item starts its max_delay clock,
            # a full batch ends its wait; the items in between would only cost context switches
            if n == 1 or n >= self._wanted:
                self._not_empty.notify()
            return True

    def get_batch(self, max_items: int, max_delay: float, timeout: float | None = None) -> list[T]:
        """Up to `max_items` items, oldest first; [] after `timeout` with nothing, or when stopped empty."""
        if max_items <= 0:
            raise ValueError("max_items must be positive")
        give_up = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._items:
                if self._stop.is_set():
                    return []
                wait = self._poll if give_up is None else min(self._poll, give_up - time.monotonic())
                if wait <= 0:
                    return []
                self._not_empty.wait(wait)
            # a full channel cannot grow the batch: waiting longer would only stall the producers
            self._wanted = min(max_items, self.capacity)
            try:
                while len(self._items) < self._wanted and not self._stop.is_set():
                    left = self._items[0][0] + max_delay - time.monotonic()
                    if left <= 0:
                        break
                    self._not_empty.wait(min(left, self._poll))
            finally:
                self._wanted = 1
            n = min(max_items, len(self._items))
            popleft = self._items.popleft
            batch = [popleft()[1] for _ in range(n)]
            self._not_full.notify(n)
            return batch

    def empty(self) -> bool:
        with self._lock:
            return not self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def create(context, stop: threading.Event) -> Channel:  # noqa: ANN001 - registry.Context
    """The registry's factory (`queue.type: channel`): one bounded channel per phase of the run."""
    return Channel(context.config.queue.capacity, stop=stop)
