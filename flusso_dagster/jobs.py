"""The `live_capture` job: one op that follows the slot until the run is terminated (one run per role
with Kafka: live_roles.py); `stop_live_capture`: ends every role's run of the slot; `verify_repair`:
one op that verifies every id and repairs what drifted."""

import time
from typing import Literal

from dagster import (
    AssetKey,
    AssetObservation,
    Config,
    DagsterInstance,
    DagsterRunStatus,
    Failure,
    JobDefinition,
    OpExecutionContext,
    RunsFilter,
    in_process_executor,
    job,
    op,
)

from . import drift
from .constants import KEEPER_STATUSES, LIVE_TAG, ROLE_TAG, SLOT_TAG
from .live_roles import check_tags
from .project import Project
from .resources import FlussoResource
from .sensors import last_heartbeat


class LiveCaptureConfig(Config):
    # live: capture and worker in this run (the channel, or Kafka in one process); capture, worker:
    # Kafka's roles, one run each (`flusso/slot` tag `<slot>` for capture, `<slot>/worker-<i>` for workers)
    role: Literal["live", "capture", "worker"] = "live"


@op(description="Mapping first, then live capture (no backfill) until the run is terminated: then "
                "flush, acknowledge, exit. A later run resumes from the slot. With Kafka, config role: "
                "capture (slot into the topic) or worker (topic into the indexes), one run each.")
def capture(context: OpExecutionContext, config: LiveCaptureConfig, flusso: FlussoResource) -> None:
    check_tags(config.role, context.run.tags, flusso.config.load().source.slot)
    flusso.run_live(context, config.role)


def build_live_capture(project: Project) -> JobDefinition:
    @job(
        name="live_capture",
        executor_def=in_process_executor,  # one op that never ends: no step process of its own
        # dagster.yaml allows one run per flusso/slot (a Kafka worker's run overrides it with its own)
        tags={SLOT_TAG: project.slot, LIVE_TAG: project.slot, ROLE_TAG: "live"},
        description=f"Follows replication slot {project.slot} into the indexes until terminated. "
                    "live_capture_keeper starts it (with Kafka: the capture role and queue.workers worker "
                    "runs) and replaces a run whose heartbeat went stale.",
    )
    def live_capture() -> None:
        capture()

    return live_capture


def stop_live(instance: DagsterInstance, slot: str) -> list[str]:
    """Ask every run of live_capture on `slot` (every role: tag `flusso/live`) to stop, the way the UI's
    Terminate does (the run coordinator: a queued run is canceled, a started one terminated by the run
    launcher); a run the launcher did not launch (`dagster job execute`) whose process runs here is
    marked canceling and its process sent SIGTERM, which Dagster turns into the op's interruption
    (flush, acknowledge, exit). Says what was done, per run."""
    done = []
    for record in instance.get_run_records(RunsFilter(job_name="live_capture", tags={LIVE_TAG: slot},
                                                      statuses=KEEPER_STATUSES)):
        run = record.dagster_run
        role = run.tags.get(ROLE_TAG, "live")
        try:
            if instance.run_coordinator.cancel_run(run.run_id):
                done.append(f"{role} run {run.run_id}: canceled (queued) or terminated by the run launcher")
                continue
        except Exception as err:  # noqa: BLE001 - the code server may be gone
            done.append(f"{role} run {run.run_id}: the run launcher could not terminate it ({type(err).__name__})")
        _, worker = last_heartbeat(instance, record)
        if worker is not None and worker.alive_here():
            current = instance.get_run_by_id(run.run_id)
            if current is not None and current.status != DagsterRunStatus.CANCELING:
                instance.report_run_canceling(current)  # the launcher may have marked it already
            done.append(f"{role} run {run.run_id}: {worker.terminate()}")
        else:
            done.append(f"{role} run {run.run_id}: no process of it runs here; terminate it where it runs")
    return done


def build_stop_live_capture(project: Project) -> JobDefinition:
    slot = project.slot

    @op(description="Stops every role's run of live_capture on the slot (runs tagged flusso/live) and waits "
                    "for them to end cleanly. Turn off live_capture_keeper first, or it starts them again.")
    def stop_roles(context: OpExecutionContext) -> None:
        for line in stop_live(context.instance, slot) or [f"no live_capture run on slot {slot}"]:
            context.log.info(line)
        deadline = time.monotonic() + 120
        filters = RunsFilter(job_name="live_capture", tags={LIVE_TAG: slot}, statuses=KEEPER_STATUSES)
        while (left := context.instance.get_run_records(filters)) and time.monotonic() < deadline:
            time.sleep(1)
        if left:
            raise Failure(description=f"{len(left)} live_capture run(s) of slot {slot} did not end within 120 s: "
                                      + ", ".join(r.dagster_run.run_id for r in left))

    @job(name="stop_live_capture", executor_def=in_process_executor,
         description=f"Stops live capture of slot {slot}: every role's run (capture and workers with Kafka), "
                     "each flushing and acknowledging first. Turn off live_capture_keeper first.")
    def stop_live_capture() -> None:
        stop_roles()

    return stop_live_capture


class VerifyRepairConfig(Config):
    indexes: list[str] = []  # empty: every index


@op(description="flusso verify --full --repair: every id checked, exactly the drifted ones rebuilt through "
                "the build and flush path (never over a newer document), then checked again.")
def verify_and_repair(context: OpExecutionContext, config: VerifyRepairConfig, flusso: FlussoResource) -> None:
    checks, repaired = flusso.verify_repair(config.indexes or None)
    for check in checks:
        context.log_event(AssetObservation(asset_key=AssetKey("search_index"), partition=check.index,
                                           metadata=drift.counts([check])))
    found = drift.counts(checks)["drift_total"]
    if repaired is None:
        context.log.info("no drift in %s", ", ".join(c.index for c in checks))
        return
    remaining = drift.counts(repaired.remaining)["drift_total"]
    context.log.info("%d drifted ids: %d written, %d deleted, %d left alone (a newer version was there); "
                     "%d still drift", found, repaired.written, repaired.deleted, repaired.newer, remaining)
    if remaining:
        raise Failure(description=f"{remaining} ids still drift after the repair",
                      metadata=drift.metadata(repaired.remaining))


def build_verify_repair() -> JobDefinition:
    @job(name="verify_repair", executor_def=in_process_executor,
         description="Verifies every id of the indexes and repairs exactly what drifted (flusso verify --full "
                     "--repair); safe beside live_capture.")
    def verify_repair() -> None:
        verify_and_repair()

    return verify_repair
