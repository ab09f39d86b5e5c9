"""What a user of the index sees during a reseed: searches, counts, and the rows they should count.

`SearchPoller` searches and counts the index by its configured name every `every` seconds (a
`match_all` of size 1, then `_count`), through a client that never retries, so a failure is seen
as it happens; a 404 (the index gone) or any other error is a failed poll. `RootCounter` reads
`count(*)` of the root table on a connection of its own every 200 ms; each poll is paired with
the sample nearest in time. `summarize` turns the polls into the scenario's figures.
"""

from __future__ import annotations

import bisect
import threading
import time
from typing import Any

import psycopg
from opensearchpy import OpenSearch
from opensearchpy.exceptions import TransportError
from psycopg import sql


def _status(err: Exception) -> str:
    """An error as the poll records it: the HTTP status, or the exception's name (no connection)."""
    code = getattr(err, "status_code", None) if isinstance(err, TransportError) else None
    return str(code) if isinstance(code, int) else type(err).__name__


class RootCounter(threading.Thread):
    """`count(*)` of the root table every `every` seconds: (time.monotonic() at the query, rows)."""

    def __init__(self, dsn: str, table: str, every: float = 0.2) -> None:
        super().__init__(daemon=True, name="root-counter")
        self.dsn, self.every = dsn, every
        schema, _, name = table.rpartition(".")
        self.query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema or "public", name))
        self.stop = threading.Event()
        self.times: list[float] = []
        self.rows: list[int] = []

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                began = time.monotonic()
                rows = conn.execute(self.query).fetchone()[0]
                self.times.append((began + time.monotonic()) / 2)
                self.rows.append(rows)
                self.stop.wait(max(0.0, self.every - (time.monotonic() - began)))

    def at(self, t: float) -> int | None:
        """The root rows sampled nearest to `t`."""
        i = bisect.bisect_left(self.times, t)
        near = [j for j in (i - 1, i) if 0 <= j < len(self.times)]
        return self.rows[min(near, key=lambda j: abs(self.times[j] - t))] if near else None


class SearchPoller(threading.Thread):
    """Every `every` s: a search and a count of `index`; each poll is (t, search status, count
    status, count, search ms), a status "200" when it answered."""

    def __init__(self, opensearch: str, index: str, every: float = 0.05) -> None:
        super().__init__(daemon=True, name="search-poller")
        self.client = OpenSearch(hosts=[opensearch], timeout=10, max_retries=0, retry_on_timeout=False)
        self.index, self.every = index, every
        self.stop = threading.Event()
        self.polls: list[tuple[float, str, str, int | None, float]] = []

    def run(self) -> None:
        body = {"size": 1, "query": {"match_all": {}}, "track_total_hits": False}
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                self.client.search(index=self.index, body=body)
                searched = "200"
            except Exception as err:  # noqa: BLE001 - every failure is a failed poll, recorded
                searched = _status(err)
            search_ms = 1000 * (time.monotonic() - began)
            try:
                count, counted = int(self.client.count(index=self.index)["count"]), "200"
            except Exception as err:  # noqa: BLE001 - as above
                count, counted = None, _status(err)
            self.polls.append((began, searched, counted, count, search_ms))
            self.stop.wait(max(0.0, self.every - (time.monotonic() - began)))


def _longest_gap(ok_times: list[float], start: float, end: float) -> tuple[float, float]:
    """The longest time between successful searches over [start, end] (from the last success
    before `start`, up to `end` if none came after the last one): (gap s, its start)."""
    before = [t for t in ok_times if t < start]
    points = ([before[-1]] if before else [start]) + [t for t in ok_times if start <= t <= end] + [end]
    return max(((b - a, a) for a, b in zip(points, points[1:], strict=False)), default=(0.0, start))


def _window(polls: list[tuple], roots: RootCounter, start: float, end: float) -> dict[str, Any]:
    """The figures of the polls sent in [start, end]: failures, longest gap, lowest count and the
    largest shortfall against the root rows."""
    inside = [p for p in polls if start <= p[0] <= end]
    ok_times = [p[0] for p in polls if p[1] == "200"]
    gap, gap_at = _longest_gap(ok_times, start, end)
    failed: dict[str, int] = {}
    for p in inside:
        for status in {p[1], p[2]} - {"200"}:
            failed[status] = failed.get(status, 0) + 1
    counted = [(p[0], p[3], roots.at(p[0])) for p in inside if p[2] == "200"]
    lowest = min(counted, key=lambda c: c[1], default=None)
    short = max(((c[2] - c[1], c) for c in counted if c[2] is not None), default=None, key=lambda s: s[0])
    below = sum(1 for c in counted if c[2] and c[1] < 0.99 * c[2])
    search_ms = sorted(p[4] for p in inside if p[1] == "200")
    return {
        "polls": len(inside),
        "failed_polls": sum(1 for p in inside if p[1] != "200" or p[2] != "200"),
        "failed_by_status": failed,
        "longest_gap_ms": round(1000 * gap),
        "longest_gap_from_s": round(gap_at - start, 2),
        "min_count": lowest[1] if lowest else None,
        "min_count_at_s": round(lowest[0] - start, 2) if lowest else None,
        "root_rows_at_min_count": lowest[2] if lowest else None,
        "max_shortfall": short[0] if short else None,
        "max_shortfall_at_s": round(short[1][0] - start, 2) if short else None,
        "polls_below_99pct": below,
        "search_ms_p50": round(search_ms[len(search_ms) // 2], 1) if search_ms else None,
        "search_ms_max": round(search_ms[-1], 1) if search_ms else None,
    }


def summarize(polls: list[tuple], roots: RootCounter, started: float, ended: float,
              tail_s: float) -> dict[str, Any]:
    """`reseed`: the polls from the reseed's start to `tail_s` after its end; `before`: the polls
    before it (the live index's normal figures, to read the reseed's against). Times in s from the
    reseed's start."""
    first = polls[0][0] if polls else started
    return {"before": _window(polls, roots, first, started),
            "reseed": _window(polls, roots, started, ended + tail_s)}


def timeline(polls: list[tuple], roots: RootCounter, started: float) -> list[list[Any]]:
    """Every poll, compact: [s from the reseed's start, search status, count status, count, root rows]."""
    return [[round(p[0] - started, 3), p[1], p[2], p[3], roots.at(p[0])] for p in polls]
