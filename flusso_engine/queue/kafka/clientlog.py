"""librdkafka's own log lines, through Python logging, at most one per kind every 10 s.

While a broker is away the client logs every reconnect attempt (several a second); one line per
kind (`FAIL`, `SESSTMOUT`, ...) and interval says the same without drowning the run's log.
"""

from __future__ import annotations

import logging
import time


class _Repeats(logging.Filter):
    def __init__(self, every: float) -> None:
        super().__init__()
        self.every = every
        self._last: dict[str, float] = {}
        self._dropped: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        kind = text.split(" ", 1)[0]
        now = time.monotonic()
        if now - self._last.get(kind, -self.every) < self.every:
            self._dropped[kind] = self._dropped.get(kind, 0) + 1
            return False
        self._last[kind] = now
        dropped = self._dropped.pop(kind, 0)
        if dropped:
            record.msg, record.args = f"{text} ({dropped} more like it in the last {self.every:.0f} s)", None
        return True


def client_logger(side: str, every: float = 10.0) -> logging.Logger:
    """The logger handed to a librdkafka client of `side` (producer, consumer, admin)."""
    logger = logging.getLogger(f"flusso_engine.queue.kafka.client.{side}")
    if not logger.filters:
        logger.addFilter(_Repeats(every))
    return logger
