"""The Dagster layer without the services: definitions load, sensors and the schedule decide right.

The sensors are evaluated against a real (temporary) DagsterInstance, with run records in the
states they must react to.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    AssetObservation,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    EventLogEntry,
    RunRequest,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)
from dagster._core.events import AssetObservationData
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteRepositoryOrigin

from flusso_dagster.assets import build_search_index, index_partitions
from flusso_dagster.constants import INDEX_TAG, LIVE_ASSET, PARTITION_TAG, SLOT_TAG
from flusso_dagster.factory import build_definitions
from flusso_dagster.jobs import build_live_capture
from flusso_dagster.project import Project
from flusso_dagster.schedules import build_reseed
from flusso_dagster.sensors import build_keeper, seed_requests

ROOT = Path(__file__).resolve().parents[1]
PROJECT = Project(config_path=str(ROOT / "examples/bookstore/flusso.yaml"), indexes=("books", "authors"),
                  slot="t_keeper", heartbeat_s=10.0)


@pytest.fixture
def instance():
    with instance_for_test() as inst:
        yield inst


def _add_run(instance: DagsterInstance, job: str, status: DagsterRunStatus, tags: dict[str, str],
             asset_selection: frozenset[AssetKey] | None = None) -> DagsterRun:
    """A run record in `status`, as if a code location named flusso had launched it."""
    origin = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("flusso"), "__repository__")
    return instance.add_run(DagsterRun(job_name=job, run_id=str(uuid.uuid4()), status=status, tags=tags,
                                       asset_selection=asset_selection,
                                       remote_job_origin=origin.get_job_origin(job)))


def _heartbeat(instance: DagsterInstance, run: DagsterRun, metadata: dict[str, str] | None = None,
               at: float | None = None) -> None:
    """An observation of flusso_live by `run`, as live_capture's op records it."""
    event = DagsterEvent(
        event_type_value=DagsterEventType.ASSET_OBSERVATION.value,
        job_name=run.job_name,
        event_specific_data=AssetObservationData(AssetObservation(asset_key=LIVE_ASSET, metadata=metadata)),
    )
    instance.store_event(EventLogEntry(error_info=None, level="debug", user_message="", run_id=run.run_id,
                                       timestamp=time.time() if at is None else at, dagster_event=event))


def test_definitions_validate(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    env.pop("FLUSSO_CONFIG", None)
    out = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "All code locations passed validation" in out.stdout + out.stderr


def test_definitions_hold_the_asset_checks_job_sensors_and_schedule():
    defs = build_definitions(PROJECT)
    assert defs.resolve_assets_def("search_index").partitions_def.get_partition_keys() == ["books", "authors"]
    assert defs.resolve_job_def("live_capture").tags[SLOT_TAG] == "t_keeper"
    assert {s.name for s in defs.sensors} == {"live_capture_keeper", "seed_sensor", "slot_health_sensor"}
    assert [s.name for s in defs.schedules] == ["reseed", "verify_repair_schedule"]
    assert defs.resolve_job_def("verify_repair").name == "verify_repair"
    checks = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert checks == {"documents_match_rows", "definition_current", "seeded", "slot_health"}


def test_keeper_requests_a_run_when_none_is_running(instance):
    keeper = build_keeper(build_live_capture(PROJECT), PROJECT)
    _add_run(instance, "live_capture", DagsterRunStatus.CANCELED, {SLOT_TAG: "t_keeper"})
    _add_run(instance, "live_capture", DagsterRunStatus.STARTED, {SLOT_TAG: "another_slot"})
    result = keeper(build_sensor_context(instance=instance))
    assert isinstance(result, RunRequest)
    assert result.run_key is None
    assert result.tags[SLOT_TAG] == "t_keeper"


@pytest.mark.parametrize("status", [DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING,
                                    DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING])
def test_keeper_skips_while_a_run_is_queued_or_in_progress(instance, status):
    keeper = build_keeper(build_live_capture(PROJECT), PROJECT)
    run = _add_run(instance, "live_capture", status, {SLOT_TAG: "t_keeper"})
    result = keeper(build_sensor_context(instance=instance))
    assert isinstance(result, SkipReason)
    assert run.run_id in result.skip_message
    assert instance.get_run_by_id(run.run_id).status == status


def test_keeper_replaces_a_started_run_whose_heartbeat_is_stale(instance):
    from flusso_dagster.sensors import keep_alive

    run = _add_run(instance, "live_capture", DagsterRunStatus.STARTED, {SLOT_TAG: "t_keeper"})
    beat = time.time()
    _heartbeat(instance, run)
    fresh = keep_alive(instance, "live_capture", "t_keeper", stale_after_s=30, now=beat + 10)
    assert isinstance(fresh, SkipReason) and re.search(r"last heartbeat 1[01]s ago", fresh.skip_message)

    stale = keep_alive(instance, "live_capture", "t_keeper", stale_after_s=30, now=time.time() + 31)
    assert isinstance(stale, RunRequest)
    assert stale.tags["flusso/replaces"] == run.run_id
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE


def test_keeper_reads_each_runs_own_heartbeat_so_ten_busier_slots_do_not_make_it_look_stale(instance):
    from flusso_dagster.sensors import keep_alive

    mine = _add_run(instance, "live_capture", DagsterRunStatus.STARTED, {SLOT_TAG: "t_keeper"})
    beat = time.time() + 100  # long after the run started: only this heartbeat keeps it from being stale
    _heartbeat(instance, mine, at=beat)
    for i in range(10):  # ten other slots' runs, each beating more recently, several times
        other = _add_run(instance, "live_capture", DagsterRunStatus.STARTED, {SLOT_TAG: f"slot_{i}"})
        for k in range(3):
            _heartbeat(instance, other, at=beat + 1 + k)
    result = keep_alive(instance, "live_capture", "t_keeper", stale_after_s=30, now=beat + 20)
    assert isinstance(result, SkipReason), result
    assert re.search(r"last heartbeat 20s ago", result.skip_message)
    assert instance.get_run_by_id(mine.run_id).status == DagsterRunStatus.STARTED


@pytest.mark.parametrize("status", [DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING])
def test_keeper_kills_a_paused_worker_of_a_stale_run_before_it_requests_a_new_one(instance, status):
    from flusso_dagster.process import Worker, this_machine
    from flusso_dagster.process import _started as started_at
    from flusso_dagster.sensors import keep_alive

    paused = subprocess.Popen(["sleep", "600"])
    try:
        os.kill(paused.pid, signal.SIGSTOP)  # alive, holding whatever it holds, answering nothing
        run = _add_run(instance, "live_capture", status, {SLOT_TAG: "t_keeper"})
        _heartbeat(instance, run, Worker(this_machine(), paused.pid, started_at(paused.pid)).metadata())
        fresh = keep_alive(instance, "live_capture", "t_keeper", stale_after_s=30, grace_s=0.5)
        assert isinstance(fresh, SkipReason) and paused.poll() is None

        result = keep_alive(instance, "live_capture", "t_keeper", stale_after_s=30, now=time.time() + 31,
                            grace_s=0.5)
        assert paused.wait(10) == -signal.SIGKILL
        assert isinstance(result, RunRequest) and result.tags["flusso/replaces"] == run.run_id
        record = instance.get_run_by_id(run.run_id)
        assert record.status == DagsterRunStatus.FAILURE
        failure = [e.message for e in instance.all_logs(run.run_id) if e.dagster_event
                   and e.dagster_event.event_type == DagsterEventType.RUN_FAILURE]
        assert any(f"its worker (pid {paused.pid}) was killed" in m for m in failure), failure
    finally:
        if paused.poll() is None:
            paused.kill()
            paused.wait()


def test_keeper_leaves_a_process_it_cannot_prove_is_the_worker(instance):
    from flusso_dagster.process import Worker, this_machine
    from flusso_dagster.sensors import keep_alive

    bystander = subprocess.Popen(["sleep", "600"])
    try:
        run = _add_run(instance, "live_capture", DagsterRunStatus.STARTED, {SLOT_TAG: "t_keeper"})
        _heartbeat(instance, run, Worker(this_machine(), bystander.pid, "12345").metadata())  # pid reused
        result = keep_alive(instance, "live_capture", "t_keeper", stale_after_s=30, now=time.time() + 31,
                            grace_s=0.1)
        assert isinstance(result, RunRequest) and bystander.poll() is None
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
    finally:
        bystander.kill()
        bystander.wait()


def test_seed_requests_exactly_the_unseeded_partitions_not_being_backfilled(instance):
    key = frozenset({AssetKey("search_index")})
    _add_run(instance, "__ASSET_JOB", DagsterRunStatus.STARTED, {PARTITION_TAG: "authors"}, key)
    result = seed_requests(instance, ["books", "authors"])
    assert [(r.partition_key, r.tags[INDEX_TAG], r.run_key) for r in result] == [("books", "books", None)]


def test_seed_does_not_retry_a_failed_seed_at_every_tick(instance):
    _add_run(instance, "__ASSET_JOB", DagsterRunStatus.FAILURE, {INDEX_TAG: "books", PARTITION_TAG: "books"})
    result = seed_requests(instance, ["books"])
    assert isinstance(result, SkipReason) and "failed" in result.skip_message
    assert isinstance(seed_requests(instance, []), SkipReason)


def test_reseed_requests_forced_runs_of_the_named_indexes():
    project = Project(**{**PROJECT.__dict__, "reseed_indexes": ("authors",), "reseed_cron": "0 4 * * *"})
    reseed = build_reseed(build_search_index(index_partitions(project)), project)
    assert reseed.cron_schedule == "0 4 * * *"
    (request,) = reseed(build_schedule_context(scheduled_execution_time=datetime(2026, 1, 4, 4, tzinfo=UTC)))
    assert request.partition_key == "authors"
    assert request.run_config == {"ops": {"search_index": {"config": {"force": True}}}}

    everything = build_reseed(build_search_index(index_partitions(PROJECT)), PROJECT)
    at = datetime(2026, 1, 4, 3, tzinfo=UTC)
    requests = everything(build_schedule_context(scheduled_execution_time=at))
    assert [r.partition_key for r in requests] == ["books", "authors"]


def test_reseed_skips_when_it_names_an_unknown_index():
    project = Project(**{**PROJECT.__dict__, "reseed_indexes": ("bokos",)})
    reseed = build_reseed(build_search_index(index_partitions(project)), project)
    result = reseed(build_schedule_context())
    assert isinstance(result, SkipReason) and "bokos" in result.skip_message


def test_project_reads_names_without_needing_the_secrets(tmp_path):
    config = tmp_path / "flusso.yaml"
    config.write_text(
        "source: {dsn: '${NOT_SET_ANYWHERE}', slot: s1, publication: p1}\n"
        "sink: {type: stdout}\n"
        "indexes: {a: {table: t, key: [id], fields: {x: x}}, b: {table: u, key: [id], fields: {y: y}}}\n"
    )
    project = Project.from_env(env={"FLUSSO_CONFIG": str(config), "FLUSSO_HEARTBEAT_S": "5",
                                    "FLUSSO_RESEED_INDEXES": "b, a"})
    assert (project.indexes, project.slot, project.heartbeat_s) == (("a", "b"), "s1", 5.0)
    assert project.reseed_indexes == ("b", "a")
