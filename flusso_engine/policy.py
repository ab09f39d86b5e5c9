"""How much to batch and what to do when the sink fails: the config's numbers as runtime values.

The config speaks in milliseconds because that is what people write in YAML; the engine works in
seconds (what `time` and `Event.wait` take), so the conversion happens once, here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .backoff import Backoff
from .config import BatchConfig, FailuresConfig

ItemRejection = Literal["fail", "skip", "dead_letter"]
RejectionKeeps = Literal["none", "previous"]


@dataclass(frozen=True)
class BatchPolicy:
    """One flush takes up to `max_changes` changes, or whatever arrived within `max_delay` seconds;
    up to `in_flight` flushes are on the wire while the next one is built."""

    max_changes: int = 1000
    max_delay: float = 0.2
    in_flight: int = 2
    backfill_connections: int = 2  # a backfill's builds at once, from one shared snapshot

    @classmethod
    def from_config(cls, config: BatchConfig) -> BatchPolicy:
        return cls(max_changes=config.max_changes, max_delay=config.max_delay_ms / 1000,
                   in_flight=config.flushes_in_flight, backfill_connections=config.backfill_connections)


@dataclass(frozen=True)
class FailurePolicies:
    """What a rejected item does (`item_rejection`; `item_rejection_keeps` says whether the
    document's previous version stays in the index), and how a failing flush is retried.

    A flush is tried once and then retried up to `retries` times; the wait before retry n is
    `backoff * 2**(n-1)` seconds, capped at `max_backoff`, less up to `jitter` of it at random so
    that several writers do not retry in lockstep (the cap is never exceeded).
    """

    item_rejection: ItemRejection = "dead_letter"
    item_rejection_keeps: RejectionKeeps = "none"
    retries: int = 5
    backoff_s: float = 0.2
    max_backoff_s: float = 10.0
    jitter: float = 0.1

    @classmethod
    def from_config(cls, config: FailuresConfig) -> FailurePolicies:
        flush = config.flush_error
        return cls(
            item_rejection=config.item_rejection,
            item_rejection_keeps=config.item_rejection_keeps,
            retries=flush.retries,
            backoff_s=flush.backoff_ms / 1000,
            max_backoff_s=flush.max_backoff_ms / 1000,
        )

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (1 for the first retry)."""
        return Backoff(self.backoff_s, self.max_backoff_s, self.jitter).delay(attempt)
