"""live_capture with `queue: kafka` under Dagster: one run per role (the capture role and
`queue.workers` workers), launched with `dagster job execute` as a user would, against the real
PostgreSQL, OpenSearch and Kafka; `stop_live_capture` ends every role cleanly; live_capture_keeper
asks for each missing role's run with its config and tags (a temporary Dagster instance)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunRequest,
    RunsFilter,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from flusso_dagster.assets import build_search_index, index_partitions
from flusso_dagster.constants import LIVE_ASSET, LIVE_TAG, ROLE_TAG, SLOT_TAG
from flusso_dagster.factory import flusso_resource
from flusso_dagster.jobs import build_live_capture
from flusso_dagster.project import Project
from flusso_dagster.sensors import build_keeper
from flusso_engine.error import ConfigError
from flusso_engine.queue.kafka.lag import group_members

from .e2e import ROOT, current_lsn, generate, slot_confirmed, sql, wait_converged, write_config
from .test_dagster import _add_run
from .test_kafka_queue import committed, topic  # noqa: F401 - fixture

WORKERS = 2


def _kafka_config(path: Path, dsn: str, prefix: str, bootstrap: str, name: str, workers: int = WORKERS) -> Path:
    write_config(path, dsn, prefix, batch={"max_changes": 200, "max_delay_ms": 50})
    raw = yaml.safe_load(path.read_text())
    raw["queue"] = {"type": "kafka", "bootstrap": bootstrap, "topic": name, "partitions": 3, "workers": workers}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _dagster(config: Path, home: Path, log: Path, *args: str) -> subprocess.Popen:
    """`dagster ... -m flusso_dagster.definitions` on `config`, in a session of its own, output to `log`."""
    env = {**os.environ, "DAGSTER_HOME": str(home), "FLUSSO_CONFIG": str(config), "FLUSSO_HEARTBEAT_S": "1"}
    with log.open("w") as out:
        return subprocess.Popen([str(Path(sys.executable).with_name("dagster")), *args,
                                 "-m", "flusso_dagster.definitions"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)


def _role(config: Path, home: Path, role: str, slot_tag: str, slot: str) -> subprocess.Popen:
    """One role's run, tagged as live_capture_keeper tags it."""
    tags = {SLOT_TAG: slot_tag, LIVE_TAG: slot, ROLE_TAG: role}
    name = slot_tag.replace("/", "_")
    run_config = home / f"{name}.yaml"  # the launchpad's config: the op's role
    run_config.write_text(yaml.safe_dump({"ops": {"capture": {"config": {"role": role}}}}))
    return _dagster(config, home, home / f"{name}.log", "job", "execute", "-j", "live_capture",
                    "--tags", json.dumps(tags), "--config", str(run_config))


def _wait_for(what: str, condition: Callable[[], object], timeout: float = 90.0,
              procs: list[subprocess.Popen] = (), logs: Path | None = None) -> None:
    """Poll `condition`; fail at the timeout, or as soon as one of `procs` has exited (with the logs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if any(p.poll() is not None for p in procs):
            pytest.fail(f"a role's run exited while waiting for {what}:\n{_logs(logs)}")
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}:\n{_logs(logs)}")


def _logs(home: Path | None) -> str:
    """The end of each dagster command's output, without Dagster's debug lines."""
    if home is None:
        return ""
    return "\n".join(f"== {p.name}\n" + "\n".join(line for line in p.read_text().splitlines()
                                                     if " - DEBUG - " not in line)[-2500:]
                     for p in sorted(home.glob("*.log")))


def _last_beat(instance: DagsterInstance, run_id: str) -> dict:
    (record,) = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_OBSERVATION,
                                             ascending=False, limit=1).records
    metadata = record.event_log_entry.dagster_event.event_specific_data.asset_observation.metadata
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def test_capture_and_two_worker_runs_follow_changes_and_stop_live_capture_ends_them_all(
    bookstore_db, index_prefix, tmp_path, kafka_bootstrap, opensearch, topic,  # noqa: F811
) -> None:
    dsn = bookstore_db
    generate(dsn, books=200)
    config = _kafka_config(tmp_path / "flusso.yaml", dsn, index_prefix, kafka_bootstrap, topic)
    project = Project.from_env(config, env={})
    slot = project.slot
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("python_logs: {managed_python_loggers: [flusso], python_log_level: INFO}\n"
                                       "telemetry: {enabled: false}\n")
    with DagsterInstance.from_config(str(home)) as instance:  # the seed: the partition's backfill
        asset = build_search_index(index_partitions(project))
        assert materialize([asset], partition_key=project.indexes[0], instance=instance,
                           resources={"flusso": flusso_resource(project)}).success
    procs = [_role(config, home, "capture", slot, slot)]
    procs += [_role(config, home, "worker", f"{slot}/worker-{i}", slot) for i in range(1, WORKERS + 1)]
    try:
        members = lambda: group_members(kafka_bootstrap, topic, f"flusso-{topic}")  # noqa: E731
        _wait_for("both workers to own partitions",
                  lambda: len(m := members()) == WORKERS and all(x["partitions"] for x in m), procs=procs, logs=home)
        with __import__("psycopg").connect(dsn, autocommit=True) as conn:  # one transaction per row
            for i in range(10, 70):
                conn.execute("UPDATE book SET title = %s WHERE id = %s", (f"via kafka {i}", i))
        sql(dsn, "DELETE FROM book WHERE id = 3")
        written = current_lsn(dsn)
        docs = wait_converged(opensearch, config, timeout=90)
        assert docs["42"]["title"] == "via kafka 42" and "3" not in docs
        _wait_for("the slot acknowledged past the writes", lambda: (slot_confirmed(dsn, slot) or 0) >= written, 30)
        with DagsterInstance.from_config(str(home)) as instance:
            runs = {r.tags[SLOT_TAG]: r for r in instance.get_runs(RunsFilter(job_name="live_capture"))}
            assert set(runs) == {slot, f"{slot}/worker-1", f"{slot}/worker-2"}
            assert {r.status for r in runs.values()} == {DagsterRunStatus.STARTED}
            # each worker's own heartbeat: it flushed documents (the capture role writes none)
            for i in range(1, WORKERS + 1):
                _wait_for(f"worker {i}'s heartbeat with its documents",
                          lambda i=i: _last_beat(instance, runs[f"{slot}/worker-{i}"].run_id)["documents_total"] > 0)
            capture = _last_beat(instance, runs[slot].run_id)
            assert capture["role"] == "capture" and capture["documents_total"] == 0 and capture["slot"] == slot

        # one role's run terminated alone (what the UI's Terminate does to a run of this machine: the
        # run marked canceling, its process interrupted): it stops cleanly, the other worker takes over
        with DagsterInstance.from_config(str(home)) as instance:
            instance.report_run_canceling(runs[f"{slot}/worker-2"])
        os.killpg(procs[2].pid, signal.SIGINT)
        procs[2].wait(60)
        _wait_for("the other worker to own every partition",
                  lambda: [x["partitions"] for x in members()] == [[0, 1, 2]], procs=procs[:2], logs=home)
        with __import__("psycopg").connect(dsn, autocommit=True) as conn:
            for i in range(70, 100):
                conn.execute("UPDATE book SET title = %s WHERE id = %s", (f"one worker {i}", i))
        assert wait_converged(opensearch, config, timeout=90)["99"]["title"] == "one worker 99"
        with DagsterInstance.from_config(str(home)) as instance:
            statuses = {r.tags[SLOT_TAG]: r.status for r in instance.get_runs(RunsFilter(job_name="live_capture"))}
        assert statuses == {slot: DagsterRunStatus.STARTED, f"{slot}/worker-1": DagsterRunStatus.STARTED,
                            f"{slot}/worker-2": DagsterRunStatus.CANCELED}, _logs(home)

        stop = _dagster(config, home, home / "stop.log", "job", "execute", "-j", "stop_live_capture")
        assert stop.wait(150) == 0, _logs(home)
        for proc in procs:
            proc.wait(30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    logs = _logs(home)
    assert (home / "stop.log").read_text().count("sent SIGTERM to its process") == 2, logs  # the two left
    with DagsterInstance.from_config(str(home)) as instance:
        statuses = {r.tags[SLOT_TAG]: r.status for r in instance.get_runs(RunsFilter(job_name="live_capture"))}
        assert set(statuses.values()) == {DagsterRunStatus.CANCELED}, (statuses, logs)
        beats = instance.fetch_observations(AssetKey(LIVE_ASSET), limit=200).records
        stopped = {r.run_id for r in beats if r.asset_observation.metadata["state"].value == "stopped"}
        assert len(stopped) == 1 + WORKERS  # every role recorded its last heartbeat on the way out
    info = __import__("psycopg").connect(dsn, autocommit=True).execute(
        "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    assert info == (False,)
    # on a clean stop every change the workers were handed was flushed, and its offset committed
    offsets = committed(kafka_bootstrap, topic, f"flusso-{topic}", 3)
    ends = _ends(kafka_bootstrap, topic)
    assert all(offsets.get(p, 0) >= end for p, end in ends.items()), (offsets, ends)


def _ends(bootstrap: str, name: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{name}-probe"})
    try:
        return {p: probe.get_watermark_offsets(TopicPartition(name, p), timeout=30)[1] for p in range(3)}
    finally:
        probe.close()


# --- the keeper's requests (no services: a temporary instance and a config file) ------------------

def _project(tmp_path: Path, queue: dict) -> Project:
    path = tmp_path / "flusso.yaml"
    path.write_text(yaml.safe_dump({
        "source": {"dsn": "${NOT_SET_ANYWHERE}", "slot": "kslot", "publication": "kslot"},
        "sink": {"type": "stdout"}, "queue": queue,
        "indexes": {"a": {"table": "t", "key": ["id"], "fields": {"x": "x"}}},
    }))
    return Project.from_env(path, env={})


def test_keeper_asks_for_the_capture_role_and_each_missing_worker_with_their_tags(tmp_path) -> None:
    project = _project(tmp_path, {"type": "kafka", "bootstrap": "127.0.0.1:9092", "topic": "t", "workers": 3})
    assert (project.queue, project.workers) == ("kafka", 3)
    keeper = build_keeper(build_live_capture(project), project)
    with instance_for_test() as instance:
        requests = keeper(build_sensor_context(instance=instance))
        assert [(r.tags[SLOT_TAG], r.tags[ROLE_TAG], r.tags[LIVE_TAG]) for r in requests] == [
            ("kslot", "capture", "kslot"), ("kslot/worker-1", "worker", "kslot"),
            ("kslot/worker-2", "worker", "kslot"), ("kslot/worker-3", "worker", "kslot")]
        assert [r.run_config["ops"]["capture"]["config"]["role"] for r in requests] == [
            "capture", "worker", "worker", "worker"]

        # worker 2 is running and the capture is queued: only workers 1 and 3 are missing
        _add_run(instance, "live_capture", DagsterRunStatus.STARTED, requests[2].tags)
        _add_run(instance, "live_capture", DagsterRunStatus.QUEUED, requests[0].tags)
        again = keeper(build_sensor_context(instance=instance))
        assert [r.tags[SLOT_TAG] for r in again] == ["kslot/worker-1", "kslot/worker-3"]


def test_the_keepers_run_configs_are_valid_for_live_capture(tmp_path) -> None:
    from dagster import validate_run_config

    project = _project(tmp_path, {"type": "kafka", "bootstrap": "127.0.0.1:9092", "topic": "t", "workers": 1})
    job = build_live_capture(project)
    with instance_for_test() as instance:
        for request in build_keeper(job, project)(build_sensor_context(instance=instance)):
            assert validate_run_config(job, request.run_config)["ops"]["capture"]["config"]["role"] in (
                "capture", "worker")


def test_stop_live_cancels_a_queued_role_run_and_leaves_other_slots_alone(tmp_path) -> None:
    from flusso_dagster.jobs import stop_live

    queued = {"run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}}
    with instance_for_test(overrides=queued) as instance:
        mine = _add_run(instance, "live_capture", DagsterRunStatus.QUEUED,
                        {SLOT_TAG: "kslot/worker-1", LIVE_TAG: "kslot", ROLE_TAG: "worker"})
        other = _add_run(instance, "live_capture", DagsterRunStatus.QUEUED,
                         {SLOT_TAG: "other", LIVE_TAG: "other", ROLE_TAG: "live"})
        (done,) = stop_live(instance, "kslot")
        assert done == f"worker run {mine.run_id}: canceled (queued) or terminated by the run launcher"
        assert instance.get_run_by_id(mine.run_id).status == DagsterRunStatus.CANCELED
        assert instance.get_run_by_id(other.run_id).status == DagsterRunStatus.QUEUED


def test_keeper_stops_the_runs_of_roles_the_config_no_longer_has(tmp_path) -> None:
    """queue.workers lowered from 3 to 1, and a `live` run left from the channel: the keeper stops
    worker 2 and 3 and the live run, keeps worker 1, and leaves another slot's runs alone."""
    from flusso_dagster.sensors import keep_roles

    project = _project(tmp_path, {"type": "kafka", "bootstrap": "127.0.0.1:9092", "topic": "t", "workers": 1})
    queued = {"run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}}
    with instance_for_test(overrides=queued) as instance:
        runs = {tag: _add_run(instance, "live_capture", DagsterRunStatus.QUEUED,
                              {SLOT_TAG: tag, LIVE_TAG: slot, ROLE_TAG: role})
                for tag, slot, role in [("kslot/worker-1", "kslot", "worker"), ("kslot/worker-2", "kslot", "worker"),
                                        ("kslot/worker-3", "kslot", "worker"), ("kslot", "kslot", "live"),
                                        ("other/worker-7", "other", "worker")]}
        keep_roles(instance, "live_capture", project, 60.0)
        statuses = {tag: instance.get_run_by_id(run.run_id).status for tag, run in runs.items()}
    assert statuses == {"kslot/worker-1": DagsterRunStatus.QUEUED, "kslot/worker-2": DagsterRunStatus.CANCELED,
                        "kslot/worker-3": DagsterRunStatus.CANCELED, "kslot": DagsterRunStatus.CANCELED,
                        "other/worker-7": DagsterRunStatus.QUEUED}


def test_keeper_asks_for_one_live_run_with_the_channel(tmp_path) -> None:
    project = _project(tmp_path, {"type": "channel"})
    keeper = build_keeper(build_live_capture(project), project)
    with instance_for_test() as instance:
        request = keeper(build_sensor_context(instance=instance))
    assert isinstance(request, RunRequest) and request.tags == {SLOT_TAG: "kslot"} and not request.run_config
    job = build_live_capture(project)  # the job's tags fill in the rest: role live, every live run's tag
    assert job.tags == {SLOT_TAG: "kslot", LIVE_TAG: "kslot", ROLE_TAG: "live"}


def test_a_bad_worker_count_is_named_when_the_definitions_load(tmp_path) -> None:
    with pytest.raises(ConfigError) as err:
        _project(tmp_path, {"type": "kafka", "bootstrap": "127.0.0.1:9092", "topic": "t", "workers": 0})
    assert "queue.workers" in str(err.value) and "from 1 to 256" in str(err.value)


def test_a_role_run_must_carry_its_roles_slot_tag() -> None:
    from dagster import Failure

    from flusso_dagster.live_roles import check_tags

    check_tags("worker", {SLOT_TAG: "s/worker-2"}, "s")
    check_tags("capture", {SLOT_TAG: "s"}, "s")
    for role, tag in (("worker", "s"), ("capture", "s/worker-1"), ("live", "other")):
        with pytest.raises(Failure, match=f"does not fit role {role} of slot s: launch it with"):
            check_tags(role, {SLOT_TAG: tag}, "s")


def test_validate_notes_workers_beyond_the_topics_partitions(kafka_bootstrap, topic) -> None:  # noqa: F811
    from flusso_engine.config.models import QueueConfig
    from flusso_engine.queue.kafka.validation import checks

    queue = QueueConfig(type="kafka", bootstrap=kafka_bootstrap, topic=topic, partitions=3, workers=5)
    problems, notes = checks(queue)
    assert problems == []
    assert notes[-1] == (f"queue: workers is 5 and topic {topic} has 3 partitions: Dagster's live_capture runs 2 "
                         "worker(s) that get no partition and stay idle; set queue.workers to at most 3, or add "
                         "partitions with Kafka's tools")
    assert len(checks(queue.model_copy(update={"workers": 3}))[1]) == 1  # no note at the partition count
