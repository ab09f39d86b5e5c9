"""`live_capture_keeper` keeps one live_capture run per slot (per role with Kafka); `seed_sensor` seeds what the sink
says is unseeded, and records when an index's seeded state changes (seed_state.py)."""


import json
import logging
import time
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetMaterialization,
    AssetsDefinition,
    DagsterEventType,
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

from .assets import SEARCH_INDEX, index_runs
from .constants import ACTIVE_STATUSES, INDEX_TAG, KEEPER_STATUSES, REPLACES_TAG, ROLE_TAG, SLOT_TAG
from .live_roles import roles_of
from .process import Worker, this_machine
from .project import Project
from .resources import FlussoResource
from .seed_state import indexes_of, load_cursor, report_changes

SEED_RETRY_AFTER = timedelta(minutes=10)


def last_heartbeat(instance: DagsterInstance, record: RunRecord) -> tuple[float, Worker | None]:
    """When the run last proved alive (its latest `flusso_live` observation, else its start), and
    which process its worker is. Read from the run's own events: other slots' runs beat too."""
    started = record.start_time or record.create_timestamp.timestamp()
    beats = instance.get_records_for_run(record.dagster_run.run_id, of_type=DagsterEventType.ASSET_OBSERVATION,
                                         ascending=False, limit=1).records
    if not beats:
        return started, None
    entry = beats[0].event_log_entry
    data = entry.dagster_event.event_specific_data if entry.dagster_event else None
    observation = getattr(data, "asset_observation", None)
    worker = Worker.from_metadata(observation.metadata) if observation is not None else None
    return max(started, entry.timestamp), worker


def replace_stale(instance: DagsterInstance, record: RunRecord, worker: Worker | None, why: str,
                  grace_s: float) -> str:
    """End a run whose heartbeat went stale, so that it lets go of the slot; then mark it failed.

    First the run launcher's termination (which on Kubernetes or Docker removes the worker); a worker
    on this machine (the default launcher) gets `grace_s` to stop, then SIGKILL: a paused or stuck
    process answers nothing else, and keeps the slot while it lives. Nothing is lost by killing it:
    the slot was acknowledged only up to what OpenSearch had flushed. Returns what was done.
    """
    run = record.dagster_run
    done = []
    try:
        if instance.run_launcher.terminate(run.run_id):
            done.append("asked the run launcher to terminate it")
    except Exception as err:  # noqa: BLE001 - the code server may be gone with the worker
        done.append(f"the run launcher could not terminate it ({type(err).__name__})")
    if worker is not None and worker.alive_here():
        done.append(worker.end(grace_s))
    elif worker is not None and worker.machine != this_machine():
        done.append(f"its worker runs on {worker.machine}, not here: the run launcher must end it")
    current = instance.get_run_by_id(run.run_id)
    if current is not None and not current.is_finished:
        instance.report_run_failed(current, f"{why}: the run's worker is presumed dead or stuck; "
                                            f"{'; '.join(done) or 'no process to end'}. live_capture_keeper "
                                            "starts a new run")
    return "; ".join(done)


def keep_alive(instance: DagsterInstance, job_name: str, slot: str, stale_after_s: float,
               now: float | None = None, grace_s: float = 10.0) -> RunRequest | SkipReason:
    """A run request unless a live run of the slot is queued, starting, alive or canceling.

    A STARTED or CANCELING run whose heartbeat is older than `stale_after_s` is ended first
    (`replace_stale`): under the default run launcher a worker that died hard leaves its run STARTED
    for ever, and one that is paused or stuck would keep the slot from the new run.
    """
    now = time.time() if now is None else now
    replaced: list[str] = []
    busy: SkipReason | None = None
    for record in instance.get_run_records(
        RunsFilter(job_name=job_name, tags={SLOT_TAG: slot}, statuses=KEEPER_STATUSES)
    ):
        run = record.dagster_run
        if run.status not in (DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING):
            busy = busy or SkipReason(f"run {run.run_id} of {job_name} is {run.status.value.lower()} "
                                      f"on slot {slot}")
            continue
        beat, worker = last_heartbeat(instance, record)
        age = now - beat
        if age > stale_after_s:
            replace_stale(instance, record, worker,
                          f"no heartbeat for {age:.0f}s (bound {stale_after_s:.0f}s)", grace_s)
            replaced.append(run.run_id)
        else:
            state = "in progress" if run.status == DagsterRunStatus.STARTED else "canceling"
            busy = busy or SkipReason(f"run {run.run_id} of {job_name} is {state} on slot {slot} "
                                      f"(last heartbeat {age:.0f}s ago)")
    if busy is not None:
        return busy
    tags = {SLOT_TAG: slot}
    if replaced:
        tags[REPLACES_TAG] = ",".join(replaced)
    return RunRequest(run_key=None, tags=tags)


def retire_roles(instance: DagsterInstance, job_name: str, project: Project) -> list[str]:
    """Stop the slot's runs whose role the config no longer has (`queue.workers` lowered: the workers
    past it; the queue switched between channel and Kafka: the runs of the other layout), the way
    the UI's Terminate does (each flushes and acknowledges first). Says what was done."""
    wanted = {(r.role, r.slot_tag) for r in roles_of(project)}
    done = []
    for record in instance.get_run_records(RunsFilter(job_name=job_name, statuses=KEEPER_STATUSES)):
        run = record.dagster_run
        tag = run.tags.get(SLOT_TAG, "")
        if run.status == DagsterRunStatus.CANCELING or not (
                tag == project.slot or tag.startswith(f"{project.slot}/worker-")):
            continue
        role = run.tags.get(ROLE_TAG, "live")  # runs from before roles: live
        if (role, tag) in wanted:
            continue
        try:
            ended = instance.run_coordinator.cancel_run(run.run_id)
        except Exception as err:  # noqa: BLE001 - the code server may be gone
            ended, why = False, type(err).__name__
        else:
            why = "the run launcher did not end it"
        done.append(f"{role} run {run.run_id} ({SLOT_TAG}={tag}) is not one of the config's roles now: "
                    + ("asked it to stop" if ended else f"could not stop it ({why}): terminate it by hand"))
    return done


def keep_roles(instance: DagsterInstance, job_name: str, project: Project, stale_after_s: float,
               now: float | None = None, log: logging.Logger | None = None,
               ) -> RunRequest | list[RunRequest] | SkipReason:
    """`keep_alive` for each of the slot's roles (live_roles.py): with the channel one `live` run, as
    before; with Kafka the capture role and each worker, each launched with its role's config and tags.
    Runs of roles the config no longer has are stopped first (`retire_roles`)."""
    for line in retire_roles(instance, job_name, project):
        if log is not None:
            log.warning(line)
    roles = roles_of(project)
    if len(roles) == 1 and roles[0].role == "live":
        return keep_alive(instance, job_name, project.slot, stale_after_s, now)
    requests, skipped = [], []
    for role in roles:
        result = keep_alive(instance, job_name, role.slot_tag, stale_after_s, now)
        if isinstance(result, SkipReason):
            skipped.append(result.skip_message or "")
            continue
        requests.append(RunRequest(run_key=None, run_config=role.run_config(),
                                   tags={**result.tags, **role.tags(project.slot)}))
    return requests or SkipReason("; ".join(skipped))


def build_keeper(live_capture: JobDefinition, project: Project) -> SensorDefinition:
    stale_after_s = 3 * project.heartbeat_s
    what = (f"the capture role and {project.workers} worker run(s) (Kafka)" if project.queue == "kafka"
            else "live_capture")

    @sensor(
        name="live_capture_keeper",
        job=live_capture,
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description=f"Starts {what} whenever no run of it is queued or in progress on slot "
                    f"{project.slot}; ends and replaces a run without a heartbeat for {stale_after_s:.0f}s.",
    )
    def live_capture_keeper(context: SensorEvaluationContext) -> RunRequest | list[RunRequest] | SkipReason:
        return keep_roles(context.instance, live_capture.name, project, stale_after_s, log=context.log)

    return live_capture_keeper


def seed_requests(instance: DagsterInstance, unseeded: list[str],
                  now: datetime | None = None) -> list[RunRequest] | SkipReason:
    """One materialization per unseeded index, except an index already being backfilled or whose
    last seeding run failed less than `SEED_RETRY_AFTER` ago (not a retry every tick)."""
    now = now or datetime.now(UTC)
    requests, skipped = [], []
    for index in unseeded:
        if index_runs(instance, index, ACTIVE_STATUSES):
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


def report_seeded(instance: DagsterInstance, search_index: AssetsDefinition, flusso: FlussoResource,
                  unseeded: list[str], also: Collection[str] = ()) -> list[str]:
    """A seeded index that Dagster has no materialization of (seeded by `flusso backfill` before
    `make demo`, say) would show as "Missing" for ever: report one, runless, with its marker's
    metadata; the same for the indexes in `also` (seeded again outside Dagster after Dagster saw them
    unseeded, seed_state.py). Returns the indexes reported."""
    assert search_index.partitions_def is not None
    have = instance.get_materialized_partitions(SEARCH_INDEX)
    missing = [i for i in search_index.partitions_def.get_partition_keys()
               if (i not in have or i in also) and i not in unseeded]
    if not missing:
        return []
    reported = []
    for index, metadata in flusso.seeded_outside(missing).items():
        instance.report_runless_asset_event(AssetMaterialization(
            asset_key=SEARCH_INDEX, partition=index, metadata=metadata,
            description="the sink says this index is seeded; seeded outside Dagster"))
        reported.append(index)
    return reported


def build_seed_sensor(search_index: AssetsDefinition) -> SensorDefinition:
    indexes = indexes_of(search_index)

    @sensor(
        name="seed_sensor",
        target=search_index,
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description="Asks the sink which indexes are unseeded and materializes exactly those partitions, "
                    "so a fresh install seeds itself. When an index's seeded state changes, records it without "
                    "a run: the `seeded` check fails (or passes again) and the partition's observation says why.",
    )
    def seed_sensor(context: SensorEvaluationContext,
                    flusso: FlussoResource) -> list[RunRequest] | SkipReason:
        unseeded = flusso.unseeded()
        shown = load_cursor(context.cursor)
        changes, reseeded = report_changes(context.instance, flusso, indexes, unseeded, shown)
        report_seeded(context.instance, search_index, flusso, unseeded, also=reseeded)
        context.update_cursor(json.dumps(shown, sort_keys=True))
        for line in changes:
            context.log.info(line)
        return seed_requests(context.instance, unseeded)

    return seed_sensor
