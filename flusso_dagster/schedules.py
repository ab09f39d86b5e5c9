"""`reseed`: forced materializations of some or all indexes on a cron (stopped by default);
`verify_repair`: the verify_repair job on a cron (stopped by default)."""

from dagster import (
    AssetsDefinition,
    DefaultScheduleStatus,
    JobDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from .assets import FORCE_RUN_CONFIG
from .constants import INDEX_TAG
from .project import Project


def build_reseed(search_index: AssetsDefinition, project: Project) -> ScheduleDefinition:
    names = project.reseed_indexes or project.indexes
    which = ", ".join(project.reseed_indexes) if project.reseed_indexes else "every index"

    @schedule(
        name="reseed",
        cron_schedule=project.reseed_cron,
        target=search_index,
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"Forced backfill of {which} (FLUSSO_RESEED_INDEXES) at {project.reseed_cron} "
                    "(FLUSSO_RESEED_CRON).",
    )
    def reseed(context: ScheduleEvaluationContext) -> list[RunRequest] | SkipReason:
        unknown = sorted(set(names) - set(project.indexes))
        if unknown:
            return SkipReason(f"FLUSSO_RESEED_INDEXES names {', '.join(unknown)}, not in the config "
                              f"(indexes: {', '.join(project.indexes)}): nothing reseeded")
        when = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else ""
        return [
            RunRequest(run_key=f"reseed:{index}:{when}", partition_key=index, run_config=FORCE_RUN_CONFIG,
                       tags={INDEX_TAG: index})
            for index in names
        ]

    return reseed


def build_verify_schedule(verify_repair: JobDefinition, project: Project) -> ScheduleDefinition:
    return ScheduleDefinition(
        name="verify_repair_schedule",
        cron_schedule=project.verify_cron,
        job=verify_repair,
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"verify_repair at {project.verify_cron} (FLUSSO_VERIFY_CRON): every id checked, drift repaired.",
    )
