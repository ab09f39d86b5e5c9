"""Where changes come from: the ChangeCapture protocol."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from ..changes import Change, Position


class ChangeCapture(Protocol):
    def prepare(self, tables: Sequence[str]) -> bool: ...
    def stream(self) -> Iterator[Change]: ...
    def snapshot(self, table: str, key: Sequence[str]) -> Iterator[Change]: ...
    def ack(self, position: Position) -> None: ...
