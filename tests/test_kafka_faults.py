"""Every role of the Kafka queue killed at once, and workers coming and going, while writers run, on the
real PostgreSQL, OpenSearch and Kafka: the slot is never acknowledged past a change that neither a
flushed document reflects nor Kafka still holds uncommitted, and after restarts everything converges
exactly, with the group's offsets at the topic's end."""

from __future__ import annotations

import random
import re
import signal
import threading
import time

import psycopg
from confluent_kafka import Consumer, TopicPartition

from flusso_engine.changes import lsn_to_int
from flusso_engine.config import load_config
from flusso_engine.queue.kafka.codec import decode

from .e2e import Flusso, current_lsn, index_docs, slot_confirmed, wait_converged
from .test_kafka_queue import committed, kafka_bookstore, topic  # noqa: F401 - fixtures
from .test_kafka_roles import _quiet_ends

PARTITIONS = 3


class RecordingWriters:
    """Updates of random books, one transaction each, on a thread; each write is recorded with its
    title and a WAL position at or past its commit (read right after it)."""

    def __init__(self, dsn: str, seed: int) -> None:
        self.dsn = dsn
        self.seed = seed
        self.stop = threading.Event()
        self.writes: list[tuple[int, int, int]] = []  # (sequence, book id, position at or past the commit)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        rng = random.Random(self.seed)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            n = 0
            while not self.stop.is_set():
                i = rng.randint(1, 200)
                seq = self.seed * 1_000_000 + n
                conn.execute("UPDATE book SET title = %s WHERE id = %s", (f"w{seq} {i}", i))
                if n % 7 == 0:
                    conn.execute("UPDATE author SET name = %s WHERE id = %s", (f"a{seq}", rng.randint(1, 20)))
                after = lsn_to_int(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])
                with self.lock:
                    self.writes.append((seq, i, after))
                n += 1
                time.sleep(0.005)

    def acked(self, position: int) -> list[tuple[int, int]]:
        """(sequence, book) of every write whose commit is at or before `position`, surely."""
        with self.lock:
            return [(seq, i) for seq, i, after in self.writes if after <= position]

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(30)


def _topic_titles(bootstrap: str, name: str) -> dict[str, tuple[int, int]]:
    """Every book title the topic holds, with the partition and offset of its message."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{name}-reader", "enable.auto.commit": False})
    try:
        ends = {p: probe.get_watermark_offsets(TopicPartition(name, p), timeout=30)[1] for p in range(PARTITIONS)}
        probe.assign([TopicPartition(name, p, 0) for p in range(PARTITIONS)])
        out: dict[str, tuple[int, int]] = {}
        seen = {p: 0 for p in range(PARTITIONS)}
        deadline = time.monotonic() + 60
        while any(seen[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for msg in probe.consume(500, timeout=1.0):
                if msg.error() is not None:
                    continue
                seen[msg.partition()] = msg.offset() + 1
                change = decode(msg.value())
                if change.table == "public.book" and change.new and change.new.get("title"):
                    out[change.new["title"]] = (msg.partition(), msg.offset())
        assert all(seen[p] >= ends[p] for p in ends), (seen, ends)
        return out
    finally:
        probe.close()


def _check_acked_writes(opensearch, config, bootstrap: str, name: str, writers: RecordingWriters,  # noqa: ANN001
                        position: int) -> int:
    """Every write the slot acknowledged (committed at or before `position`) is reflected by a flushed
    document (its title, or a later write's), or held in Kafka past the group's committed offset of
    its partition (a worker gets it again). Returns how many acknowledged writes were checked."""
    index = next(iter(load_config(config).indexes))
    docs = index_docs(opensearch, index)
    in_topic = _topic_titles(bootstrap, name)
    offsets = committed(bootstrap, name, f"flusso-{name}", PARTITIONS)
    acked = writers.acked(position)
    for seq, book in acked:
        title = f"w{seq} {book}"
        shown = (docs.get(str(book)) or {}).get("title", "")
        match = re.match(r"w(\d+) ", shown)
        shown_seq = int(match.group(1)) if match else -1
        if shown_seq >= seq:
            continue  # a flushed document reflects it (or a later write of the same book)
        assert title in in_topic, f"write {title!r} was acknowledged (slot at {position}) but Kafka never held it"
        partition, offset = in_topic[title]
        assert offset >= offsets.get(partition, 0), (
            f"write {title!r} at {partition}:{offset} is committed (group at {offsets}) but no flushed "
            f"document reflects it (book {book} shows {shown!r})")
    return len(acked)


def _start_all(config, workers: int, topic_name: str) -> list[Flusso]:  # noqa: ANN001
    running = [Flusso(config, "--role", "capture")]
    running[0].wait_for("live capture started")
    running += [Flusso(config, "--role", "worker") for _ in range(workers)]
    for worker in running[1:]:
        worker.wait_for(f"of {topic_name} assigned", timeout=90)
    return running


def test_every_role_killed_at_once_at_random_points_then_restarted_converges(
    kafka_bookstore, opensearch, kafka_bootstrap, topic,  # noqa: F811 - the fixtures of test_kafka_queue
) -> None:
    dsn, config = kafka_bookstore
    slot = load_config(config).source.slot
    rng = random.Random()
    running: list[Flusso] = []
    writers = None
    checked = 0
    try:
        running = _start_all(config, 2, topic)
        wait_converged(opensearch, config)
        writers = RecordingWriters(dsn, seed=1)
        for _ in range(2):
            time.sleep(rng.uniform(1.0, 4.0))  # a random point of the stream: mid-batch, mid-flush, mid-commit
            for run in running:  # kill -9 of every role at once
                run.proc.send_signal(signal.SIGKILL)
            for run in running:
                run.wait(30)
            position = slot_confirmed(dsn, slot) or 0  # nobody holds the slot now: it stays here
            checked += _check_acked_writes(opensearch, config, kafka_bootstrap, topic, writers, position)
            running = _start_all(config, 2, topic)
        time.sleep(2)
        writers.finish()
        assert checked > 20, f"only {checked} acknowledged writes were checked"
        after_writes = current_lsn(dsn)
        docs = wait_converged(opensearch, config, timeout=120)
        last: dict[int, int] = {}
        for seq, book, _ in writers.writes:
            last[book] = seq
        assert all(docs[str(b)]["title"] == f"w{s} {b}" for b, s in last.items())
        deadline = time.monotonic() + 30
        while (slot_confirmed(dsn, slot) or 0) < after_writes and time.monotonic() < deadline:
            time.sleep(0.5)
        assert slot_confirmed(dsn, slot) >= after_writes
        ends = _quiet_ends(kafka_bootstrap, topic)
    finally:
        if writers is not None:
            writers.finish()
        for run in reversed(running):
            run.stop()
    for run in running:
        assert run.proc.returncode == 0, run.output()[-3000:]
    offsets = committed(kafka_bootstrap, topic, f"flusso-{topic}", PARTITIONS)
    assert all(offsets.get(p, 0) >= end for p, end in ends.items()), (offsets, ends)


def test_workers_added_and_removed_while_writers_run_rebalance_and_converge(
    kafka_bookstore, opensearch, kafka_bootstrap, topic,  # noqa: F811 - the fixtures of test_kafka_queue
) -> None:
    dsn, config = kafka_bookstore
    running: list[Flusso] = []
    writers = None
    try:
        running = _start_all(config, 2, topic)
        wait_converged(opensearch, config)
        writers = RecordingWriters(dsn, seed=2)
        time.sleep(2)
        running.append(Flusso(config, "--role", "worker"))  # one joins: it gets partitions from the others
        running[3].wait_for(f"of {topic} assigned", timeout=90)
        time.sleep(2)
        running[1].stop()  # SIGTERM: it finishes what it was handed, commits, leaves the group
        assert running[1].proc.returncode == 0, running[1].output()[-3000:]
        time.sleep(2)
        running[2].kill()  # SIGKILL: its partitions move once its session expires, uncommitted ones again
        time.sleep(3)
        writers.finish()
        assert len(writers.writes) > 100
        docs = wait_converged(opensearch, config, timeout=120)
        last: dict[int, int] = {}
        for seq, book, _ in writers.writes:
            last[book] = seq
        assert all(docs[str(b)]["title"] == f"w{s} {b}" for b, s in last.items())  # nothing stale
        ends = _quiet_ends(kafka_bootstrap, topic)
        # the last worker standing took every partition, some of them after the kill
        assert running[3].output().count(f"of {topic} assigned") >= 2
    finally:
        if writers is not None:
            writers.finish()
        for run in reversed(running):
            run.stop()
    for run in (running[0], running[3]):
        assert run.proc.returncode == 0, run.output()[-3000:]
    offsets = committed(kafka_bootstrap, topic, f"flusso-{topic}", PARTITIONS)
    assert all(offsets.get(p, 0) >= end for p, end in ends.items()), (offsets, ends)
