"""Which runs `live_capture` is for a config: one `live` run with the channel; with Kafka, one
`capture` run and `queue.workers` `worker` runs. Each run carries its role in its run config and
its tags, so that dagster.yaml's one-run-per-`flusso/slot` limit applies to each role on its own
(two captures of one slot still queue behind each other) and `flusso/live` finds them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dagster import Failure

from .constants import LIVE_TAG, ROLE_TAG, SLOT_TAG
from .project import Project

OP = "capture"  # live_capture's op, whose config holds the role


@dataclass(frozen=True)
class Role:
    """One run of live_capture: `live`, `capture` or `worker`, and the `flusso/slot` tag it holds."""

    role: str
    slot_tag: str

    def tags(self, slot: str) -> dict[str, str]:
        return {SLOT_TAG: self.slot_tag, LIVE_TAG: slot, ROLE_TAG: self.role}

    def run_config(self) -> dict[str, Any]:
        return {"ops": {OP: {"config": {"role": self.role}}}}


def worker_tag(slot: str, i: int) -> str:
    return f"{slot}/worker-{i}"


def roles_of(project: Project) -> list[Role]:
    """The runs the keeper keeps alive: the capture role first (it creates the slot the workers attach to)."""
    if project.queue != "kafka":
        return [Role("live", project.slot)]
    return [Role("capture", project.slot), *(Role("worker", worker_tag(project.slot, i))
                                             for i in range(1, project.workers + 1))]


def check_tags(role: str, tags: Mapping[str, str], slot: str) -> None:
    """A run's `flusso/slot` tag must fit its role, or dagster.yaml's limit would not keep one capture
    per slot (a capture tagged as a worker) or would keep a worker from the capture's place."""
    tag = tags.get(SLOT_TAG)
    fits = tag.startswith(f"{slot}/worker-") if role == "worker" and tag else tag == slot
    if fits:
        return
    want = f"{slot}/worker-<i>" if role == "worker" else slot
    raise Failure(description=f"run tag {SLOT_TAG}={tag!r} does not fit role {role} of slot {slot}: launch it "
                              f"with {SLOT_TAG}={want} and {LIVE_TAG}={slot} (live_capture_keeper does)")
