"""The engine's reseeds: why changes may have been missed, a backfill in line, a rebuild beside live
capture, and what a truncate does.

With a sink that keeps generations (`GenerationSink`), every reseed is a `Rebuild` into the next
generation while the serving one keeps answering; a root `TRUNCATE` swaps to an empty generation
at once. A sink without them (stdout) is rebuilt in place, as before generations.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from typing import TYPE_CHECKING

from . import registry
from .backfill import fill
from .capture import Repairs
from .changes import Position
from .generations import Building, Generations, physical
from .observer import BackfillReport
from .rebuild import Rebuild, RebuildRunning, RebuildSuperseded, delete_later, promote, supersede
from .sinks import GenerationSink

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)  # under flusso_engine, whose level --log-level sets


class Reseeds:
    """Mixed into `Engine`: everything that fills an index again."""

    def backfill(self: Engine, index: str, reason: str = "") -> BackfillReport:
        """Fill the index again from its root table: into a new generation that replaces the serving
        one when it is complete (a sink with generations), else in place after emptying it.

        Whatever made it unseeded, nothing of the old documents is reused: an index left by a crashed
        backfill or a lost slot may hold documents whose rows are gone.
        """
        if isinstance(self.sink, GenerationSink):
            report = Rebuild(self, index, builder=self.builder, sink=self.sink, reason=reason).run()
        else:
            position = self.capture.current_position()
            tables = self.capture.table_fingerprints(sorted(self.index_tables(index)))
            self.sink.recreate(index, self.builder.mapping(index))
            report = fill(self, index, index, builder=self.builder, sink=self.sink, stop=self.stop)
            if not report.skipped:
                self.sink.mark_seeded(index, self.marker(index, position, tables))
        self.observer.backfill_finished(report)
        return report

    def start_rebuild(self: Engine, index: str, reason: str, superseding: bool = False) -> threading.Thread:
        """Rebuild `index` on a thread of its own, beside live capture (with its own builder and sink).
        A rebuild of the index this process started before is cancelled first (it may predate what
        asks for this one). An error stops the run at its next tick; a superseded rebuild just ends.

        `superseding` (a truncate's or resync's rebuild): one that another process registered in the
        meantime is dropped too, a few times over: with a durable queue, one statement's truncates of
        several tables reach several workers at once, and each must end with a rebuild that started
        after it; a dropped rebuild ends quietly, so the last one standing does."""
        before = self._rebuilding.get(index)
        cancel = threading.Event()
        if before is not None:
            before[1].set()

        def run() -> None:
            if before is not None:
                before[0].join()
            if cancel.is_set() or self.stop.is_set():
                return
            builder = registry.create("documents", "sql", self.context)
            sink = registry.create("sinks", self.config.sink.type, self.context)
            try:
                for attempt in range(5):
                    try:
                        report = Rebuild(self, index, builder=builder, sink=sink, reason=reason, stop=cancel).run()
                        break
                    except RebuildRunning:
                        if not superseding or attempt == 4 or cancel.is_set():
                            raise
                        supersede(Generations(sink), sink, index, reason)
                if not (report.skipped and cancel.is_set()):
                    self.observer.backfill_finished(report)
            except RebuildSuperseded as err:
                log.info("%s", err)
            except BaseException as err:  # noqa: BLE001 - raised by the live loop's next tick
                if not cancel.is_set():
                    self.rebuild_errors.append(err)
            finally:
                builder.close()
                sink.close()

        thread = threading.Thread(target=run, name=f"flusso-rebuild-{index}", daemon=True)
        self._rebuilding[index] = (thread, cancel)
        thread.start()
        return thread

    def _missed(self: Engine, repairs: Repairs) -> dict[str, list[str]]:
        """Per index, why changes to it may have been missed while the slot existed."""
        publication = self.config.source.publication
        current = self.capture.table_fingerprints([*self.plan.captured(self.config.captured_tables()),
                                                   *sorted(self.plan.matviews)])
        out: dict[str, list[str]] = {}
        for index in self.config.indexes:
            tables = self.index_tables(index)
            why = out.setdefault(index, [])
            if repairs.publication_created:
                why.append(f"publication {publication} had to be created again for the existing slot, so "
                           "changes made without it were not captured")
            why += [f"publication {publication} lacked table {t}, so its changes were not captured"
                    for t in sorted(tables & repairs.tables_added) if not repairs.publication_created]
            why += [f"REPLICA IDENTITY FULL had to be set again on {t} (or a partition of it), so old rows "
                    "sent meanwhile may have lacked what finds a moved or deleted row's documents"
                    for t in sorted(tables & repairs.identity_set)]
            why += [repairs.missed[t] for t in sorted(tables & repairs.missed.keys())]
            marker = self.sink.seed_marker(index)
            for table, then in sorted((marker.tables if marker is not None else {}).items()):
                now = current.get(table)
                if now is None or then == now:
                    continue
                if table in self.plan.matviews:
                    why.append(f"materialized view {table} was refreshed (or replaced) since the index was seeded")
                elif then[0] != now[0]:
                    why.append(f"table {table} was replaced under the same name since the index was seeded "
                               f"(OID {then[0]}, now {now[0]})")
                else:
                    why.append(f"partitions of {table} were attached, detached or truncated since the index was "
                               "seeded (no row change reports that)")
        return out

    def _on_truncate(self: Engine, table: str, position: Position) -> None:
        """A truncated root table swaps its index to an empty generation at once; any other table on
        an index's tree starts a rebuild of it beside live capture, unless its root table was truncated
        by the same statement (`TRUNCATE book CASCADE`: the empty generation is right already)."""
        for index in self.config.indexes:
            if self.plan.index(index).root == table:
                log.info("%s was truncated: index %s moves to an empty generation", table, index)
                self._empty_generation(index)
                self._emptied[index] = position
            elif table in self.index_tables(index) and self._emptied.get(index) != position:
                self._reseed_beside_live(index, f"{table} was truncated")

    def _on_resync(self: Engine, table: str, position: Position) -> None:
        """Rows of `table` changed at or before `position` in a way no row change reports (partitions
        attached, detached, truncated; a change made under another definition): rebuild each index
        that uses it, unless it was seeded at or after that position."""
        if self._covered.get(table, -1) >= position:
            return
        for index in self.config.indexes:
            if table not in self.index_tables(index):
                continue
            marker = self.sink.seed_marker(index)
            if marker is None or marker.position < position:
                self._reseed_beside_live(index, f"rows of {table} changed in a way its row changes do not report")
        self._covered[table] = position

    def _reseed_beside_live(self: Engine, index: str, why: str) -> None:
        """The serving generation is stale from here on: say so durably, then rebuild it (in place,
        in line, for a sink without generations)."""
        log.warning("rebuilding index %s: %s", index, why)
        self.sink.mark_unseeded(index)
        if not isinstance(self.sink, GenerationSink):
            self.backfill(index, why)
            return
        supersede(Generations(self.sink), self.sink, index, why)
        self.start_rebuild(index, why, superseding=True)

    def _empty_generation(self: Engine, index: str) -> None:
        mapping = self.builder.mapping(index)
        if not isinstance(self.sink, GenerationSink):
            position = self.capture.current_position()
            tables = self.capture.table_fingerprints(sorted(self.index_tables(index)))
            self.sink.recreate(index, mapping)
            self.sink.mark_seeded(index, self.marker(index, position, tables))
            return
        gens = Generations(self.sink)
        supersede(gens, self.sink, index, "its root table was truncated")
        position = self.capture.current_position()
        tables = self.capture.table_fingerprints(sorted(self.index_tables(index)))
        generation = gens.reserve(index)
        name = physical(index, generation)
        self.sink.create_generation(name, mapping, generation)
        self.sink.finish_generation(name, mapping)
        self.sink.mark_seeded(name, self.marker(index, position, tables))
        later: list[str] = []
        promote(gens, self.sink, index, name, self.builder.definition_hash(index),
                self.config.index_lifecycle.keep_previous, later=later)
        delete_later(self.sink, later)
        if self.routing is not None:
            self.routing.refresh()

    def unseeded(self: Engine, created: bool, only: Collection[str] | None = None) -> list[str]:
        names = self.index_names(only)
        if created or self.slot_incarnation is None:
            return names
        return [n for n in names if (not self.sink.is_seeded(n, self.marker(n)) or self._concrete(n))
                and self.rebuilding(n) is None]

    def rebuilding(self: Engine, index: str) -> Building | None:
        """The rebuild of `index` in progress (in any process), if one is alive: it swaps when done,
        so the index needs no other backfill meanwhile."""
        if self.generations is None:
            return None
        building = self.generations.load(index)[0].building
        return building if building is not None and building.alive() else None

    def _concrete(self: Engine, index: str) -> bool:
        """A concrete index under the alias's name (an install from before generations): it is
        migrated by rebuilding it into a generation, which then replaces it in one swap."""
        return isinstance(self.sink, GenerationSink) and self.sink.alias_target(index) == index

    def backfill_unseeded(self: Engine, created: bool, only: Collection[str] | None = None,
                          force: bool = False) -> list[BackfillReport]:
        names = self.index_names(only) if force else self.unseeded(created, only)
        reports = []
        for index in self.index_names(only):
            if self.stop.is_set():
                break
            if index in names:
                reports.append(self.backfill(index, self._why_reseed(index, force)))
            else:
                running = self.rebuilding(index)
                reason = ("the index is seeded (force a reseed to rewrite it)" if running is None else
                          f"it is being rebuilt into {running.name} by {running.who()}, which swaps it in when done")
                report = BackfillReport(index=index, skipped=True, reason=reason)
                self.observer.backfill_finished(report)
                reports.append(report)
        return reports

    def _why_reseed(self: Engine, index: str, force: bool) -> str:
        if force:
            return "forced"
        if self._concrete(index):
            return "migrating a concrete index to generations"
        if self.sink.definition_hash(index) not in (None, self.builder.definition_hash(index)):
            return "its definition changed"
        return "unseeded"

