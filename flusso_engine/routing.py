"""Where live capture writes each index's documents: the generations in the index's state, and the
live side of a rebuild's handshake.

Live writes an index's documents to its serving generation and to the one being built, each only if
it has this process's definition of the index (a serving generation of another definition is
frozen until the rebuild swaps it out). The write set is cached; `refresh` reads every index's state
in one request. The worker refreshes it after a batch's builds and before acknowledging the batch,
and builds the batch again when a generation joined meanwhile (`epoch`): that read-after-build is
what makes a rebuild exact (see `docs/architecture.md`, "Zero-downtime reseeds"); the handshake only
lets the rebuild wait until live capture writes to it before taking its snapshot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection

from .changes import Position
from .error import SinkError
from .generations import Building, Generations

log = logging.getLogger(__name__)  # under flusso_engine, whose level --log-level sets

SWEEP_AFTER_S = 5.0  # after a generation leaves the write set, the flushes that still named it are done


class DefinitionConflict(SinkError):
    """A generation is being built with a definition this process cannot build."""


class Routing:
    def __init__(self, generations: Generations, hashes: dict[str, str], owner: str,
                 position: Callable[[], Position],
                 on_refresh: Callable[[dict[str, str]], None] | None = None) -> None:
        self.generations = generations
        self.hashes = hashes  # index -> this process's definition hash
        self.owner = owner
        self.position = position
        self.epoch = 0  # grows whenever a generation joins some index's write set
        self._targets: dict[str, tuple[str, ...]] = {}
        self._frozen: dict[str, str] = {}  # index -> the serving generation left alone (logged once)
        self._read_at = 0.0
        self._dropped: dict[str, float] = {}  # index -> when a generation left its write set
        self.serving: dict[str, str] = {}  # index -> its serving generation, when this process writes it
        self._on_refresh = on_refresh  # told `serving` after every read (the sink's `refresh: wait_for`)

    def targets(self, index: str) -> tuple[str, ...]:
        return self._targets.get(index, ())

    def maybe_refresh(self, every: float = 1.0) -> None:
        """`refresh` unless it ran in the last `every` seconds (for an idle stream's ticks)."""
        if time.monotonic() - self._read_at >= every:
            self.refresh()

    def refresh(self) -> None:
        """Read every index's state; raises `DefinitionConflict` when a rebuild writes another definition."""
        self._read_at = now = time.monotonic()
        states = self.generations.load_many(list(self.hashes))
        grew = False
        for index, state in states.items():
            dropped = self._dropped.get(index)
            if state is None or (state.building is not None and not state.building.alive()) or (
                dropped is not None and now - dropped >= SWEEP_AFTER_S
            ):
                # no state yet (a deleted state index), a dead rebuild, or a generation this process
                # wrote until a moment ago (a write in flight may have brought it back): tidy up
                state = self.generations.reconcile(index)
                self._dropped.pop(index, None)
            mine = self.hashes[index]
            names: list[str] = []
            self.serving.pop(index, None)
            if state.serving is not None:
                if state.serving_hash == mine:
                    names.append(state.serving)
                    self.serving[index] = state.serving
                    self._frozen.pop(index, None)
                elif self._frozen.get(index) != state.serving:
                    self._frozen[index] = state.serving
                    log.warning("index %s: its serving generation %s has another definition than this config's; "
                                "it is frozen (not written) until a rebuild with this definition replaces it",
                                index, state.serving)
            building = state.building
            if building is not None:
                if building.definition_hash != mine:
                    raise DefinitionConflict(
                        f"index {index} is being rebuilt into {building.name} with another definition "
                        f"({building.definition_hash[:12]}) by {building.who()}; this process runs definition "
                        f"{mine[:12]} and cannot write that generation, so it stops before acknowledging anything "
                        "it did not write there. Restart it with the flusso.yaml the rebuild uses, or stop the "
                        "rebuild."
                    )
                names.append(building.name)
                if building.dual_from is None:
                    self._handshake(index, building)
            new, old = tuple(names), self._targets.get(index, ())
            if not set(new) <= set(old):
                grew = True
            if not set(old) <= set(new):
                self._dropped[index] = now
            self._targets[index] = new
        if grew:
            self.epoch += 1
        if self._on_refresh is not None:
            self._on_refresh(dict(self.serving))

    def _handshake(self, index: str, building: Building) -> None:
        """Tell the rebuild that live capture writes its generation from now on."""
        position = self.position()

        def confirm(state):  # noqa: ANN001, ANN202 - IndexState
            b = state.building
            if b is None or b.name != building.name or b.dual_from is not None:
                return None
            b.dual_from, b.dual_by = position, self.owner
            return state

        self.generations.update(index, confirm)
        log.info("index %s: live capture writes the generation being built, %s, too", index, building.name)


def wait_for(sink: object, indexes: Collection[str]) -> Callable[[dict[str, str]], None]:
    """The routing's `on_refresh` for the indexes with `refresh: wait_for`: the sink's flushes to
    their serving generations (never one being built, whose refresh is off) wait until searchable.
    A sink without refreshes (no `refresh_waits`) is left alone."""

    def tell(serving: dict[str, str]) -> None:
        if hasattr(sink, "refresh_waits"):
            sink.refresh_waits = frozenset(serving[i] for i in indexes if i in serving)

    return tell
