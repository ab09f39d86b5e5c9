"""`flusso verify`: prove every document equals its rows, report the drift, repair only what drifted.

`check.py` classifies (the snapshot-position rule and the re-check are in its docstring),
`search.py` reads the index (point in time, `search_after`, doc values), `diff.py` says which fields
differ, `report.py` makes the DataFrame, the table and the report file, and `repair` below rebuilds
the drifted ids through the normal build and flush path.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..pipeline.flushes import chunked
from ..sinks import write_built
from .check import KINDS, Finding, IndexCheck, Verifier, advance_wal
from .report import drift_frame, print_report, summary_frame, write_report

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = ["KINDS", "Finding", "IndexCheck", "RepairReport", "Verifier", "drift_frame", "print_report",
           "repair", "summary_frame", "verify", "write_report"]

log = logging.getLogger(__name__)


def verify(engine: Engine, only: Collection[str] | None = None, sample: int | None = None,
           settle_s: float = 30.0) -> list[IndexCheck]:
    """Every index's check (all ids, or `sample` random ones)."""
    verifier = Verifier(engine, settle_s=settle_s, page=engine.config.batch.max_changes)
    return [verifier.check(index, sample) for index in engine.index_names(only)]


@dataclass
class RepairReport:
    written: int = 0
    deleted: int = 0
    newer: int = 0  # writes refused because the index held a newer version: nothing older replaced it
    remaining: list[IndexCheck] = field(default_factory=list)  # what a re-check still found


def repair(engine: Engine, checks: Sequence[IndexCheck], settle_s: float = 30.0) -> RepairReport:
    """Rebuild exactly the drifted ids from the current rows and write them (a row gone: a delete),
    each versioned by its build's WAL position like any live write, so a document written meanwhile
    from a newer snapshot is never replaced; then check those ids again."""
    report = RepairReport()
    verifier = Verifier(engine, settle_s=settle_s, page=engine.config.batch.max_changes)
    advance_wal(engine.context.dsn)  # above the versions of documents changed behind flusso's back
    for check in checks:
        ids = [f.id for f in check.findings]
        stored = {f.id: set(f.routings) for f in check.findings}  # a routed index's copies go, but the right one
        for chunk in chunked(ids, engine.config.batch.max_changes):
            built = engine.builder.build(check.index, chunk)
            engine.slot_guard.raise_to(version=built.position)  # slotstate.py: a no-op unless loaded
            write_built(engine.sink, check.index, built, stored)
            flushed = engine.sink.flush()
            report.written += flushed.written
            report.deleted += flushed.deleted
            report.newer += flushed.conflicts
        again = IndexCheck(check.index, "repaired", documents=len(ids))
        again.findings = verifier.recheck(check.index, ids)
        report.remaining.append(again)
        log.info("repaired %d drifted ids of %s: %d still drift", len(ids), check.index, len(again.findings))
    return report
