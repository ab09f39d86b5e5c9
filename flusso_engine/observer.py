"""What the engine reports while it works, and two ways to show it: log lines and a progress bar.

The engine calls an `Observer`; the CLI shows a rich progress bar for backfills in a terminal,
the Dagster layer turns the same events into run log lines and metadata.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass
class BatchStats:
    """One flushed batch: what went in, what came out, and what may now be acknowledged."""

    changes: int = 0
    documents: int = 0
    deleted: int = 0
    conflicts: int = 0
    rejected: int = 0
    requests: int = 0
    seconds: float = 0.0
    ack: int | None = None


@dataclass
class BackfillReport:
    index: str
    documents: int = 0
    rows: int = 0
    rejected: int = 0
    seconds: float = 0.0
    skipped: bool = False
    reason: str = ""
    generation: int | None = None  # the generation it built (a sink with generations) ...
    physical: str | None = None  # ... as the physical index `<index>__g<N>`
    previous: str | None = None  # the generation it replaced, kept for inspection
    swapped_at: str | None = None
    frozen: bool = False  # the replaced generation had another definition and was not written meanwhile

    @property
    def rate(self) -> float:
        return self.documents / self.seconds if self.seconds > 0 else 0.0


@dataclass
class LagReport:
    slot: str
    lag_bytes: int | None
    confirmed_lsn: str | None
    changes_per_s: float = 0.0
    # capture: polling: its change log's unacknowledged rows and the oldest one's age, and the oldest
    # open transaction (it holds back the horizon); None for the WAL
    backlog_rows: int | None = None
    oldest_unacked_s: float | None = None
    horizon_s: float | None = None

    def backlog_text(self) -> str:
        if self.backlog_rows is None:
            return ""
        oldest = f", oldest {self.oldest_unacked_s:.0f}s" if self.oldest_unacked_s is not None else ""
        horizon = f", oldest open transaction {self.horizon_s:.0f}s" if self.horizon_s is not None else ""
        return f", backlog {self.backlog_rows} rows{oldest}{horizon}"


class Observer(Protocol):
    def backfill_started(self, index: str, total: int) -> None: ...
    def backfill_progress(self, index: str, done: int) -> None: ...
    def backfill_finished(self, report: BackfillReport) -> None: ...
    def batch_flushed(self, stats: BatchStats) -> None: ...
    def lag(self, report: LagReport) -> None: ...


class LoggingObserver:
    """Log lines, at most one progress line every `every` seconds per index: fit for files and Dagster."""

    def __init__(self, logger: logging.Logger | None = None, every: float = 5.0) -> None:
        self.log = logger or log
        self.every = every
        self._last: dict[str, float] = {}
        self._totals: dict[str, int] = {}
        self._started: dict[str, float] = {}

    def backfill_started(self, index: str, total: int) -> None:
        self._totals[index] = total
        self._started[index] = self._last[index] = time.monotonic()
        self.log.info("backfill of %s: %d rows in the root table", index, total)

    def backfill_progress(self, index: str, done: int) -> None:
        now = time.monotonic()
        if now - self._last.get(index, 0.0) < self.every:
            return
        self._last[index] = now
        total = self._totals.get(index, 0)
        elapsed = now - self._started.get(index, now)
        rate = done / elapsed if elapsed > 0 else 0.0
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        self.log.info("backfill of %s: %d / %d documents%s, %.0f docs/s", index, done, total, pct, rate)

    def backfill_finished(self, report: BackfillReport) -> None:
        if report.skipped:
            self.log.info("backfill of %s skipped: %s", report.index, report.reason)
            return
        self.log.info(
            "backfill of %s done: %d documents in %.1fs (%.0f docs/s), %d rejected",
            report.index, report.documents, report.seconds, report.rate, report.rejected,
        )

    def batch_flushed(self, stats: BatchStats) -> None:
        self.log.debug(
            "flushed %d changes -> %d documents (%d deleted, %d conflicts, %d rejected) in %.3fs",
            stats.changes, stats.documents, stats.deleted, stats.conflicts, stats.rejected, stats.seconds,
        )

    def lag(self, report: LagReport) -> None:
        self.log.info(
            "slot %s: lag %s bytes, confirmed %s, %.0f changes/s%s",
            report.slot, report.lag_bytes, report.confirmed_lsn, report.changes_per_s, report.backlog_text(),
        )


class ProgressObserver(LoggingObserver):
    """A rich progress bar per backfilled index, for a terminal; everything else as log lines."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        super().__init__(logger)
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>8.0f} docs/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._tasks: dict[str, Any] = {}

    def backfill_started(self, index: str, total: int) -> None:
        self._started[index] = time.monotonic()
        if not self._tasks:
            self._progress.start()
        self._tasks[index] = self._progress.add_task(index, total=total or None, rate=0.0)

    def backfill_progress(self, index: str, done: int) -> None:
        task = self._tasks.get(index)
        if task is None:
            return
        elapsed = time.monotonic() - self._started.get(index, time.monotonic())
        self._progress.update(task, completed=done, rate=done / elapsed if elapsed > 0 else 0.0)

    def backfill_finished(self, report: BackfillReport) -> None:
        task = self._tasks.pop(report.index, None)
        if task is not None:
            self._progress.update(task, completed=report.documents, total=report.documents or None,
                                  rate=report.rate)
        if not self._tasks:
            self._progress.stop()
        super().backfill_finished(report)
