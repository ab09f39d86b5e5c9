"""When to hand the gathered changes to the worker: group commit, the decision as pure logic.

Waiting out `max_delay` for every batch made each change wait ~`max_delay` even on a quiet stream
(a change every 20 ms waited 200 ms). A batch is worth gathering only while something else makes
the worker wait anyway: so the changes gathered are handed over as soon as the queue is
momentarily empty *and* no flush is on the wire; while a flush is in flight (or changes keep
arriving faster than they are taken) they keep gathering, up to `max_changes`, and never longer
than `max_delay` (the upper bound it always was). Acknowledgements are untouched: a batch is
acknowledged by the commit markers it holds, so handing over part of a transaction acknowledges
no further than the transaction before it.
"""

from __future__ import annotations

from dataclasses import dataclass

POLL_S = 0.005  # while gathering behind a flush in flight: how often to look whether it finished
IDLE_S = 0.5  # nothing gathered, nothing in flight: how long to wait for the first change
SETTLE_S = 0.05  # nothing gathered, a flush in flight: how often to settle it (an idle stream's ack)


@dataclass(frozen=True)
class GroupCommit:
    """The batching decision for `drive`: `hand_over` says whether the changes gathered go to the
    worker now; `wait` how long the next look at the queue may block."""

    max_changes: int
    max_delay: float

    def hand_over(self, gathered: int, age: float, *, in_flight: bool, drained: bool, stopping: bool) -> bool:
        """`gathered` changes, the oldest taken `age` seconds ago; `drained`: the last look found the
        queue empty after taking what it held; `stopping`: the run stops or the capture ended."""
        if gathered <= 0:
            return False
        if gathered >= self.max_changes or age >= self.max_delay or stopping:
            return True
        return drained and not in_flight

    def wait(self, gathered: int, age: float, *, in_flight: bool) -> float:
        """Seconds the next look at the queue may wait for a first change."""
        if gathered <= 0:
            return SETTLE_S if in_flight else IDLE_S
        if not in_flight:
            return 0.0  # the caller hands over at once; a look costs nothing
        return max(0.0, min(POLL_S, self.max_delay - age))
