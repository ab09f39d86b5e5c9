"""The engine's events as a Dagster run sees them: throttled log lines, and the figures a heartbeat shows.

`context.log` is a `logging.Logger` that Dagster made safe to call from any thread, so the engine's
own `LoggingObserver` writes the run's log lines (one progress line every few seconds, not one per
document). What a heartbeat needs is kept here for the op's thread to read.
"""

from __future__ import annotations

import logging
import threading
import time

from flusso_engine.observer import BatchStats, LagReport, LoggingObserver


class DagsterObserver(LoggingObserver):
    """Forwards to the run's log; counts documents and keeps the latest lag report for heartbeats."""

    def __init__(self, logger: logging.Logger, every: float = 5.0) -> None:
        super().__init__(logger, every=every)
        self._lock = threading.Lock()
        self.documents = 0
        self.changes = 0
        self.latest_lag: LagReport | None = None
        self.latest_lag_at: float | None = None

    def batch_flushed(self, stats: BatchStats) -> None:
        # One log line per batch would flood the run's event log: count only.
        with self._lock:
            self.documents += stats.documents
            self.changes += stats.changes

    def lag(self, report: LagReport) -> None:
        # Recorded as the heartbeat observation; the run's log only gets it at debug level.
        self.log.debug("slot %s: lag %s bytes, confirmed %s, %.0f changes/s%s", report.slot, report.lag_bytes,
                       report.confirmed_lsn, report.changes_per_s, report.backlog_text())
        with self._lock:
            self.latest_lag, self.latest_lag_at = report, time.time()

    def snapshot(self) -> tuple[int, int, LagReport | None, float | None]:
        """(documents, changes, latest lag report, when it was taken), read together."""
        with self._lock:
            return self.documents, self.changes, self.latest_lag, self.latest_lag_at
