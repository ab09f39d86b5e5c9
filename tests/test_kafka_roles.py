"""`flusso run --role capture` and `--role worker` on the real PostgreSQL, OpenSearch and Kafka: one
capture and 1 or 3 workers converge on every change kind, the slot is acknowledged as far as Kafka
holds, and on a clean stop every change handed to a worker was flushed and committed; a worker
killed (-9) while writers run loses nothing, and while Kafka is down capture waits unacknowledged."""

from __future__ import annotations

import random
import subprocess
import threading
import time

import psycopg
import pytest
import yaml

from flusso_engine.config import load_config

from .e2e import ROOT, Flusso, current_lsn, flusso, slot_confirmed, sql, wait_converged
from .test_kafka_queue import committed, kafka_bookstore, topic  # noqa: F401 - fixtures

CHANGES = (
    "INSERT INTO book (id, isbn, title, publisher_id, genres) VALUES (100001, 'x-1', 'New book', 1, '{a,b}')",
    "UPDATE book SET title = 'Renamed', price = 9.99 WHERE id = 2",
    "DELETE FROM book WHERE id = 3",
    "UPDATE book SET id = 100002 WHERE id = 4",
    "UPDATE publisher SET name = 'Renamed publisher' WHERE id = 1",
    "UPDATE book SET publisher_id = 2 WHERE id = 5",
    "INSERT INTO book_detail (book_id, summary) VALUES (100001, 'a summary') ON CONFLICT DO NOTHING",
    "DELETE FROM book_detail WHERE book_id = (SELECT max(book_id) FROM book_detail WHERE book_id < 100000)",
    "INSERT INTO book_author (book_id, author_id) VALUES (100001, 1)",
    "DELETE FROM book_author WHERE book_id = 6",
    "UPDATE author SET name = 'Renamed author' WHERE id = 2",
    "INSERT INTO review (book_id, reader_id, rating, body) VALUES (100001, 1, 5, 'great')",
    "UPDATE review SET book_id = 7 WHERE id = (SELECT max(id) FROM review WHERE book_id NOT IN (7, 100001))",
    "DELETE FROM review WHERE id = (SELECT min(id) FROM review WHERE book_id = 8)",
    "UPDATE reader SET name = 'Renamed reader' WHERE id = (SELECT reader_id FROM review LIMIT 1)",
    "UPDATE tag SET name = 'renamed-tag' WHERE id = (SELECT tag_id FROM review_tag LIMIT 1)",
)


@pytest.mark.parametrize("workers", [1, 3])
def test_one_capture_and_n_workers_converge(kafka_bookstore, opensearch, kafka_bootstrap, topic,  # noqa: F811
                                            workers: int) -> None:
    dsn, config = kafka_bookstore
    slot = load_config(config).source.slot
    capture = Flusso(config, "--role", "capture")
    running = [capture]
    try:
        capture.wait_for("live capture started")  # after the capture role's backfill
        wait_converged(opensearch, config)
        for _ in range(workers):
            running.append(Flusso(config, "--role", "worker"))
        for worker in running[1:]:  # each worker owns a partition before the writes begin
            worker.wait_for(f"of {topic} assigned", timeout=90)
        sql(dsn, *CHANGES)
        with psycopg.connect(dsn, autocommit=True) as conn:  # many transactions, over every partition
            for i in range(10, 110):
                conn.execute("UPDATE book SET title = %s WHERE id = %s", (f"worker {i}", i))
        after_writes = current_lsn(dsn)
        docs = wait_converged(opensearch, config, timeout=90)
        assert "3" not in docs and "4" not in docs and "100002" in docs and docs["2"]["title"] == "Renamed"
        assert docs["100001"]["reviews"][0]["body"] == "great" and docs["50"]["title"] == "worker 50"
        deadline = time.monotonic() + 30
        while (slot_confirmed(dsn, slot) or 0) < after_writes and time.monotonic() < deadline:
            time.sleep(0.5)
        assert slot_confirmed(dsn, slot) >= after_writes
        # truncates reach whichever worker owns their partition; the index lifecycle reaches them all
        sql(dsn, "TRUNCATE review_tag")
        wait_converged(opensearch, config, timeout=120)
        sql(dsn, "TRUNCATE book CASCADE")
        assert wait_converged(opensearch, config, timeout=120) == {}
        sql(dsn, "INSERT INTO book (id, isbn, title) VALUES (1, 'y-1', 'After truncate')")
        assert wait_converged(opensearch, config)["1"]["title"] == "After truncate"
        # what capture put in Kafka until now (a truncate's rebuild may still publish a little after the
        # index converged: the ends are read once the topic stops growing)
        ends = _quiet_ends(kafka_bootstrap, topic)
    finally:
        for run in reversed(running):
            run.stop()
    for run in running:
        assert run.proc.returncode == 0, run.output()[-3000:]
    offsets = committed(kafka_bootstrap, topic, f"flusso-{topic}", 3)
    # on a clean stop, everything handed to the workers before it was flushed and committed
    assert all(offsets.get(p, 0) >= end for p, end in ends.items()), (offsets, ends)


def _quiet_ends(bootstrap: str, name: str, quiet_s: float = 2.0, timeout: float = 30.0) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{name}-probe"})
    try:
        def ends() -> dict[int, int]:
            return {p: probe.get_watermark_offsets(TopicPartition(name, p), timeout=30)[1] for p in range(3)}

        last, since, deadline = ends(), time.monotonic(), time.monotonic() + timeout
        while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
            time.sleep(0.5)
            now = ends()
            if now != last:
                last, since = now, time.monotonic()
        return last
    finally:
        probe.close()


def test_a_role_needs_a_durable_queue(bookstore_db, index_prefix, tmp_path) -> None:
    from .e2e import write_config

    config = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix)
    done = flusso("run", "--role", "worker", config=config, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "queue.type: channel is not a durable queue" in done.stderr
    assert "set queue.type: kafka" in done.stderr
    done = flusso("run", "--role", "worker", "--no-live", config=config, timeout=120)
    assert done.returncode == 1 and "--role worker: a worker holds no slot and backfills nothing" in done.stderr


class Writers:
    """Updates of random books, one transaction each, on a thread, until stopped."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.stop = threading.Event()
        self.count = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        rng = random.Random(15)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                i = rng.randint(1, 200)
                conn.execute("UPDATE book SET title = %s WHERE id = %s", (f"w{self.count} {i}", i))
                if self.count % 7 == 0:
                    conn.execute("UPDATE author SET name = %s WHERE id = %s", (f"a{self.count}", rng.randint(1, 20)))
                self.count += 1
                time.sleep(0.01)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(30)


def test_a_killed_worker_s_changes_reach_the_others(kafka_bookstore, opensearch, topic) -> None:  # noqa: F811
    dsn, config = kafka_bookstore
    running = [Flusso(config, "--role", "capture")]
    writers = None
    try:
        running[0].wait_for("live capture started")
        wait_converged(opensearch, config)
        running += [Flusso(config, "--role", "worker"), Flusso(config, "--role", "worker")]
        for worker in running[1:]:
            worker.wait_for(f"of {topic} assigned", timeout=90)
        writers = Writers(dsn)
        time.sleep(3)
        running[1].kill()  # kill -9 mid-stream: what it had not committed goes to the others
        time.sleep(2)
        running.append(Flusso(config, "--role", "worker"))  # and one more joins
        time.sleep(3)
        writers.finish()
        assert writers.count > 50
        wait_converged(opensearch, config, timeout=120)
    finally:
        if writers is not None:
            writers.finish()
        for run in reversed(running):
            run.stop()
    for run in (running[0], *running[2:]):
        assert run.proc.returncode == 0, run.output()[-3000:]


def test_kafka_down_capture_waits_then_everything_converges(
    kafka_bookstore, opensearch, topic,  # noqa: F811 - the fixtures of test_kafka_queue
) -> None:
    dsn, config = kafka_bookstore
    slot = load_config(config).source.slot
    script = str(ROOT / "services" / "kafka.sh")
    running = [Flusso(config, "--role", "capture"), Flusso(config, "--role", "worker")]
    try:
        running[0].wait_for("live capture started")
        running[1].wait_for(f"of {topic} assigned", timeout=90)
        wait_converged(opensearch, config)
        subprocess.run(["bash", script, "down"], check=True, capture_output=True, timeout=60)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(1, 40):
                conn.execute("UPDATE book SET title = %s WHERE id = %s", (f"while kafka was down {i}", i))
                if i == 1:
                    first = current_lsn(dsn)  # at or past the first write's commit
        after_writes = current_lsn(dsn)
        time.sleep(8)
        assert all(run.proc.poll() is None for run in running)  # both wait for Kafka
        # nothing acked that Kafka does not hold: not even the first write (idle keepalives before it
        # may have confirmed other databases' WAL up to it)
        assert (slot_confirmed(dsn, slot) or 0) < first
        subprocess.run(["bash", script, "up"], check=True, capture_output=True, timeout=180)
        docs = wait_converged(opensearch, config, timeout=120)
        assert docs["7"]["title"] == "while kafka was down 7"
        deadline = time.monotonic() + 30
        while (slot_confirmed(dsn, slot) or 0) < after_writes and time.monotonic() < deadline:
            time.sleep(0.5)
        assert slot_confirmed(dsn, slot) >= after_writes
    finally:
        subprocess.run(["bash", script, "up"], capture_output=True, timeout=180)
        for run in reversed(running):
            run.stop()
    for run in running:
        assert run.proc.returncode == 0, run.output()[-3000:]


def test_a_killed_capture_restarts_from_the_slot_and_everything_converges(
    kafka_bookstore, opensearch, topic,  # noqa: F811 - the fixtures of test_kafka_queue
) -> None:
    dsn, config = kafka_bookstore
    running = [Flusso(config, "--role", "capture"), Flusso(config, "--role", "worker")]
    writers = None
    try:
        running[0].wait_for("live capture started")
        running[1].wait_for(f"of {topic} assigned", timeout=90)
        wait_converged(opensearch, config)
        writers = Writers(dsn)
        time.sleep(3)
        running[0].kill()  # kill -9: what Kafka did not confirm was never acked, the slot sends it again
        time.sleep(1)
        running.append(Flusso(config, "--role", "capture"))
        running[-1].wait_for("live capture started")
        time.sleep(2)
        writers.finish()
        wait_converged(opensearch, config, timeout=120)
    finally:
        if writers is not None:
            writers.finish()
        for run in reversed(running):
            run.stop()
    for run in running[1:]:
        assert run.proc.returncode == 0, run.output()[-3000:]


def test_a_polling_capture_role_feeds_workers_through_kafka(kafka_bookstore, opensearch, topic) -> None:  # noqa: F811
    """capture: polling behind the capture role: its commit markers (only a poll's last carries the
    poll's position) reach Kafka's whole-transaction acknowledgement, and two workers converge."""
    dsn, config = kafka_bookstore
    raw = yaml.safe_load(config.read_text())
    raw["source"].pop("publication")
    raw["source"].update(capture="polling", poll_interval_ms=100)
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    capture = Flusso(config, "--role", "capture")
    running = [capture]
    try:
        capture.wait_for("live capture started")
        wait_converged(opensearch, config)
        running += [Flusso(config, "--role", "worker") for _ in range(2)]
        for worker in running[1:]:
            worker.wait_for(f"of {topic} assigned", timeout=90)
        sql(dsn, *CHANGES)
        docs = wait_converged(opensearch, config, timeout=90)
        assert "3" not in docs and docs["2"]["title"] == "Renamed" and "100002" in docs
        deadline = time.monotonic() + 30
        while pending_rows(dsn) > 0:  # the cursor moved past every change: acknowledged through Kafka
            assert time.monotonic() < deadline, "the change log was not acknowledged through Kafka"
            time.sleep(0.3)
    finally:
        for run in running:
            run.stop()
    assert all(r.proc.returncode == 0 for r in running), [r.output()[-2000:] for r in running]


def pending_rows(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM flusso.changes c JOIN flusso.cursors k USING (slot) "
                            "WHERE NOT pg_visible_in_snapshot(c.xid, k.snapshot)").fetchone()[0]


def test_a_materialized_view_refreshed_under_the_capture_role_rebuilds_through_kafka(
        fresh_db, index_prefix, tmp_path, kafka_bootstrap, opensearch, topic) -> None:  # noqa: F811
    """The capture role's catalog watch sees the REFRESH; its resync reaches a worker through Kafka,
    which rebuilds the index that reads the view (`capture/refresh.py`)."""
    from .e2e import write_config
    from .test_matviews_e2e import BOOKS, SCHEMA, wait_docs

    sql(fresh_db, SCHEMA)
    config = write_config(tmp_path / "flusso.yaml", fresh_db, index_prefix, indexes={"books": BOOKS})
    raw = yaml.safe_load(config.read_text())
    raw["queue"] = {"type": "kafka", "bootstrap": kafka_bootstrap, "topic": topic, "partitions": 2}
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    capture = Flusso(config, "--role", "capture")
    running = [capture]
    try:
        capture.wait_for("live capture started")
        running += [Flusso(config, "--role", "worker") for _ in range(2)]
        for worker in running[1:]:
            worker.wait_for(f"of {topic} assigned", timeout=90)
        sql(fresh_db, "INSERT INTO review VALUES (4, 3, 2)", "REFRESH MATERIALIZED VIEW book_stats")
        wait_docs(opensearch, f"{index_prefix}books", {
            "1": {"title": "Il nome della rosa", "stats": {"reviews": 2, "best": 5}},
            "2": {"title": "Se una notte", "stats": {"reviews": 1, "best": 4}},
            "3": {"title": "Gomorra", "stats": {"reviews": 1, "best": 2}},
        }, timeout=90)
        capture.wait_for("materialized view public.book_stats was refreshed")
    finally:
        for run in running:
            run.stop()
    assert all(r.proc.returncode == 0 for r in running), [r.output()[-2000:] for r in running]
