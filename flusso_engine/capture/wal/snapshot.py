"""The backfill snapshot of the WAL backend: the shared keyset walk (`capture/snapshot.py`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ...changes import Change
from ..snapshot import SNAPSHOT_PAGE, keyset_snapshot
from .base import WalBase, sql_errors

__all__ = ["SNAPSHOT_PAGE", "Snapshot"]


class Snapshot(WalBase):
    """The part of `WalCapture` that reads a table's keys for a backfill."""

    def snapshot(self, table: str, key: Sequence[str]) -> Iterator[Change]:
        """Every row's key, in key order, as `insert`s at position 0 (`keyset_snapshot`)."""
        return keyset_snapshot(self._sql, table, key, self._snapshot_page, sql_errors)
