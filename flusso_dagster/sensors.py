"""`live_capture_keeper` keeps one live_capture run per slot; `seed_sensor` seeds what the sink
says is unseeded."""


import time
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetsDefinition,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    JobDefinition,
    RunRecord,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from .assets import IN_FLIGHT, index_runs
from .project import INDEX_TAG, SLOT_TAG, Project
from .resources import LIVE_ASSET, FlussoResource

KEEPER_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
SEED_RETRY_AFTER = timedelta(minutes=10)


def last_heartbeat(instance: DagsterInstance, record: RunRecord) -> float:
    """When the run last proved alive: its latest `flusso_live` observation, else its start."""
    started = record.start_time or record.create_timestamp.timestamp()
    observed = instance.fetch_observations(
        AssetRecordsFilter(asset_key=AssetKey(LIVE_ASSET), after_timestamp=started), limit=10
    )
    beats = [r.timestamp for r in observed.records if r.run_id == record.dagster_run.run_id]
    return max([started, *beats])


def keep_alive(instance: DagsterInstance, job_name: str, slot: str, stale_after_s: float,
               now: float | None = None) -> RunRequest | SkipReason:
    """A run request unless a live run of the slot is queued, starting, alive or canceling.

    A STARTED run whose heartbeat is older than `stale_after_s` is marked failed first: under the
    default run launcher a worker that died hard leaves its run STARTED for ever.
    """
    now = time.time() if now is None else now
    replaced: list[str] = []
    busy: SkipReason | None = None
    for record in instance.get_run_records(
        RunsFilter(job_name=job_name, tags={SLOT_TAG: slot}, statuses=KEEPER_STATUSES)
    ):
        run = record.dagster_run
        if run.status != DagsterRunStatus.STARTED:
            busy = busy or SkipReason(f"run {run.run_id} of {job_name} is {run.status.value.lower()} "
                                      f"on slot {slot}")
            continue
        age = now - last_heartbeat(instance, record)
        if age > stale_after_s:
            instance.report_run_failed(
                run, f"no heartbeat for {age:.0f}s (bound {stale_after_s:.0f}s): the run's worker is "
                     "presumed dead; live_capture_keeper starts a new run"
            )
            replaced.append(run.run_id)
        else:
            busy = busy or SkipReason(f"run {run.run_id} of {job_name} is in progress on slot {slot} "
                                      f"(last heartbeat {age:.0f}s ago)")
    if busy is not None:
        return busy
    tags = {SLOT_TAG: slot}
    if replaced:
        tags["flusso/replaces"] = ",".join(replaced)
    return RunRequest(run_key=None, tags=tags)


def build_keeper(live_capture: JobDefinition, project: Project) -> SensorDefinition:
    stale_after_s = 3 * project.heartbeat_s

    @sensor(
        name="live_capture_keeper",
        job=live_capture,
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description=f"Starts live_capture whenever no run of it is queued or in progress on slot "
                    f"{project.slot}; replaces a run without a heartbeat for {stale_after_s:.0f}s.",
    )
    def live_capture_keeper(context: SensorEvaluationContext) -> RunRequest | SkipReason:
        return keep_alive(context.instance, live_capture.name, project.slot, stale_after_s)

    return live_capture_keeper


def seed_requests(instance: DagsterInstance, unseeded: list[str],
                  now: datetime | None = None) -> list[RunRequest] | SkipReason:
    """One materialization per unseeded index, except an index already being backfilled or whose
    last seeding run failed less than `SEED_RETRY_AFTER` ago (not a retry every tick)."""
    now = now or datetime.now(UTC)
    requests, skipped = [], []
    for index in unseeded:
        if index_runs(instance, index, IN_FLIGHT):
            skipped.append(f"{index} (a run is backfilling it)")
            continue
        failed = instance.get_run_records(
            RunsFilter(tags={INDEX_TAG: index}, statuses=[DagsterRunStatus.FAILURE],
                       updated_after=now - SEED_RETRY_AFTER),
            limit=1,
        )
        if failed:
            skipped.append(f"{index} (run {failed[0].dagster_run.run_id} failed; retried after "
                           f"{SEED_RETRY_AFTER.total_seconds() / 60:.0f} minutes)")
            continue
        requests.append(RunRequest(run_key=None, partition_key=index, tags={INDEX_TAG: index}))
    if requests:
        return requests
    if skipped:
        return SkipReason("unseeded, not requested: " + ", ".join(skipped))
    return SkipReason("every index is seeded")


def build_seed_sensor(search_index: AssetsDefinition) -> SensorDefinition:
    @sensor(
        name="seed_sensor",
        target=search_index,
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description="Asks the sink which indexes are unseeded and materializes exactly those partitions, "
                    "so a fresh install seeds itself.",
    )
    def seed_sensor(context: SensorEvaluationContext,
                    flusso: FlussoResource) -> list[RunRequest] | SkipReason:
        return seed_requests(context.instance, flusso.unseeded())

    return seed_sensor
