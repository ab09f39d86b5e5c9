"""An index's generations: which physical index serves its alias, which one is being built, by whom.

The name in flusso.yaml (`books`) is an alias; documents live in physical indexes `books__g<N>`.
Each index has one state document in the sink (`index:<alias>`, written with compare-and-set):
the serving generation and its definition, the previous one, and the rebuild in progress if any,
which doubles as the lock that keeps two rebuilds of one index apart (`Building`: its owner, host
and pid, and a heartbeat; see `Building.alive`). The alias itself is the truth about what serves:
a state document that disagrees (a rebuild killed between its swap and its state write, a state
index deleted) is corrected from it by `reconcile`. Each physical index's `_meta.flusso` carries
its generation number and a `state` label too, for whoever looks at the index.

Why no change can be lost while a generation is built beside live capture: `docs/architecture.md`,
"Zero-downtime reseeds".
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .error import SinkError
from .sinks import GENERATION_SEPARATOR, GenerationSink

log = logging.getLogger(__name__)  # under flusso_engine, whose level --log-level sets

SEPARATOR = GENERATION_SEPARATOR
LEASE_S = 30.0  # a rebuild whose heartbeat is older than this is abandoned (sooner: its process is gone)
HEARTBEAT_S = 5.0
STRAY_AGE_S = 60.0  # an unregistered generation younger than this may be a rebuild about to register it
HOST = socket.gethostname()


def physical(alias: str, generation: int) -> str:
    return f"{alias}{SEPARATOR}{generation}"


def generation_of(alias: str, name: str) -> int | None:
    """The generation number of a physical index of `alias`; None for anything else (`alias` itself)."""
    m = re.fullmatch(re.escape(alias + SEPARATOR) + r"(\d+)", name)
    return int(m.group(1)) if m else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Building:
    """A rebuild in progress: the generation it builds and the lock it holds on the index."""

    name: str
    generation: int
    definition_hash: str
    owner: str
    host: str = HOST
    pid: int = field(default_factory=os.getpid)
    started: float = field(default_factory=time.time)
    heartbeat: float = field(default_factory=time.time)
    reason: str = ""
    # the live engine's handshake: its batches write here from this position on (`dual_by` is its id)
    dual_from: int | None = None
    dual_by: str | None = None
    documents: int = 0
    rows: int | None = None
    frozen: bool = False  # the serving generation has another definition: nobody writes it meanwhile

    def alive(self, now: float | None = None) -> bool:
        """Its process is running: on this host, its pid exists; elsewhere, its heartbeat is fresh."""
        if self.host == HOST and not _pid_alive(self.pid):
            return False
        return (now if now is not None else time.time()) - self.heartbeat < LEASE_S

    def who(self) -> str:
        return f"pid {self.pid} on {self.host}, started {time.strftime('%H:%M:%S', time.localtime(self.started))}"


@dataclass
class IndexState:
    """The state document of one index (see the module doc)."""

    alias: str
    serving: str | None = None
    serving_hash: str | None = None
    previous: str | None = None
    building: Building | None = None
    next_generation: int = 1
    swapped_at: str | None = None

    def as_doc(self) -> dict:
        doc = asdict(self)
        doc["kind"] = "index"
        return doc

    @classmethod
    def from_doc(cls, alias: str, doc: dict) -> IndexState:
        names = {f.name for f in fields(Building)}
        raw = doc.get("building")
        building = Building(**{k: v for k, v in raw.items() if k in names}) if isinstance(raw, dict) else None
        return cls(alias=alias, serving=doc.get("serving"), serving_hash=doc.get("serving_hash"),
                   previous=doc.get("previous"), building=building,
                   next_generation=int(doc.get("next_generation") or 1), swapped_at=doc.get("swapped_at"))

    def summary(self) -> dict:
        """What `flusso status` and Dagster show of it."""
        b = self.building
        building = None if b is None else {
            "generation": b.name, "documents": b.documents, "rows": b.rows, "reason": b.reason,
            "started": b.started, "alive": b.alive(), "live_writes_it": b.dual_from is not None,
            "serving_frozen": b.frozen, "owner": b.who(),
        }
        return {"alias": self.alias, "serving": self.serving, "building": building, "previous": self.previous,
                "swapped_at": self.swapped_at}

    def names(self) -> set[str]:
        """The physical indexes this state accounts for."""
        found = {self.serving, self.previous, self.building.name if self.building else None}
        return {n for n in found if n is not None and n != self.alias}


def state_key(alias: str) -> str:
    return f"index:{alias}"


class StateConflict(SinkError):
    """The state document kept changing under a compare-and-set."""


class Generations:
    """Reads and writes the state documents of indexes, with compare-and-set."""

    def __init__(self, sink: GenerationSink) -> None:
        self.sink = sink

    def load(self, alias: str) -> tuple[IndexState, Any]:
        found = self.sink.read_state(state_key(alias))
        if found is None:
            return IndexState(alias=alias), None
        doc, token = found
        return IndexState.from_doc(alias, doc), token

    def load_many(self, aliases: list[str]) -> dict[str, IndexState | None]:
        """Several indexes' states in one request; None for an index without a state document."""
        found = self.sink.read_states([state_key(a) for a in aliases])
        return {a: IndexState.from_doc(a, found[state_key(a)][0]) if state_key(a) in found else None
                for a in aliases}

    def update(self, alias: str, change: Callable[[IndexState], IndexState | None]) -> IndexState:
        """Apply `change` to the stored state and write it back, again if someone wrote in between.
        `change` gets a copy; returning None writes nothing. Raises what `change` raises."""
        for _ in range(50):
            state, token = self.load(alias)
            new = change(_copy(state))
            if new is None:
                return state
            if self.sink.write_state(state_key(alias), new.as_doc(), token) is not None:
                return new
            time.sleep(0.02)
        raise StateConflict(f"the state of index {alias} kept changing while flusso wrote it; try again")

    def reserve(self, alias: str, check: Callable[[IndexState], None] = lambda state: None) -> int:
        """The next generation number of `alias`, taken for good (after `check` of the state passes),
        so that two processes never create the same physical index."""
        taken: list[int] = []

        def take(state: IndexState) -> IndexState:
            check(state)
            taken[:] = [state.next_generation]
            state.next_generation += 1
            return state

        self.update(alias, take)
        return taken[0]

    def reconcile(self, alias: str) -> IndexState:
        """Make the state agree with the sink: the alias decides what serves; a rebuild whose process
        is gone is abandoned and its generation deleted; generations nobody accounts for are deleted."""
        target = self.sink.alias_target(alias)
        meta = self.sink.generation_names(alias)
        serving_hash = None
        if target is not None:
            serving_hash = (meta.get(target) or {}).get("definition_hash") or self.sink.definition_hash(target)
        abandoned: list[str] = []

        def fix(state: IndexState) -> IndexState | None:
            abandoned.clear()
            before = state.as_doc()
            if state.building is not None and state.building.name == target:  # swapped, then killed
                state.previous, state.building = state.serving, None
            if state.serving != target:
                state.serving, state.serving_hash = target, serving_hash
            elif serving_hash is not None:
                state.serving_hash = serving_hash
            if state.building is not None and not state.building.alive():
                log.warning("index %s: the rebuild of %s (%s) is gone; its generation is deleted", alias,
                            state.building.name, state.building.who())
                abandoned.append(state.building.name)
                state.building = None
            numbers = [g for n in meta if (g := generation_of(alias, n)) is not None]
            state.next_generation = max([state.next_generation, *(g + 1 for g in numbers)])
            return None if state.as_doc() == before else state

        state = self.update(alias, fix)
        now_ms = time.time() * 1000
        for name in abandoned:
            self.sink.delete_index(name)
        for name, info in meta.items():
            if name in state.names() or name in abandoned:
                continue
            # no generation number: auto-created by a write in flight to a generation just deleted;
            # else one nobody registered (a rebuild killed before it did), once it cannot be about to
            if "generation" not in info or now_ms - info.get("created_ms", 0) >= STRAY_AGE_S * 1000:
                log.info("index %s: deleting %s, a generation no state accounts for", alias, name)
                self.sink.delete_index(name)
        return state


def _copy(state: IndexState) -> IndexState:
    return replace(state, building=replace(state.building) if state.building is not None else None)
