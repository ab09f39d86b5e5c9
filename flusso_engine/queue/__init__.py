"""Between capture and the worker: the bounded Queue protocol."""

from __future__ import annotations

from typing import Protocol

from ..changes import Change


class Queue(Protocol):
    def put(self, item: Change) -> None: ...
    def get_batch(self, max_items: int, max_delay: float) -> list[Change]: ...
