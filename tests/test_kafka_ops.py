"""What an operator sees of the Kafka queue, on the real PostgreSQL, OpenSearch and Kafka: `flusso
validate` asks the brokers and the topic (and names the bootstrap and the fix when Kafka does not
answer), and `flusso status` lists each worker of the group with its partitions, throughput and the
age of its heartbeat, beside the lag per partition."""

from __future__ import annotations

import json
import re
import time

import yaml
from confluent_kafka.admin import AdminClient

from flusso_engine.queue.kafka.topic import ensure_topic

from .e2e import Flusso, flusso, wait_converged
from .test_kafka_faults import RecordingWriters
from .test_kafka_queue import kafka_bookstore, topic  # noqa: F401 - fixtures


def _topics(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).topics)


def test_validate_asks_kafka_for_the_topic_and_creates_nothing(
    kafka_bookstore, kafka_bootstrap, topic,  # noqa: F811 - the fixtures of test_kafka_queue
) -> None:
    _, config = kafka_bookstore
    done = flusso("validate", config=config, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (f"note: queue: Kafka at {kafka_bootstrap} answers; topic {topic} does not exist yet: `flusso run` "
            "creates it with 3 partitions (Kafka accepts that)") in done.stdout
    assert topic not in _topics(kafka_bootstrap)  # validate only asked
    ensure_topic(kafka_bootstrap, topic, 3)
    done = flusso("validate", config=config, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"note: queue: Kafka at {kafka_bootstrap} answers; topic {topic} exists with 3 partitions" in done.stdout
    raw = yaml.safe_load(config.read_text())
    raw["queue"]["partitions"] = 6
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    done = flusso("validate", config=config, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"topic {topic} has 3 partitions and queue.partitions says 6: flusso keeps the topic" in done.stdout


def test_validate_names_an_unreachable_bootstrap_and_the_fix(kafka_bookstore) -> None:  # noqa: F811
    _, config = kafka_bookstore
    raw = yaml.safe_load(config.read_text())
    raw["queue"]["bootstrap"] = "127.0.0.1:1"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    done = flusso("validate", config=config, timeout=120)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "queue.bootstrap: Kafka at 127.0.0.1:1 did not answer within 10 s" in done.stderr
    assert "bash services/kafka.sh up" in done.stderr and "set queue.bootstrap to brokers" in done.stderr
    assert not done.stdout.startswith("ok:")


def test_status_lists_each_worker_with_its_throughput_and_heartbeat(
    kafka_bookstore, opensearch, topic,  # noqa: F811 - the fixtures of test_kafka_queue
) -> None:
    dsn, config = kafka_bookstore
    running = [Flusso(config, "--role", "capture")]
    writers = None
    try:
        running[0].wait_for("live capture started")
        wait_converged(opensearch, config)
        running += [Flusso(config, "--role", "worker") for _ in range(2)]
        for worker in running[1:]:
            worker.wait_for(f"of {topic} assigned", timeout=90)
        writers = RecordingWriters(dsn, seed=3)
        deadline = time.monotonic() + 45
        while True:  # every worker has written a heartbeat since the writes began (every 5 s)
            shown = flusso("status", "--json", config=config)
            members = json.loads(shown.stdout)["queue"]["members"]
            beats = [m["heartbeat"] for m in members if m["heartbeat"] is not None]
            if len(members) == 2 and len(beats) == 2 and sum(b["changes_per_s"] for b in beats) > 0:
                break
            assert time.monotonic() < deadline, members
            time.sleep(1)
        assert sorted(p for m in members for p in m["partitions"]) == [0, 1, 2]
        pids = {r.proc.pid for r in running[1:]}
        assert {b["pid"] for b in beats} == pids
        assert all(b["age_s"] < 15 and b["interval_s"] > 0 and b["documents"] >= 0 for b in beats)
        text = flusso("status", config=config).stdout
        lines = [line for line in text.splitlines() if line.strip().startswith("worker ")]
        assert len(lines) == 2, text
        for line in lines:
            assert re.search(r"\(\S+ pid \d+\): partitions [\d,]+, [\d.]+ changes/s, [\d.]+ documents/s over \d+s, "
                             r"\d+ changes in all, heartbeat \d+s ago", line), line
        # a worker that leaves is no longer listed
        running[2].stop()
        deadline = time.monotonic() + 30
        while len(json.loads(flusso("status", "--json", config=config).stdout)["queue"]["members"]) != 1:
            assert time.monotonic() < deadline
            time.sleep(1)
    finally:
        if writers is not None:
            writers.finish()
        for run in reversed(running):
            run.stop()
    assert all(r.proc.returncode == 0 for r in running), [r.output()[-2000:] for r in running]
