"""The engine's side of the slot's identity (`slotstate.py` holds the argument): adopting the slot
at start, checking it at every reconnect, and the incarnation seeded markers carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .changes import Position
from .slotstate import SlotMoved, Verdict, judge

if TYPE_CHECKING:
    from .engine import Engine


class SlotIdentity:
    """Mixed into `Engine`."""

    @property
    def slot_incarnation(self: Engine) -> str | None:
        """The slot's incarnation (see slotstate.py): the one adopted by `prepare`, else the one the
        state names if the slot still is that one; None if it is gone, lost or not to be trusted."""
        if self.slot_guard.state is not None:
            return self.slot_guard.incarnation
        if self._observed is None:
            self._observed = (self._observe_slot(),)
        return self._observed[0]

    def _observe_slot(self: Engine) -> str | None:
        """`prepare`'s judgement without changing anything (for `status` and Dagster's sensor)."""
        info = self.capture.slot_info()
        if info is None or info.wal_status == "lost":
            return None
        state = self.slot_guard.read()  # after the slot's position: see slotstate.py
        verdict = judge(state, slot=self.config.source.slot, created=False, confirmed=info.confirmed_flush_lsn,
                        current=self.capture.current_position(), timeline=self.capture.timeline())
        return state.incarnation if verdict.same and state is not None else None


    def _adopt_slot(self: Engine, created: bool) -> Verdict:
        slot = self.config.source.slot
        floor = 0
        for index in self.config.indexes:
            marker = self.sink.seed_marker(index)
            if marker is not None and (marker.slot, marker.system_identifier) == (slot, self.system_identifier):
                floor = max(floor, marker.position)

        def confirmed() -> Position | None:
            info = self.capture.slot_info()
            return None if info is None else info.confirmed_flush_lsn

        return self.slot_guard.adopt(created=created, read_slot=confirmed, read_current=self.capture.current_position,
                                     timeline=self.capture.timeline(), floor=floor)

    def _verify_slot(self: Engine) -> None:
        """At every (re)connect of live capture, once the slot is held: is it still the one adopted?
        If not, a new incarnation unseeds every index and the run stops unacknowledged (exit 2)."""
        slot = self.config.source.slot
        info = self.capture.slot_info()
        confirmed = (info.confirmed_flush_lsn or 0) if info is not None else 0
        state = self.slot_guard.read()  # after the slot's position: see slotstate.py
        current, timeline = self.capture.current_position(), self.capture.timeline()
        verdict = judge(state, slot=slot, created=False, confirmed=confirmed, current=current, timeline=timeline)
        if verdict.same:
            return
        self.slot_guard.renew(confirmed, current, timeline)
        raise SlotMoved(
            f"{verdict.reason}. Noticed while following it; nothing after the last flush was acknowledged. "
            "Start `flusso run` again: it rebuilds the indexes."
        )

