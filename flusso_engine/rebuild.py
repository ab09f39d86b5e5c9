"""A reseed without downtime: build the next generation beside the serving one, then swap the alias.

1. Claim: create `<alias>__g<N+1>` (build settings, unseeded) and register it as `building` in the
   index's state with compare-and-set; that entry is the lock (a live rebuild of the index refuses
   a second one, a dead one is taken over).
2. Handshake: while a live engine holds the slot, wait until it confirms that its batches write the
   new generation too (`routing.py`); with no live engine, the slot keeps the changes for whoever
   runs live next, which reads the same state.
3. Fill from the root table's keys (`backfill.py`), keeping a heartbeat (and the progress) in the state.
4. Give the generation its configured settings back, refresh it, mark it seeded, and move the alias
   to it in one request; then record the swap, keep the old generation as `previous`
   (`index_lifecycle.keep_previous`) and delete older ones.

A rebuild killed anywhere leaves the serving generation serving; the next rebuild (or start) finds
the dead one's entry (its pid gone, or its heartbeat stale) and deletes its generation.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from . import failpoints
from .backfill import fill
from .documents import DocumentBuilder
from .error import SinkError
from .generations import HEARTBEAT_S, Building, Generations, IndexState, generation_of, physical
from .observer import BackfillReport
from .sinks import AliasMoved, GenerationSink

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)  # under flusso_engine, whose level --log-level sets


RETIRE_AFTER_S = 5.0  # `keep_previous: false`: the replaced generation goes once searches on it are done


def delete_later(sink: GenerationSink, names: list[str]) -> None:
    """Delete `names` `RETIRE_AFTER_S` from now, on a timer (a long-lived process: live capture)."""
    for name in names:
        timer = threading.Timer(RETIRE_AFTER_S, _delete_quietly, (sink, name))
        timer.daemon = True  # a process stopping first leaves it unaccounted for: the next start deletes it
        timer.start()


def _delete_quietly(sink: GenerationSink, name: str) -> None:
    try:
        sink.delete_index(name)
    except SinkError as err:  # it is no generation anyone accounts for: the next start deletes it
        log.warning("could not delete the replaced generation %s: %s", name, err)


class RebuildError(SinkError):
    """A rebuild could not start or finish; the serving generation is untouched."""


class RebuildRunning(RebuildError):
    """Another rebuild of the index holds its lock."""


class RebuildSuperseded(RebuildError):
    """The rebuild lost its lock (a truncate started a new one, or it was taken over)."""


def promote(gens: Generations, sink: GenerationSink, alias: str, name: str, definition_hash: str,
            keep_previous: bool, owner: str | None = None, later: list[str] | None = None) -> IndexState:
    """Move the alias to `name` (from wherever it is: retried if someone moves it meanwhile, unless
    `owner`'s rebuild lost its lock), record the swap, and retire the old generations. The one just
    replaced, when it is not kept, is added to `later`: the caller deletes it `RETIRE_AFTER_S` on."""
    later = later if later is not None else []
    for _ in range(10):
        state, _ = gens.load(alias)
        if owner is not None and (state.building is None or state.building.owner != owner):
            raise RebuildSuperseded(f"the rebuild of {alias} into {name} lost its lock before the swap "
                                    "(another rebuild or a truncate replaced it); the serving generation is kept")
        old = sink.alias_target(alias)
        try:
            sink.swap_alias(alias, name, old)
            break
        except AliasMoved:
            if owner is not None:
                raise
            continue
    else:
        raise RebuildError(f"the alias {alias} kept moving while flusso swapped it to {name}")
    failpoints.hit("rebuild_after_swap")
    retired: list[str] = []

    def record(s: IndexState) -> IndexState:
        retired.clear()
        kept = old if keep_previous and old not in (None, alias) else None
        retired.extend(n for n in (s.previous, None if keep_previous else old) if n not in (None, alias, kept, name))
        if s.building is not None and (s.building.name == name or s.building.owner == owner):
            s.building = None
        s.serving, s.serving_hash, s.previous = name, definition_hash, kept
        s.swapped_at = datetime.now(UTC).isoformat()
        return s

    state = gens.update(alias, record)
    sink.set_generation_state(name, "serving")
    if state.previous is not None:
        sink.set_generation_state(state.previous, "previous")
    for n in retired:
        if n == old:  # searches may still run on it: delete it once they are done
            later.append(n)
        else:
            sink.delete_index(n)
    log.info("index %s now serves %s%s", alias, name, f" (previous: {state.previous})" if state.previous else "")
    return state


def supersede(gens: Generations, sink: GenerationSink, alias: str, why: str) -> None:
    """Drop the rebuild in progress, if any: its snapshot may predate `why` (a truncate). Its owner
    notices at its next heartbeat and stops; a dead owner's generation is deleted here."""
    dropped: list[Building] = []

    def drop(s: IndexState) -> IndexState | None:
        dropped.clear()
        if s.building is None:
            return None
        dropped.append(s.building)
        s.building = None
        return s

    gens.update(alias, drop)
    for b in dropped:
        log.warning("index %s: the rebuild into %s (%s) is dropped: %s", alias, b.name, b.who(), why)
        if not b.alive():
            sink.delete_index(b.name)


class Rebuild:
    """One index rebuilt into its next generation; `run` returns the backfill's report."""

    def __init__(self, engine: Engine, index: str, *, builder: DocumentBuilder, sink: GenerationSink,
                 reason: str = "", stop: threading.Event | None = None) -> None:
        self.engine = engine
        self.index = index
        self.builder = builder
        self.sink = sink
        self.reason = reason
        self.stop = stop or engine.stop
        self.gens = Generations(sink)
        self.owner = uuid.uuid4().hex
        self.lifecycle = engine.config.index_lifecycle
        self._halt = threading.Event()  # set when the run stops or the lock is lost
        self._lost: str | None = None
        self._documents = 0
        self._frozen = False
        self.name: str | None = None

    def run(self) -> BackfillReport:
        index = self.index
        mapping = self.builder.mapping(index)
        definition = self.builder.definition_hash(index)
        state = self.gens.reconcile(index)
        self._check_free(state)
        generation = self.gens.reserve(index, self._check_free)
        name = self.name = physical(index, generation)
        self.sink.create_generation(name, mapping, generation)
        frozen = self._frozen = state.serving is not None and state.serving_hash != definition
        rows = self.engine.count_rows(self.engine.plan.index(index).root)
        building = Building(name=name, generation=generation, definition_hash=definition, owner=self.owner,
                            reason=self.reason, frozen=frozen, rows=rows)

        def claim(s: IndexState) -> IndexState:
            self._check_free(s)
            s.building = building
            return s

        try:
            self.gens.update(index, claim)
        except BaseException:
            self.sink.delete_index(name)
            raise
        beside = f" beside {state.serving}" if state.serving else ""
        why = f" ({self.reason})" if self.reason else ""
        log.info("index %s: building generation %s%s%s", index, name, beside, why)
        if frozen:
            log.warning("index %s: the definition changed, so %s is frozen (no longer written) until %s replaces "
                        "it; searches keep being answered from it meanwhile", index, state.serving, name)
        beat = threading.Thread(target=self._heartbeat, name=f"flusso-rebuild-{index}", daemon=True)
        beat.start()
        try:
            report = self._build(name, mapping, definition)
        except BaseException:
            self._halt.set()
            beat.join(timeout=5)
            self._abandon(name)
            raise
        self._halt.set()
        beat.join(timeout=5)
        if report.skipped:
            self._abandon(name)
        return report

    def _check_free(self, state: IndexState) -> None:
        b = state.building
        if b is not None and b.owner != self.owner and b.alive():
            raise RebuildRunning(
                f"index {self.index} is being rebuilt already, into {b.name} by {b.who()}: wait for it to finish "
                "(`flusso status` shows its progress) or stop it; a rebuild whose process is gone is taken over "
                "by the next one"
            )

    def _build(self, name: str, mapping: dict, definition: str) -> BackfillReport:
        engine, index = self.engine, self.index
        failpoints.hit("rebuild_before_handshake")
        if not self._handshake(name):
            return BackfillReport(index=index, skipped=True, reason="stopped before its snapshot; the serving "
                                  "generation is unchanged")
        position = engine.capture.current_position()
        tables = engine.capture.table_fingerprints(sorted(engine.index_tables(index)))

        def progress(done: int) -> None:
            self._documents = done

        report = fill(engine, index, name, builder=self.builder, sink=self.sink, stop=self._halt,
                      failpoint="rebuild_backfill_flush,backfill_flush", on_progress=progress)
        if self._lost is not None:
            raise RebuildSuperseded(f"the rebuild of {index} into {name} stopped: {self._lost}")
        if report.skipped:
            report.reason = "stopped before it finished; the serving generation is unchanged"
            return report
        self.sink.finish_generation(name, mapping)
        self.sink.mark_seeded(name, engine.marker(index, position, tables))
        failpoints.hit("rebuild_before_swap")
        later: list[str] = []
        state = promote(self.gens, self.sink, index, name, definition, self.lifecycle.keep_previous, self.owner,
                        later)
        if later and not self.stop.wait(RETIRE_AFTER_S):
            for n in later:
                _delete_quietly(self.sink, n)
        self.gens.reconcile(index)  # a generation dropped earlier that a write in flight brought back
        report.generation, report.physical = generation_of(index, name), name
        report.previous, report.swapped_at = state.previous, state.swapped_at
        report.frozen = self._frozen
        return report

    def _handshake(self, name: str) -> bool:
        """Wait until live capture writes `name` too, while a live engine holds the slot; False when
        the run stopped meanwhile."""
        timeout = self.lifecycle.handshake_timeout_s
        deadline = time.monotonic() + timeout
        slot = self.engine.config.source.slot
        while True:
            state, _ = self.gens.load(self.index)
            b = state.building
            if b is None or b.owner != self.owner:
                raise RebuildSuperseded(f"the rebuild of {self.index} into {name} lost its lock before its snapshot")
            if b.dual_from is not None:
                log.info("index %s: live capture confirmed it writes %s too; taking the snapshot", self.index, name)
                return True
            info = self.engine.capture.slot_info()
            if info is None or not info.active:
                log.info("index %s: no live capture holds slot %s; the slot keeps the changes, and live capture "
                         "writes %s too once it runs", self.index, slot, name)
                return True
            if time.monotonic() >= deadline:
                raise RebuildError(
                    f"the live capture holding slot {slot} (pid {info.active_pid}) did not confirm within "
                    f"{timeout:.0f}s that it writes {name} too, so the rebuild of {self.index} did not start "
                    "(nothing changed). Is it a flusso from before generations, or stuck? Restart it, or raise "
                    "index_lifecycle.handshake_timeout_s"
                )
            if self.stop.wait(0.1) or self.engine.stop.is_set():
                return False

    def _heartbeat(self) -> None:
        """Keep the lock's heartbeat and the progress fresh; notice a lost lock or a stopped run."""
        last = time.monotonic()
        while not self._halt.wait(0.2):
            if self.stop.is_set() or self.engine.stop.is_set():
                self._halt.set()
                return
            if time.monotonic() - last < HEARTBEAT_S:
                continue
            last = time.monotonic()

            def beat(s: IndexState) -> IndexState:
                if s.building is None or s.building.owner != self.owner:
                    raise RebuildSuperseded("its lock was taken (a truncate or another rebuild replaced it)")
                s.building.heartbeat, s.building.documents = time.time(), self._documents
                return s

            try:
                self.gens.update(self.index, beat)
            except RebuildSuperseded as err:
                self._lost = str(err)
                self._halt.set()
                return
            except SinkError as err:  # the sink is down: the fill fails on its own
                log.warning("index %s: could not record the rebuild's heartbeat: %s", self.index, err)

    def _abandon(self, name: str) -> None:
        """Release the lock (if still held) and delete the unfinished generation."""
        def release(s: IndexState) -> IndexState | None:
            if s.building is None or s.building.owner != self.owner:
                return None
            s.building = None
            return s

        try:
            self.gens.update(self.index, release)
            state, _ = self.gens.load(self.index)
            if name not in (state.serving, state.previous):
                self.sink.delete_index(name)
        except SinkError as err:
            log.warning("index %s: could not clean up the unfinished generation %s (%s); the next rebuild "
                        "deletes it", self.index, name, err)
