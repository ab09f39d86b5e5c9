"""Flushes in flight: sent on background threads, settled in the order they were sent."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from .. import failpoints
from ..changes import DocId
from ..observer import BatchStats
from ..sinks import FlushReport, Sink


def chunked(ids: Iterable[DocId], size: int) -> Iterator[list[DocId]]:
    chunk: list[DocId] = []
    for i in ids:
        chunk.append(i)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Flushes:
    """Flushes sent on background threads, at most `limit` at once, settled in the order they were sent.

    `send` waits for a free slot (the oldest flush) first, so memory stays bounded by `limit` + 1
    buffers. A flush's error is raised by the `settle` or `send` that finds it; nothing sent after
    the last settled flush is then acknowledged. With `limit` 0, or a sink that cannot `detach` its
    buffer, every flush runs in line.
    """

    def __init__(self, sink: Sink, limit: int, failpoint: str) -> None:  # one name, or several comma-separated
        self.sink = sink
        self.failpoint = failpoint
        detach = getattr(sink, "detach", None)
        self._detach: Callable[[], Callable[[], FlushReport]] | None = detach if limit > 0 else None
        self.limit = limit
        self._pool = (ThreadPoolExecutor(max_workers=limit, thread_name_prefix="flusso-flush")
                      if self._detach is not None else None)
        self._sent: deque[tuple[int, Future[FlushReport], BatchStats]] = deque()
        self.sent = 0  # flushes sent so far
        self.settled = 0  # every flush up to this one has succeeded
        self.documents = 0  # written or deleted by the settled flushes
        self.rejected = 0

    def send(self, stats: BatchStats, before: Callable[[], None] | None = None) -> None:
        """Send the sink's buffer, after `before` (on the same thread, so it runs beside the build
        of the next chunk); its report is credited to `stats` once it settles."""
        self.sent += 1
        if self._pool is None or self._detach is None:  # in line
            done: Future[FlushReport] = Future()
            done.set_result(self._run(self.sink.flush, before))
            self._sent.append((self.sent, done, stats))
            return
        while len(self._sent) >= self.limit:
            self._settle_oldest()
        self._sent.append((self.sent, self._pool.submit(self._run, self._detach(), before), stats))

    def _run(self, flush: Callable[[], FlushReport], before: Callable[[], None] | None = None) -> FlushReport:
        if before is not None:
            before()
        report = flush()
        failpoints.hit(*self.failpoint.split(","))
        return report

    def _settle_oldest(self) -> None:
        seq, future, stats = self._sent[0]
        report = future.result()  # raises the flush's error
        self._sent.popleft()
        self.settled = seq
        stats.deleted += report.deleted
        stats.conflicts += report.conflicts
        stats.rejected += len(report.rejected)
        stats.requests += report.requests
        self.documents += report.written + report.deleted
        self.rejected += len(report.rejected)

    def settle(self, wait: bool = False) -> None:
        """Settle the flushes that finished, oldest first, up to the first still in flight; with
        `wait`, every flush sent."""
        while self._sent and (wait or self._sent[0][1].done()):
            self._settle_oldest()

    def close(self) -> None:
        """Wait for what is in flight (its retries are bounded and stop with the run), then let the
        threads go."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
