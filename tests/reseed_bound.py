"""What the reseed tests assert about each poll (pure: no services), and the report of a poller's run.

The bound, at every successful poll at time t (`lower_bounds`):

    count(t) >= min { rows(s) : s in [t - LAG_S, t] }

count is the smaller of the alias's `_count` and its search's total hits; rows(s) is the root
table's row count at moment s. Nothing is subtracted from it.

Why a correct engine keeps it. Live capture applies committed transactions in commit order, batch
after batch, and builds each batch's documents from rows at least as new as its commits; so at t the
alias shows every transaction committed before t - lag and none that is not committed yet: the rows
of some moment s in [t - lag, t], at least the window's minimum. The lag is the batch delay
(`max_delay_ms`, 100 ms in the tests), the build and the flush (tens of ms), and up to the refresh
interval (1 s) before a write is searchable; LAG_S = 5 s leaves room for two cores busy with a
rebuild beside live capture. A reseed adds no term: the serving generation stays current (live
writes to it and to the one being built) until the swap, and the new generation has every document
when the alias moves to it. A root TRUNCATE brings the bound down with the rows (to 0).

How the minimum is known. PostgreSQL is sampled once a poll, after the poll's searches, and the rows
can dip between two samples (a delete, then an insert, 20 ms apart): an index showing that dip is
right. So the writers journal the time span of every root delete they commit, and the rows between
two samples are taken to be at least the first sample minus the deletes that may have committed
between them (`floors`). That is the minimum itself, not a tolerance: no delete between two samples
(almost always), nothing lowered.

What is left. A refresh can land inside a bulk request, or between two flushes in flight that
OpenSearch applies out of order, and show a later delete before an earlier insert: one row below
any state the table had, for about a second. It takes a refresh in a window of milliseconds and a
root insert and delete in neighbouring batches; the writers insert root rows three times as often as
they delete them, so once the window is a few seconds old its minimum lies several rows below what
the index shows, and only the first seconds of a test have no margin. The tests accept that rarity.

While no live engine runs (`flusso run` stopped for a definition change or killed, an old index
before its migration) the serving index is frozen, and its lag is as long as that lasts: such a span
(a, b) is passed as `frozen`, and for t in [a, b + LAG_S] the window starts at a - LAG_S instead
(b + LAG_S: the engine that starts again catches up on the slot's backlog).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

LAG_S = 5.0  # what live lag explains
MAX_GAP_S = 3.0  # the longest a user may wait between two successful searches

Span = tuple[float, float]


def window_start(t: float, lag_s: float = LAG_S, frozen: Sequence[Span] = ()) -> float:
    """Where the window of the bound at `t` starts: `t - lag_s`, or earlier within a frozen span."""
    start = t - lag_s
    for a, b in frozen:
        if a <= t <= b + lag_s:
            start = min(start, a - lag_s)
    return start


def floors(samples: Sequence[tuple[Span, int]], deletes: Sequence[Span] = ()) -> list[int]:
    """For each sample ((sent, received) of the count query, rows), the least the rows can have been
    from it to the next: its rows minus the root deletes (each the span of its statement, commit
    included) that may have committed between the two. The last sample is its rows."""
    starts, ends = sorted(a for a, _ in deletes), sorted(b for _, b in deletes)
    out = []
    for j, ((sent, _), rows) in enumerate(samples):
        if j + 1 == len(samples):
            out.append(rows)
            continue
        until = samples[j + 1][0][1]
        # began before the next sample was back, ended after this one was sent (began <= ended)
        between = bisect.bisect_left(starts, until) - bisect.bisect_right(ends, sent)
        out.append(rows - max(0, between))
    return out


def lower_bounds(times: Sequence[float], samples: Sequence[tuple[Span, int] | None], lag_s: float = LAG_S,
                 frozen: Sequence[Span] = (), deletes: Sequence[Span] = ()) -> list[int | None]:
    """For each poll (started at `times`, ascending; `samples` its row count, read after its
    searches, or None), the least count it may show: the minimum of the floors of the samples that
    cover its window, from the last one received before the window starts to the one before the poll
    (the poll's own sample is read after its searches). None when no earlier sample is known."""
    known = [(i, s) for i, s in enumerate(samples) if s is not None]
    index = [i for i, _ in known]
    received = [s[0][1] for _, s in known]
    lows = floors([s for _, s in known], deletes)
    out: list[int | None] = []
    for i, t in enumerate(times):
        last = bisect.bisect_left(index, i)  # the known samples before poll i: [0, last)
        first = max(0, bisect.bisect_right(received, window_start(t, lag_s, frozen), 0, last) - 1)
        out.append(min(lows[first:last]) if last > first else None)
    return out


def longest_gap(ok_times: Sequence[float], start: float, end: float) -> float:
    """The longest stretch of [start, end] without a successful poll (from the start to the first,
    between two, from the last to the end)."""
    edges = [start, *sorted(ok_times), end]
    return max(b - a for a, b in zip(edges, edges[1:], strict=False))


@dataclass(frozen=True)
class Poll:
    t: float  # time.monotonic() when the poll started
    ok: bool  # _count and _search both answered 200
    status: int | None  # 200, else the first other status (None: no answer at all)
    count: int | None  # the alias's _count
    hits: int | None  # the search's total hits
    rows: int | None  # the root table's rows in PostgreSQL, read after both
    read: Span | None = None  # when that count query was sent and answered
    index: str | None = None  # the physical index of the search's first hit
    error: str | None = None

    @property
    def seen(self) -> int | None:
        return None if self.count is None or self.hits is None else min(self.count, self.hits)


@dataclass
class Report:
    polls: list[Poll]
    start: float
    end: float
    lag_s: float = LAG_S
    frozen: list[Span] = field(default_factory=list)
    deletes: list[Span] = field(default_factory=list)  # the writers' root deletes
    excused: list[Poll] = field(default_factory=list)  # failed polls a test explains and allows

    @property
    def failures(self) -> list[Poll]:
        return [p for p in self.polls if not p.ok and p not in self.excused]

    @property
    def statuses(self) -> Counter:
        return Counter(p.status for p in self.polls)

    @property
    def longest_gap_s(self) -> float:
        return longest_gap([p.t for p in self.polls if p.ok], self.start, self.end)

    def checked(self) -> list[tuple[Poll, int]]:
        """(poll, bound) for every successful poll that has a bound."""
        samples = [(p.read, p.rows) if p.read is not None and p.rows is not None else None for p in self.polls]
        bounds = lower_bounds([p.t for p in self.polls], samples, self.lag_s, self.frozen, self.deletes)
        return [(p, b) for p, b in zip(self.polls, bounds, strict=True)
                if p.ok and b is not None and p.seen is not None]

    def shortfalls(self) -> list[tuple[Poll, int]]:
        """(poll, bound) for every successful poll that showed less than its bound."""
        return [(p, b) for p, b in self.checked() if (p.seen or 0) < b]

    def worst(self) -> tuple[Poll, int] | None:
        found = self.shortfalls()
        return max(found, key=lambda pb: pb[1] - (pb[0].seen or 0)) if found else None

    @property
    def margin(self) -> int | None:
        """How close the counts came to the bound: the least of seen - bound (negative: a shortfall)."""
        return min(((p.seen or 0) - b for p, b in self.checked()), default=None)

    def problems(self) -> list[str]:
        """What a zero-downtime reseed must never show; empty when it showed none."""
        out = []
        if not self.polls:
            out.append("no poll at all")
        if self.failures:
            first = self.failures[0]
            out.append(f"{len(self.failures)} of {len(self.polls)} polls failed (statuses {dict(self.statuses)}); "
                       f"first at {first.t - self.start:.2f}s: {first.status} {(first.error or '')[:200]}".rstrip())
        if self.longest_gap_s > MAX_GAP_S:
            out.append(f"{self.longest_gap_s:.2f}s without a successful search (at most {MAX_GAP_S}s)")
        if (worst := self.worst()) is not None:
            p, bound = worst
            out.append(f"{len(self.shortfalls())} polls counted below the bound; worst at {p.t - self.start:.2f}s: "
                       f"{p.seen} documents (count {p.count}, hits {p.hits}) against at least {bound} "
                       f"(root rows {p.rows} then, lag {self.lag_s}s)")
        return out

    def summary(self) -> str:
        seen = [p.seen for p in self.polls if p.seen is not None]
        frozen = [(round(a - self.start, 2), round(b - self.start, 2)) for a, b in self.frozen]
        lines = [f"{len(self.polls)} polls in {self.end - self.start:.1f}s, statuses {dict(self.statuses)}, "
                 f"longest gap {self.longest_gap_s:.2f}s, margin to the bound {self.margin}, documents seen "
                 f"{min(seen, default=None)}..{max(seen, default=None)}, frozen spans {frozen}, "
                 f"{len(self.deletes)} root deletes", *self.problems()]
        return "\n".join(lines)
