"""Between capture and the worker: the bounded Queue protocol."""

from __future__ import annotations

from typing import Protocol

from ..changes import Change


class Queue(Protocol):
    def put(self, item: Change) -> bool: ...  # blocks when full; False once stopped (item not queued)
    def get_batch(self, max_items: int, max_delay: float, timeout: float | None = None) -> list[Change]: ...
    def empty(self) -> bool: ...
