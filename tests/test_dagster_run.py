"""The Dagster layer against the real services: materializations, checks, and live_capture run for real.

Each test has a database of its own with a small generated bookstore, a slot `t_<uuid>` and index
names under its own prefix.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import yaml
from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    ExecuteInProcessResult,
    RunsFilter,
    SkipReason,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from flusso_dagster.assets import FORCE_RUN_CONFIG, build_search_index, index_partitions
from flusso_dagster.checks import build_checks
from flusso_dagster.factory import flusso_resource
from flusso_dagster.project import Project
from flusso_dagster.resources import LIVE_ASSET

from .conftest import OPENSEARCH_URL

ROOT = Path(__file__).resolve().parents[1]
BOOKS = 150
sys.path.insert(0, str(ROOT / "examples" / "bookstore"))


def _write_config(path: Path, dsn: str, prefix: str, slot: str, extra_index: bool = False,
                  capture: str = "wal") -> Path:
    from flusso_engine.config import read_yaml

    raw = read_yaml((ROOT / "examples/bookstore/flusso.yaml").read_text())
    raw["source"].update(dsn=dsn, slot=slot, publication=slot, capture=capture)
    if capture == "polling":
        del raw["source"]["publication"]
        raw["source"]["poll_interval_ms"] = 100
    raw["sink"]["hosts"] = [OPENSEARCH_URL]
    raw["batch"] = {"max_changes": 200, "max_delay_ms": 50}
    indexes = {f"{prefix}books": raw["indexes"]["books"]}
    if extra_index:
        indexes[f"{prefix}authors"] = {"table": "public.author", "key": ["id"],
                                       "fields": {"name": "name", "born": "born"}}
    raw["indexes"] = indexes
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _project(tmp_path: Path, dsn: str, prefix: str, extra_index: bool = False, capture: str = "wal") -> Project:
    from generate import generate

    with psycopg.connect(dsn) as conn:
        generate(conn, BOOKS, seed=7)
    slot = f"t_{uuid.uuid4().hex[:12]}"
    config = _write_config(tmp_path / "flusso.yaml", dsn, prefix, slot, extra_index, capture)
    return Project.from_env(config, env={"FLUSSO_HEARTBEAT_S": "1"})


@pytest.fixture
def project(tmp_path, bookstore_db, index_prefix) -> Project:
    return _project(tmp_path, bookstore_db, index_prefix)


@pytest.fixture
def two_index_project(tmp_path, bookstore_db, index_prefix) -> Project:
    return _project(tmp_path, bookstore_db, index_prefix, extra_index=True)


def _materialize(project: Project, index: str, instance: DagsterInstance, force: bool = False,
                 checks: bool = True) -> ExecuteInProcessResult:
    partitions = index_partitions(project)
    asset = build_search_index(partitions)
    return materialize(
        [asset, *([build_checks(asset, partitions)] if checks else [])],
        partition_key=index,
        resources={"flusso": flusso_resource(project)},
        run_config=FORCE_RUN_CONFIG if force else None,
        instance=instance,
        raise_on_error=False,
    )


def _metadata(result: ExecuteInProcessResult) -> dict:
    (event,) = result.asset_materializations_for_node("search_index")
    return {k: v.value for k, v in event.metadata.items()}


def _checks(result: ExecuteInProcessResult) -> dict[str, tuple[bool, str]]:
    return {e.check_name: (e.passed, e.description or "") for e in result.get_asset_check_evaluations()}


def _count(opensearch, index: str) -> int:
    opensearch.indices.refresh(index=index)
    return opensearch.count(index=index)["count"]


def _wait_for(what: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def test_materialize_writes_every_document_then_says_seeded_then_force_rewrites(project, opensearch):
    index = project.indexes[0]
    with instance_for_test() as instance:
        first = _materialize(project, index, instance, checks=False)
        assert first.success, first.all_events
        meta = _metadata(first)
        assert meta["documents_written"] == BOOKS and meta["root_rows"] == BOOKS
        assert meta["rejected"] == 0 and meta["duration_s"] > 0 and meta["documents_per_s"] > 0
        assert _count(opensearch, index) == BOOKS
        logs = [e.message for e in instance.all_logs(first.run_id) if e.is_dagster_event is False]
        assert any(f"backfill of {index} done: {BOOKS} documents" in m for m in logs), logs

        again = _materialize(project, index, instance, checks=False)
        assert again.success
        meta = _metadata(again)
        assert meta["documents_written"] == 0 and "the index is seeded" in meta["seeded"]

        forced = _materialize(project, index, instance, force=True, checks=False)
        assert forced.success
        metadata = _metadata(forced)
        assert metadata["documents_written"] == BOOKS
        assert _count(opensearch, index) == BOOKS
        # a forced reseed builds the next generation beside the serving one, then swaps the alias
        assert (metadata["alias"], metadata["physical_index"]) == (index, f"{index}__g2")
        assert metadata["previous_generation"] == f"{index}__g1"
        assert opensearch.indices.get_alias(name=index) == {f"{index}__g2": {"aliases": {index: {}}}}


def test_checks_pass_after_a_backfill_and_fail_after_a_root_row_is_inserted(project, bookstore_db):
    index = project.indexes[0]
    with instance_for_test() as instance:
        result = _materialize(project, index, instance)
        assert result.success
        assert _checks(result) == {
            "documents_match_rows": (True, f"{BOOKS} documents, {BOOKS} rows in the root table; "
                                           "no drift (verify, sample 1000)"),
            "definition_current": (True, f"{index} serves {index}__g1, built from the config's definition"),
        }
        with psycopg.connect(bookstore_db) as conn:
            conn.execute("INSERT INTO book (isbn, title) VALUES ('9780000000001', 'Unseen')")

        result = _materialize(project, index, instance)  # seeded: writes nothing, then the checks
        assert result.success and _metadata(result)["documents_written"] == 0
        passed, description = _checks(result)["documents_match_rows"]
        assert not passed
        assert f"{BOOKS} documents in {index} but {BOOKS + 1} rows" in description
        assert "1 missing" in description and "1 missing (verify, sample 1000)" in description


def test_all_partitions_materialize_at_once_without_corrupting_each_other(two_index_project, opensearch,
                                                                          tmp_path):
    """Each partition in a run process of its own, started together, as a backfill of all would."""
    project = two_index_project
    home = tmp_path / "dagster_home"
    home.mkdir()
    DagsterInstance.from_config(str(home)).dispose()  # its SQLite storage, created once, not by both runs
    procs = [_dagster(project, home, "asset", "materialize", "--select", "search_index", "--partition", index)
             for index in project.indexes]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    books, authors = project.indexes
    assert _count(opensearch, books) == BOOKS
    with DagsterInstance.from_config(str(home)) as instance:
        rows = {r.partition_key: r.asset_materialization.metadata["root_rows"].value
                for r in instance.fetch_materializations(AssetKey("search_index"), limit=10).records}
    assert rows[books] == BOOKS and rows[authors] > 0
    assert _count(opensearch, authors) == rows[authors]


def _dagster(project: Project, home: Path, *args: str) -> subprocess.Popen:
    """A `dagster` command on the definitions for `project`, in a session of its own (for signals)."""
    env = {**os.environ, "DAGSTER_HOME": str(home), "FLUSSO_CONFIG": project.config_path,
           "FLUSSO_HEARTBEAT_S": "1"}
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster")), *args, "-m", "flusso_dagster.definitions"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )


def _slot(dsn: str, slot: str) -> tuple[bool, str | None]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT active, confirmed_flush_lsn::text FROM pg_replication_slots "
                           "WHERE slot_name = %s", (slot,)).fetchone()
    return (False, None) if row is None else (bool(row[0]), row[1])


def _lsn_at_least(dsn: str, lsn: str, than: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT %s::pg_lsn >= %s::pg_lsn", (lsn, than)).fetchone()[0]


def _title(opensearch, index: str, book: int) -> str | None:
    reply = opensearch.get(index=index, id=str(book), ignore=[404])
    return reply.get("_source", {}).get("title") if reply.get("found") else None


def test_live_capture_follows_changes_and_stops_cleanly_on_termination(project, bookstore_db, opensearch,
                                                                         tmp_path):
    index = project.indexes[0]
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.from_config(str(home)) as instance:
        assert _materialize(project, index, instance, checks=False).success
    proc = _dagster(project, home, "job", "execute", "-j", "live_capture")
    try:
        _wait_for("the live run to hold the slot", lambda: _slot(bookstore_db, project.slot)[0])
        with psycopg.connect(bookstore_db, autocommit=True) as conn:
            conn.execute("UPDATE book SET title = 'Changed while live' WHERE id = 1")
        _wait_for("the change in OpenSearch", lambda: _title(opensearch, index, 1) == "Changed while live")

        with psycopg.connect(bookstore_db) as conn:  # the last change: stop right after its commit
            conn.execute("UPDATE book SET title = 'Last before stop' WHERE id = 2")
            written = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
        with DagsterInstance.from_config(str(home)) as instance:  # what the UI's Terminate does:
            (run,) = instance.get_runs(RunsFilter(job_name="live_capture"))
            instance.report_run_canceling(run)  # mark the run, then interrupt its process
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert _title(opensearch, index, 2) == "Last before stop", output
    active, confirmed = _slot(bookstore_db, project.slot)
    assert not active
    assert _lsn_at_least(bookstore_db, confirmed, written), output

    with DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_run_records(RunsFilter(job_name="live_capture"))
        assert run.dagster_run.status == DagsterRunStatus.CANCELED, output
        beats = instance.fetch_observations(AssetKey(LIVE_ASSET), limit=100).records
        states = [r.asset_observation.metadata["state"].value for r in beats]
        assert states[0] == "stopped" and "live" in states, states
        last = beats[0].asset_observation.metadata
        assert _lsn_at_least(bookstore_db, last["confirmed_lsn"].value, written), output
        assert last["lag_bytes"].value >= 0


def test_seed_sensor_requests_the_unseeded_index_until_it_is_seeded(project):
    from flusso_dagster.sensors import build_seed_sensor

    index = project.indexes[0]
    sensor = build_seed_sensor(build_search_index(index_partitions(project)))
    resources = {"flusso": flusso_resource(project)}
    with instance_for_test() as instance:
        with build_sensor_context(instance=instance, resources=resources) as context:
            (request,) = sensor(context)
        assert (request.partition_key, request.tags["flusso/index"]) == (index, index)

        assert _materialize(project, index, instance, checks=False).success
        with build_sensor_context(instance=instance, resources=resources) as context:
            skipped = sensor(context)
        assert isinstance(skipped, SkipReason) and skipped.skip_message == "every index is seeded"


def test_keeper_ends_a_paused_live_run_that_holds_the_slot_and_frees_it_for_the_next(project, bookstore_db,
                                                                                    tmp_path):
    """A live_capture worker stopped with SIGSTOP is alive but answers nothing, and its connection keeps
    the slot: marking its run failed is not enough. The keeper kills it, and the slot is free."""
    from flusso_dagster.sensors import keep_alive

    home = tmp_path / "dagster_home"
    home.mkdir()
    DagsterInstance.from_config(str(home)).dispose()
    proc = _dagster(project, home, "job", "execute", "-j", "live_capture")
    try:
        _wait_for("the live run to hold the slot", lambda: _slot(bookstore_db, project.slot)[0])
        with DagsterInstance.from_config(str(home)) as instance:
            _wait_for("a heartbeat", lambda: instance.fetch_observations(AssetKey(LIVE_ASSET), limit=1).records)
            os.killpg(proc.pid, signal.SIGSTOP)
            (run,) = instance.get_runs(RunsFilter(job_name="live_capture"))
            request = keep_alive(instance, "live_capture", project.slot, stale_after_s=3, now=time.time() + 60,
                                 grace_s=1)
            assert request.tags["flusso/replaces"] == run.run_id
            assert proc.wait(10) == -signal.SIGKILL
            assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
        _wait_for("the slot to be released", lambda: not _slot(bookstore_db, project.slot)[0], timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_an_index_seeded_by_the_cli_is_reported_materialized_once_by_the_seed_sensor(project):
    """Seeded by `flusso backfill` before Dagster ran: the partitions page must not say "Missing"."""
    from dagster import AssetKey

    from flusso_dagster.sensors import build_seed_sensor

    index = project.indexes[0]
    done = subprocess.run([sys.executable, "-m", "flusso_engine.cli", "backfill", "-c", project.config_path],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    sensor = build_seed_sensor(build_search_index(index_partitions(project)))
    resources = {"flusso": flusso_resource(project)}
    key = AssetKey("search_index")
    with instance_for_test() as instance:
        for _ in range(2):  # the second tick finds the materialization and reports nothing more
            with build_sensor_context(instance=instance, resources=resources) as context:
                skipped = sensor(context)
            assert isinstance(skipped, SkipReason) and skipped.skip_message == "every index is seeded"
        assert instance.get_materialized_partitions(key) == {index}
        (record,) = instance.fetch_materializations(key, limit=10).records
        metadata = {k: v.value for k, v in record.asset_materialization.metadata.items()}
        assert metadata["documents"] == metadata["root_rows"] == BOOKS
        assert "seeded outside Dagster" in metadata["seeded"]


def test_the_drift_check_fails_with_the_table_and_passes_after_verify_repair(project, opensearch):
    from flusso_dagster.jobs import build_verify_repair

    index = project.indexes[0]
    with instance_for_test() as instance:
        assert _materialize(project, index, instance).success
        opensearch.delete(index=index, id="7", refresh=True)
        opensearch.index(index=index, id="424242", body={"title": "no row"}, refresh=True)
        result = _materialize(project, index, instance)
        (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "documents_match_rows"]
        assert not evaluation.passed
        assert "1 missing, 1 extra" in evaluation.description
        meta = {k: v.value for k, v in evaluation.metadata.items()}
        assert meta["drift_missing"] == 1 and meta["drift_extra"] == 1 and meta["drift_stale"] == 0
        assert "| index | mode |" in meta["summary"] and "`7`" in meta["examples"] and "`424242`" in meta["examples"]
        observed = instance.fetch_observations(AssetKey("search_index"), limit=10).records
        assert any(r.asset_observation.metadata["drift_total"].value == 2 for r in observed)

        job = build_verify_repair()
        repaired = job.execute_in_process(resources={"flusso": flusso_resource(project)}, instance=instance)
        assert repaired.success
        after = _materialize(project, index, instance)
        (evaluation,) = [e for e in after.get_asset_check_evaluations() if e.check_name == "documents_match_rows"]
        assert evaluation.passed, evaluation.description
        assert "no drift" in evaluation.description


def test_a_polling_source_materializes_runs_live_and_reports_its_backlog(tmp_path, bookstore_db, index_prefix,
                                                                         opensearch):
    """capture: polling under Dagster: the partition's backfill, live_capture following changes with the
    change log's backlog in its heartbeat, the slot_health check fed by the polling cursor."""
    from flusso_dagster.slot_health import evaluate

    project = _project(tmp_path, bookstore_db, index_prefix, capture="polling")
    index = project.indexes[0]
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.from_config(str(home)) as instance:
        result = _materialize(project, index, instance)
        assert result.success
        assert _metadata(result)["documents_written"] == BOOKS
        assert all(passed for passed, _ in _checks(result).values()), _checks(result)
    proc = _dagster(project, home, "job", "execute", "-j", "live_capture")
    try:
        with psycopg.connect(bookstore_db, autocommit=True) as conn:
            conn.execute("UPDATE book SET title = 'Polled by Dagster' WHERE id = 1")
        _wait_for("the change in OpenSearch", lambda: _title(opensearch, index, 1) == "Polled by Dagster", 120)
        with DagsterInstance.from_config(str(home)) as instance:
            _wait_for("a heartbeat with the backlog", lambda: any(
                "backlog_rows" in r.asset_observation.metadata
                for r in instance.fetch_observations(AssetKey(LIVE_ASSET), limit=50).records), 60)
            health = evaluate(instance, flusso_resource(project))
            assert not isinstance(health, str) and health.ok and health.backlog is not None
            assert health.info is not None and health.info.active
            (run,) = instance.get_runs(RunsFilter(job_name="live_capture"))
            instance.report_run_canceling(run)
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    with DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_run_records(RunsFilter(job_name="live_capture"))
        assert run.dagster_run.status == DagsterRunStatus.CANCELED, output
