"""Zero-downtime reseeds through Dagster (issue #12), against the real services: with `live_capture`
running in a process of its own (as `dagster job execute` starts it), writers changing every table and
the reseed harness's poller counting and searching the alias every 50 ms, the `reseed` schedule's run
and a partition materialization with `force: true` (what the Launchpad sends) keep every search
answered within the bound, move the alias to a new generation each, and say so in the
materialization's metadata; the index then equals a fresh build. The asset check `definition_current`
fails when the alias is deleted and passes after a materialization, and seed_sensor shows the index
as unseeded once, then seeded again once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import (
    AssetCheckKey,
    AssetRecordsFilter,
    AssetSelection,
    DagsterInstance,
    RunsFilter,
    build_schedule_context,
    build_sensor_context,
    materialize,
)

from flusso_dagster.assets import FORCE_RUN_CONFIG, SEARCH_INDEX, build_search_index, index_partitions
from flusso_dagster.checks import build_checks
from flusso_dagster.factory import flusso_resource
from flusso_dagster.project import Project
from flusso_dagster.schedules import build_reseed
from flusso_dagster.seed_state import SEEDED_CHECK, build_seeded_check
from flusso_dagster.sensors import build_seed_sensor

from .e2e import flusso, generate, wait_converged, write_config
from .reseed import Load, generations, serving, serving_generation, settled
from .test_dagster_run import _checks, _dagster, _materialize, _slot, _wait_for

BOOKS = 600
SETTLE_S = 1.0  # writes before and after each reseed, so that each happens under load


@dataclass
class Store:
    project: Project
    home: Path  # DAGSTER_HOME, shared by the live run's process and the test's instance
    dsn: str

    @property
    def index(self) -> str:
        return self.project.indexes[0]

    @property
    def config(self) -> Path:
        return Path(self.project.config_path)


@pytest.fixture
def store(bookstore_db: str, index_prefix: str, tmp_path: Path) -> Store:
    generate(bookstore_db, books=BOOKS)
    config = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix,
                          batch={"max_changes": 100, "max_delay_ms": 100})
    home = tmp_path / "dagster_home"
    home.mkdir()
    DagsterInstance.from_config(str(home)).dispose()  # its SQLite storage, created once, not by two processes
    return Store(Project.from_env(config, env={"FLUSSO_HEARTBEAT_S": "1"}), home, bookstore_db)


@pytest.fixture
def live(store: Store) -> Iterator[subprocess.Popen]:
    """The first materialization (the seed), then `live_capture` in a process of its own, holding the
    slot; terminated as the UI's Terminate does at the end."""
    with DagsterInstance.from_config(str(store.home)) as instance:
        assert _materialize(store.project, store.index, instance, checks=False).success
    proc = _dagster(store.project, store.home, "job", "execute", "-j", "live_capture")
    try:
        _wait_for("the live run to hold the slot", lambda: _slot(store.dsn, store.project.slot)[0])
        yield proc
    finally:
        if proc.poll() is None:
            with DagsterInstance.from_config(str(store.home)) as instance:
                for run in instance.get_runs(RunsFilter(job_name="live_capture")):
                    if not run.is_finished:
                        instance.report_run_canceling(run)
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _latest_metadata(instance: DagsterInstance, index: str) -> dict:
    (record,) = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=SEARCH_INDEX, asset_partitions=[index]), limit=1).records
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def _assert_swapped_metadata(metadata: dict, index: str, before: int) -> int:
    """The materialization says which generation it built and swapped in; returns its number."""
    generation = metadata["generation"]
    assert generation > before, metadata
    assert metadata["alias"] == index
    assert metadata["physical_index"] == f"{index}__g{generation}"
    assert metadata["previous_generation"] == f"{index}__g{before}"
    assert datetime.fromisoformat(metadata["swapped_at"]), metadata
    assert "kept current by live capture" in metadata["serving_while_building"], metadata
    # under the writers, the rows counted and the documents written are read moments apart
    assert metadata["documents_written"] > BOOKS / 2 and metadata["root_rows"] > BOOKS / 2, metadata
    assert metadata["forced"] is True
    return generation


def test_reseed_schedule_and_a_forced_partition_materialization_keep_search_answering(store: Store, live,
                                                                                       opensearch) -> None:
    index, project = store.index, store.project
    wait_converged(opensearch, store.config)
    first = serving_generation(opensearch, index)
    assert first is not None, generations(opensearch, index)
    partitions = index_partitions(project)
    asset = build_search_index(partitions)
    resources = {"flusso": flusso_resource(project)}
    schedule = build_reseed(asset, project)
    with DagsterInstance.from_config(str(store.home)) as instance, Load(store.config) as load:
        time.sleep(SETTLE_S)
        # (a) the reseed schedule's tick, and the run it requests, as the daemon would launch it
        context = build_schedule_context(instance=instance, scheduled_execution_time=datetime.now(UTC))
        (request,) = schedule(context)
        assert (request.partition_key, request.run_config) == (index, FORCE_RUN_CONFIG)
        scheduled = materialize([asset, build_checks(asset, partitions)], partition_key=request.partition_key,
                                run_config=request.run_config, tags=request.tags, resources=resources,
                                instance=instance, raise_on_error=False)
        assert scheduled.success, scheduled.all_events
        after_schedule = _assert_swapped_metadata(_latest_metadata(instance, index), index, first)
        assert serving_generation(opensearch, index) == after_schedule
        time.sleep(SETTLE_S)
        # (b) a partition materialization with force: true, as the Launchpad sends it, in a run process
        launched = _dagster(project, store.home, "asset", "materialize", "--select", "search_index",
                            "--partition", index, "--config-json", json.dumps(FORCE_RUN_CONFIG))
        output = launched.communicate(timeout=120)[0]
        assert launched.returncode == 0, output[-3000:]
        after_launchpad = _assert_swapped_metadata(_latest_metadata(instance, index), index, after_schedule)
        time.sleep(SETTLE_S)
    report = load.report()
    print(report.summary())
    assert not report.problems(), report.summary()
    assert {p.index for p in report.polls if p.index} <= {f"{index}__g{g}" for g in
                                                           (first, after_schedule, after_launchpad)}
    assert serving_generation(opensearch, index) == after_launchpad
    assert settled(opensearch, index, newer_than=after_schedule) == []
    wait_converged(opensearch, store.config)
    assert live.poll() is None, "live_capture's process ended during the reseeds"


def _run_checks(store: Store, instance: DagsterInstance) -> dict[str, tuple[bool, str]]:
    """The partition's asset checks alone, no materialization."""
    partitions = index_partitions(store.project)
    asset = build_search_index(partitions)
    # the partition by its run tag: materialize's partition_key needs an asset in the selection
    result = materialize([asset, build_checks(asset, partitions)], selection=AssetSelection.checks_for_assets(asset),
                         tags={"dagster/partition": store.index}, resources={"flusso": flusso_resource(store.project)},
                         instance=instance, raise_on_error=False)
    assert result.success, result.all_events
    assert not result.asset_materializations_for_node("search_index")
    return _checks(result)


class SeedSensor:
    """seed_sensor's ticks on an instance, its cursor carried from one tick to the next."""

    def __init__(self, store: Store, instance: DagsterInstance) -> None:
        self.sensor = build_seed_sensor(build_search_index(index_partitions(store.project)))
        self.resources = {"flusso": flusso_resource(store.project)}
        self.instance, self.index, self.cursor = instance, store.index, None

    def tick(self):  # noqa: ANN201 - what the sensor returns: run requests or a SkipReason
        with build_sensor_context(instance=self.instance, resources=self.resources, cursor=self.cursor) as context:
            result = self.sensor(context)
            self.cursor = context.cursor
        return result

    def shown(self) -> tuple[list[tuple[bool, str]], list[dict]]:
        """What the UI shows: every evaluation of the `seeded` check, and the seeded-state
        observations of the index's partition (their metadata), oldest first."""
        key = AssetCheckKey(SEARCH_INDEX, SEEDED_CHECK)
        records = self.instance.event_log_storage.get_asset_check_execution_history(key, limit=100)
        evaluations = [r.event.dagster_event.event_specific_data for r in reversed(records) if r.event]
        observed = self.instance.fetch_observations(
            AssetRecordsFilter(asset_key=SEARCH_INDEX, asset_partitions=[self.index]), limit=100).records
        return ([(e.passed, e.description or "") for e in evaluations],
                [{k: v.value for k, v in r.asset_observation.metadata.items()} for r in reversed(observed)
                 if "seeded" in r.asset_observation.metadata])  # not the drift check's counts


def _delete_alias(opensearch, index: str) -> str:
    """`POST _aliases` with a remove, by hand: searches of the name fail from now on."""
    (physical,) = serving(opensearch, index)
    opensearch.indices.update_aliases(body={"actions": [{"remove": {"index": physical, "alias": index}}]})
    return physical


def test_a_deleted_alias_fails_the_checks_and_shows_unseeded_once_until_it_is_seeded_again(store: Store, live,
                                                                                        opensearch) -> None:
    index, project = store.index, store.project
    partitions = index_partitions(project)
    asset = build_search_index(partitions)
    every_check = [asset, build_checks(asset, partitions), build_seeded_check(asset)]
    missing = f"there is no index or alias named {index}: searches of it fail"
    wait_converged(opensearch, store.config)
    with DagsterInstance.from_config(str(store.home)) as instance:
        sensor = SeedSensor(store, instance)
        assert sensor.tick().skip_message == "every index is seeded"
        assert sensor.shown() == ([(True, f"every index is seeded: {index}")], [])

        physical = _delete_alias(opensearch, index)
        checks = _run_checks(store, instance)
        passed, description = checks["definition_current"]
        assert not passed and description.startswith(missing), checks

        (request,) = sensor.tick()  # seed_sensor asks for a materialization, and shows why, once
        assert request.partition_key == index
        evaluations, observations = sensor.shown()
        assert evaluations[-1][0] is False and evaluations[-1][1].startswith(f"{index}: {missing}. "), evaluations
        (observed,) = observations
        assert (observed["seeded"], observed["serving"], observed["documents"]) == (f"no: {missing}", "missing", 0)
        sensor.tick()
        assert sensor.shown() == (evaluations, observations), "reported again without a change"

        result = materialize(every_check, partition_key=request.partition_key, tags=request.tags,
                             resources={"flusso": flusso_resource(project)}, instance=instance, raise_on_error=False)
        assert result.success, result.all_events
        checks = _checks(result)
        assert checks["definition_current"][0] and checks[SEEDED_CHECK][0], checks
        assert serving(opensearch, index) not in ([], [physical])
        assert sensor.tick().skip_message == "every index is seeded"
        evaluations, _ = sensor.shown()
        # the first tick, the unseeded tick, the run's own evaluation, the tick that saw it seeded again
        assert [passed for passed, _ in evaluations] == [True, False, True, True], evaluations
        sensor.tick()
        assert sensor.shown()[0] == evaluations, "reported again without a change"

        # unseeded again, then seeded by `flusso backfill` outside Dagster: a materialization is reported for it
        _delete_alias(opensearch, index)
        assert sensor.tick()[0].partition_key == index
        assert sensor.shown()[0][-1][0] is False and len(sensor.shown()[1]) == 2
        done = flusso("backfill", "--index", index, config=store.config)
        assert done.returncode == 0, done.stderr[-3000:]
        assert sensor.tick().skip_message == "every index is seeded"
        assert sensor.shown()[0][-1] == (True, f"every index is seeded: {index}")
        (record,) = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=SEARCH_INDEX, asset_partitions=[index]), limit=1).records
        assert not record.run_id, "the latest materialization is not the runless one"
        assert "seeded outside Dagster" in record.asset_materialization.metadata["seeded"].value
    wait_converged(opensearch, store.config)
