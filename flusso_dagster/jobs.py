"""The `live_capture` job: one op that follows the slot until the run is terminated; `verify_repair`:
one op that verifies every id and repairs what drifted."""

from dagster import (
    AssetKey,
    AssetObservation,
    Config,
    Failure,
    JobDefinition,
    OpExecutionContext,
    in_process_executor,
    job,
    op,
)

from . import drift
from .constants import SLOT_TAG
from .project import Project
from .resources import FlussoResource


@op(description="Mapping first, then live capture (no backfill) until the run is terminated: then "
                "flush, acknowledge, exit. A later run resumes from the slot.")
def capture(context: OpExecutionContext, flusso: FlussoResource) -> None:
    flusso.run_live(context)


def build_live_capture(project: Project) -> JobDefinition:
    @job(
        name="live_capture",
        executor_def=in_process_executor,  # one op that never ends: no step process of its own
        tags={SLOT_TAG: project.slot},  # dagster.yaml allows one run per slot
        description=f"Follows replication slot {project.slot} into the indexes until terminated. "
                    "live_capture_keeper starts it and replaces a run whose heartbeat went stale.",
    )
    def live_capture() -> None:
        capture()

    return live_capture


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
