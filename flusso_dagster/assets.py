"""The `search_index` asset, one partition per index of the config, and `flusso_live`, the
observable asset that live_capture's heartbeats are recorded on."""

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Config,
    DagsterInstance,
    DagsterRunStatus,
    Failure,
    MaterializeResult,
    RunRecord,
    RunsFilter,
    StaticPartitionsDefinition,
    asset,
)
from pydantic import Field

from .constants import LIVE_ASSET, PARTITION_TAG, RUNNING_STATUSES
from .project import Project
from .resources import FlussoResource

SEARCH_INDEX = AssetKey("search_index")
class SeedConfig(Config):
    force: bool = Field(False, description="backfill even if the sink says the index is seeded")


FORCE_RUN_CONFIG = {"ops": {"search_index": {"config": {"force": True}}}}


def index_partitions(project: Project) -> StaticPartitionsDefinition:
    return StaticPartitionsDefinition(list(project.indexes))


def index_runs(instance: DagsterInstance, index: str, statuses: list[DagsterRunStatus]) -> list[RunRecord]:
    """Runs that materialize `index`'s partition of search_index, newest first."""
    records = instance.get_run_records(RunsFilter(tags={PARTITION_TAG: index}, statuses=statuses))
    return [r for r in records
            if r.dagster_run.asset_selection is None or SEARCH_INDEX in r.dagster_run.asset_selection]


def earlier_backfill(context: AssetExecutionContext, index: str) -> RunRecord | None:
    """A run that started backfilling `index` before this one and is still at it.

    `dagster.yaml`'s tag limit is what keeps a second run queued; this is for an instance without
    it (two backfills of one index would drop each other's documents when each recreates it).
    """
    runs = index_runs(context.instance, index, RUNNING_STATUSES)
    mine = next((r for r in runs if r.dagster_run.run_id == context.run_id), None)
    for other in runs:
        if other.dagster_run.run_id == context.run_id:
            continue
        if mine is None or (other.create_timestamp, other.dagster_run.run_id) < (
            mine.create_timestamp, mine.dagster_run.run_id
        ):
            return other
    return None


def build_search_index(partitions: StaticPartitionsDefinition) -> AssetsDefinition:
    @asset(
        name=SEARCH_INDEX.path[-1],
        partitions_def=partitions,
        group_name="flusso",
        kinds={"opensearch", "postgres"},
        description=(
            "An OpenSearch index of nested documents built from PostgreSQL, one partition per index of "
            "flusso.yaml. Materializing a partition prepares the replication slot, ensures the mapping "
            "and backfills the index if the sink says it is unseeded (always with run config "
            "`force: true`); live_capture keeps it in sync afterwards."
        ),
    )
    def search_index(context: AssetExecutionContext, config: SeedConfig,
                     flusso: FlussoResource) -> MaterializeResult:
        index = context.partition_key
        other = earlier_backfill(context, index)
        if other is not None:
            raise Failure(description=f"run {other.dagster_run.run_id} is already backfilling {index}: "
                                      "one backfill per index at a time; try again when it has ended")
        return flusso.backfill(context, index, force=config.force)

    return search_index


flusso_live = AssetSpec(
    LIVE_ASSET,
    group_name="flusso",
    kinds={"postgres"},
    description=(
        "The live capture of the replication slot. Its observations are the heartbeats of the "
        "live_capture run (slot lag in bytes, confirmed LSN and throughput) and the readings of "
        "slot_health_sensor (lag, safe_wal_size, wal_status), which also evaluates its slot_health check."
    ),
)
