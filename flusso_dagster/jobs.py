"""The `live_capture` job: one op that follows the slot until the run is terminated."""

from dagster import JobDefinition, OpExecutionContext, in_process_executor, job, op

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
