"""Slot health (issue #19): `flusso status` and the Dagster slot_health check warn about a slot that pins
WAL while flusso is stopped, and say what to do; the rules alone, then against a real PostgreSQL (the
shared one, and a private cluster with a tiny max_slot_wal_keep_size whose slot gets invalidated)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from dagster import AssetCheckKey, AssetCheckSeverity, AssetKey, build_sensor_context, instance_for_test

from flusso_dagster.factory import flusso_resource
from flusso_dagster.project import Project
from flusso_dagster.resources import LIVE_ASSET
from flusso_dagster.slot_health import SLOT_CHECK, build_slot_health_sensor
from flusso_engine.capture.wal import SlotInfo, WalServer
from flusso_engine.capture.wal.health import Disk, judge, local_disk
from flusso_engine.units import human_bytes

from .conftest import BOOKSTORE
from .e2e import Flusso, flusso, generate, sql, wait_converged, write_config
from .pgcluster import PrivateCluster

MB = 1024 * 1024


def _server(keep: int | None = None) -> WalServer:
    return WalServer(current=100 * MB, max_slot_wal_keep_size=keep, max_wal_size=1024 * MB,
                     wal_segment_size=16 * MB, data_directory=None, port=5432, started_at=0, wal_dir_bytes=None)


def _slot(lag: int, active: bool = False, wal_status: str = "reserved", safe: int | None = None) -> SlotInfo:
    current = 100 * MB
    return SlotInfo(slot="s", plugin="pgoutput", active=active, active_pid=None, confirmed_flush_lsn=current - lag,
                    restart_lsn=None if wal_status == "lost" else current - lag, current=current, lag_bytes=lag,
                    wal_status=wal_status, safe_wal_size=safe)


# --- the rules ---------------------------------------------------------------------------------


def test_an_inactive_slot_lagging_past_warn_lag_is_a_warning_that_says_restart_or_teardown():
    health = judge("s", _server(), _slot(1373694344), warn_lag=1024 * MB)
    assert health.level == "warning"
    (lag,) = [r for r in health.reasons if r.code == "inactive_lag"]
    assert "inactive and holds 1.3 GB of WAL" in lag.message and "until the disk is full" in lag.message
    assert "flusso run" in lag.fix and "flusso teardown --yes" in lag.fix
    assert "lag 1.3 GB" in health.summary()


def test_an_active_slot_or_a_small_lag_is_ok():
    assert judge("s", _server(64 * MB), _slot(2 * MB), warn_lag=MB * 1024).level == "ok"
    assert judge("s", _server(64 * MB), _slot(900 * MB, active=True, safe=60 * MB), warn_lag=MB).level == "ok"


def test_an_unset_max_slot_wal_keep_size_is_advice_with_the_sizing_and_leaves_health_ok():
    health = judge("s", _server(None), _slot(MB), warn_lag=1024 * MB)
    assert health.ok
    (advice,) = health.reasons
    assert (advice.level, advice.code) == ("advice", "keep_size_unset")
    assert "max_slot_wal_keep_size" in advice.fix and "reseed" in advice.fix


def test_a_lost_slot_is_critical_and_names_the_recovery():
    health = judge("s", _server(4 * MB), _slot(9 * MB, wal_status="lost"), warn_lag=1024 * MB)
    assert health.level == "critical"
    (lost,) = health.reasons
    assert lost.code == "slot_lost" and "invalidated" in lost.message
    assert "flusso teardown --yes" in lost.fix and "backfills every index" in lost.fix


def test_an_unreserved_slot_is_critical_and_a_slot_near_its_keep_size_is_at_risk():
    unreserved = judge("s", _server(64 * MB), _slot(70 * MB, wal_status="unreserved", safe=-6 * MB), warn_lag=1024 * MB)
    assert unreserved.level == "critical" and unreserved.reasons[0].code == "slot_unreserved"
    at_risk = judge("s", _server(64 * MB), _slot(60 * MB, active=True, safe=4 * MB), warn_lag=1024 * MB)
    assert at_risk.level == "warning" and at_risk.reasons[0].code == "slot_at_risk"
    assert "4.0 MB of WAL left" in at_risk.reasons[0].message


def test_sizes_read_in_human_units():
    assert [human_bytes(n) for n in (0, 1023, 1536, 5 * MB, 1373694344)] == [
        "0 bytes", "1023 bytes", "1.5 kB", "5.0 MB", "1.3 GB"]


def test_disk_free_space_is_reported_only_for_a_server_on_this_machine(admin_dsn):
    from flusso_engine.capture.wal import read_slot

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        server, _ = read_slot(conn, "no_such_slot")
    here = local_disk(server, admin_dsn)
    assert here.free_bytes is not None and here.total_bytes >= here.free_bytes and here.wal_dir_bytes > 0
    elsewhere = local_disk(server, admin_dsn.replace("127.0.0.1", "db.example.com"))
    assert elsewhere == Disk(wal_dir_bytes=server.wal_dir_bytes, note="not reported: the server runs on "
                                                                      "db.example.com, not here")


# --- against PostgreSQL -------------------------------------------------------------------------


def _config(tmp_path: Path, dsn: str, index_prefix: str, warn_lag: str) -> Path:
    config = write_config(tmp_path / "flusso.yaml", dsn, index_prefix)
    raw = yaml.safe_load(config.read_text())
    raw["slot"] = {"warn_lag": warn_lag}
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    return config


def _status(config: Path) -> tuple[int, dict]:
    done = flusso("status", "--json", config=config)
    assert done.returncode in (0, 3), done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


def _write_wal(dsn: str) -> None:
    """About 6 MB of WAL that no published table carries (a table outside the config), then a segment switch."""
    sql(dsn, "CREATE TABLE IF NOT EXISTS filler (g int, pad text)",
        "INSERT INTO filler SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g",
        "SELECT pg_switch_wal()")


def _check(config: Path) -> tuple[object, dict]:
    """Evaluate slot_health_sensor once on a real instance: the check evaluation and the observation."""
    project = Project.from_env(config, env={})
    sensor = build_slot_health_sensor(project)
    with instance_for_test() as instance:
        with build_sensor_context(instance=instance, resources={"flusso": flusso_resource(project)}) as context:
            sensor(context)
        key = AssetCheckKey(AssetKey(LIVE_ASSET), SLOT_CHECK)
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
        evaluation = record.event.dagster_event.event_specific_data
        (observed,) = instance.fetch_observations(AssetKey(LIVE_ASSET), limit=5).records
        return evaluation, {k: v.value for k, v in observed.asset_observation.metadata.items()}


def test_an_inactive_lagging_slot_warns_with_exit_3_and_fails_the_check_then_both_are_ok_after_run(
        tmp_path, bookstore_db, index_prefix, opensearch):
    generate(bookstore_db, 20)
    config = _config(tmp_path, bookstore_db, index_prefix, warn_lag="4MB")
    assert flusso("run", "--no-live", config=config).returncode == 0  # the slot exists, nothing reads it
    _write_wal(bookstore_db)

    code, status = _status(config)
    assert code == 3 and status["health"] == "warning", status
    assert not status["active"] and status["lag_bytes"] >= 4 * MB
    assert {r["code"] for r in status["reasons"]} == {"inactive_lag", "keep_size_unset"}
    text = flusso("status", config=config)
    assert text.returncode == 3
    assert f"warning: slot {status['slot']} is inactive and holds" in text.stdout
    assert "Fix: restart capture (`flusso run`" in text.stdout and "max_slot_wal_keep_size unset (-1)" in text.stdout

    evaluation, observed = _check(config)
    assert not evaluation.passed and evaluation.severity == AssetCheckSeverity.WARN
    assert re.search(r"slot t_\w+: inactive, lag \d+\.\d [MG]B", evaluation.description), evaluation.description
    assert observed["lag_bytes"] >= 4 * MB and observed["health"] == "warning" and not observed["active"]

    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        deadline = time.monotonic() + 60
        while (status := _status(config)[1])["health"] != "ok" or status["lag_bytes"] >= 4 * MB:
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        assert status["active"] and _status(config)[0] == 0
        evaluation, observed = _check(config)
        assert evaluation.passed, evaluation.description
        assert observed["active"] and observed["health"] == "ok"
    finally:
        run.stop()


@pytest.fixture(scope="session")
def small_keep_cluster() -> Iterator[PrivateCluster]:
    """PostgreSQL 15 with 1 MB WAL segments and max_slot_wal_keep_size = 4MB: a stopped slot is soon lost."""
    cluster = PrivateCluster({"max_slot_wal_keep_size": "'4MB'", "min_wal_size": "'2MB'",
                              "max_wal_size": "'64MB'", "wal_keep_size": "0"}).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_an_invalidated_slot_is_critical_names_the_recovery_and_the_recovery_works(
        small_keep_cluster, tmp_path, index_prefix, opensearch):
    dsn = small_keep_cluster.create_database(f"health_{index_prefix.strip('-')}")
    sql(dsn, (BOOKSTORE / "schema.sql").read_text())
    generate(dsn, 20)
    config = _config(tmp_path, dsn, index_prefix, warn_lag="1GB")
    assert flusso("run", "--no-live", config=config).returncode == 0

    code, status = _status(config)
    assert (code, status["health"], status["reasons"]) == (0, "ok", []), status
    assert status["max_slot_wal_keep_size_bytes"] == 4 * MB and status["safe_wal_size_bytes"] > 0
    evaluation, observed = _check(config)
    assert evaluation.passed and observed["safe_wal_size"] > 0 and observed["max_slot_wal_keep_size"] == 4 * MB

    for _ in range(20):  # past max_slot_wal_keep_size, then a checkpoint invalidates the stopped slot
        _write_wal(dsn)
        sql(dsn, "CHECKPOINT")
        if _status(config)[1]["wal_status"] == "lost":
            break
    code, status = _status(config)
    assert code == 3 and status["health"] == "critical", status
    (lost,) = [r for r in status["reasons"] if r["code"] == "slot_lost"]
    assert "flusso teardown --yes" in lost["fix"] and "`flusso run`" in lost["fix"]
    evaluation, observed = _check(config)
    assert not evaluation.passed and evaluation.severity == AssetCheckSeverity.ERROR
    assert "wal_status lost" in evaluation.description and observed["wal_status"] == "lost"

    assert flusso("teardown", "--yes", config=config).returncode == 0  # the recovery it names
    assert flusso("run", "--no-live", config=config).returncode == 0
    code, status = _status(config)
    assert (code, status["health"], status["wal_status"]) == (0, "ok", "reserved"), status
    wait_converged(opensearch, config)


def test_the_check_executed_by_hand_fails_with_the_slot_numbers_and_records_an_observation(fresh_db, tmp_path):
    from dagster import AssetSelection, Definitions, define_asset_job

    from flusso_dagster.assets import flusso_live
    from flusso_dagster.slot_health import build_slot_check

    sql(fresh_db, "CREATE TABLE item (id int PRIMARY KEY, name text)",
        "SELECT pg_create_logical_replication_slot('t_by_hand', 'pgoutput')")
    _write_wal(fresh_db)
    config = tmp_path / "flusso.yaml"
    config.write_text(yaml.safe_dump({
        "source": {"dsn": fresh_db, "slot": "t_by_hand", "publication": "t_by_hand"}, "sink": {"type": "stdout"},
        "slot": {"warn_lag": "1MB"}, "indexes": {"items": {"table": "item", "key": ["id"], "fields": {"name": "name"}}},
    }))
    project = Project.from_env(config, env={})
    key = AssetCheckKey(AssetKey(LIVE_ASSET), SLOT_CHECK)
    job = define_asset_job("slot_check", selection=AssetSelection.checks(key))
    defs = Definitions(assets=[flusso_live], asset_checks=[build_slot_check()], jobs=[job],
                       resources={"flusso": flusso_resource(project)})
    with instance_for_test() as instance:
        result = defs.resolve_job_def("slot_check").execute_in_process(instance=instance)
        (evaluation,) = result.get_asset_check_evaluations()
        assert not evaluation.passed and evaluation.severity == AssetCheckSeverity.WARN
        assert "slot t_by_hand: inactive, lag" in evaluation.description
        assert "warning: slot t_by_hand is inactive and holds" in evaluation.description
        (observed,) = instance.fetch_observations(AssetKey(LIVE_ASSET), limit=5).records
        assert observed.asset_observation.metadata["lag_bytes"].value >= MB
