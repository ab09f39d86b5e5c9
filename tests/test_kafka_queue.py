"""The Kafka queue (`queue.type: kafka`) against the real broker of services/kafka.sh: the slot is
acknowledged only as far as Kafka holds whole transactions, offsets are committed only after the
flush, and `flusso run` with `queue: kafka` converges like the channel does."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from flusso_engine.changes import Change, commit
from flusso_engine.config import load_config
from flusso_engine.error import QueueError
from flusso_engine.queue.kafka.consumer import ChangeConsumer
from flusso_engine.queue.kafka.producer import ChangeProducer
from flusso_engine.queue.kafka.topic import ensure_topic

from .e2e import Flusso, current_lsn, flusso, generate, slot_confirmed, sql, wait_converged, write_config

KEYS = {"public.book": ["id"]}


@pytest.fixture
def topic(kafka_bootstrap: str):
    name = f"flusso-test-{uuid.uuid4().hex[:10]}"
    yield name
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.delete_topics([name], operation_timeout=30).values():
        try:
            future.result(30)
        except Exception:  # noqa: BLE001 - a test that never created it
            pass


def committed(bootstrap: str, topic: str, group: str, partitions: int) -> dict[int, int]:
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = probe.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
    finally:
        probe.close()
    return {t.partition: t.offset for t in got if t.offset >= 0}


def book(i: int, position: int, xid: int) -> Change:
    return Change("public.book", "update", new={"id": str(i), "title": f"t{i}"}, position=position, xid=xid)


def test_slot_position_is_confirmed_only_once_kafka_holds_the_whole_transaction(kafka_bootstrap, topic) -> None:
    assert ensure_topic(kafka_bootstrap, topic, 3) == 3
    producer = ChangeProducer(kafka_bootstrap, topic, KEYS, 4 * 1024**2, threading.Event())
    for i in range(20):
        assert producer.put(book(i, 100, 7))
    assert producer.confirmed() == 0  # no commit marker yet: the transaction may have more changes
    producer.put(commit(150, 7))
    producer.put(book(99, 200, 8))  # the next transaction, open
    producer.flush(30)
    assert producer.confirmed() == 150
    producer.put(commit(250, 8))
    producer.flush(30)
    assert producer.confirmed() == 250
    # one row's changes in one partition: the same key always lands in the same place
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": topic, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    where: dict[bytes, set[int]] = {}
    deadline = time.monotonic() + 30
    seen = 0
    while seen < 21 and time.monotonic() < deadline:
        for msg in consumer.consume(50, timeout=1.0):
            if msg.error() is None:
                where.setdefault(msg.key(), set()).add(msg.partition())
                seen += 1
    consumer.close()
    assert seen == 21 and all(len(p) == 1 for p in where.values())
    assert len({next(iter(p)) for p in where.values()}) > 1  # and the rows spread over the partitions


def test_offsets_are_committed_only_after_the_batch_is_done(kafka_bootstrap, topic) -> None:
    ensure_topic(kafka_bootstrap, topic, 2)
    producer = ChangeProducer(kafka_bootstrap, topic, KEYS, 4 * 1024**2, threading.Event())
    for i in range(10):
        producer.put(book(i, 100 + i, 7))
    producer.put(Change("public.book", "truncate", position=300, xid=9))
    producer.put(commit(400, 9))
    assert producer.flush(30) == 0
    group = f"{topic}-workers"
    stop = threading.Event()
    first = ChangeConsumer(kafka_bootstrap, topic, group, 1024**2, stop)
    got: list[Change] = []
    deadline = time.monotonic() + 60
    while len(got) < 11 and time.monotonic() < deadline:
        got += first.get_batch(100, max_delay=0.2, timeout=1.0)
    assert len(got) == 11
    # a truncate is read as a resync: later changes may have been handled already elsewhere
    assert [c.op for c in got if c.op not in ("update",)] == ["resync"]
    assert committed(kafka_bootstrap, topic, group, 2) == {}  # handed out, not flushed: nothing committed
    first.close()
    # the worker went away before its flush: a second one gets every change again
    second = ChangeConsumer(kafka_bootstrap, topic, group, 1024**2, stop)
    again: list[Change] = []
    deadline = time.monotonic() + 60
    while len(again) < 11 and time.monotonic() < deadline:
        again += second.get_batch(100, max_delay=0.2, timeout=1.0)
    assert sorted(c.position for c in again) == sorted(c.position for c in got)
    while second._pending:  # every batch flushed: commit them, oldest first
        second.batch_done()
    assert sum(committed(kafka_bootstrap, topic, group, 2).values()) == 11
    assert second.get_batch(100, max_delay=0.2, timeout=1.0) == []
    second.close()


def test_an_unreachable_kafka_is_named_with_the_fix() -> None:
    with pytest.raises(QueueError) as err:
        ensure_topic("127.0.0.1:1", "t", 1, timeout=2)
    assert "Kafka at 127.0.0.1:1 did not answer" in str(err.value)
    assert "bash services/kafka.sh up" in str(err.value)


@pytest.fixture
def kafka_bookstore(bookstore_db: str, index_prefix: str, tmp_path: Path, kafka_bootstrap: str, topic: str):
    generate(bookstore_db, books=200)
    path = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix)
    raw = yaml.safe_load(path.read_text())
    raw["queue"] = {"type": "kafka", "bootstrap": kafka_bootstrap, "topic": topic, "partitions": 3}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return bookstore_db, path


def test_flusso_run_through_kafka_converges_and_commits_what_it_flushed(kafka_bookstore, opensearch,
                                                                        kafka_bootstrap, topic) -> None:
    dsn, config = kafka_bookstore
    slot = load_config(config).source.slot
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        wait_converged(opensearch, config)
        sql(
            dsn,
            "INSERT INTO book (id, isbn, title, publisher_id, genres) VALUES (100001, 'x-1', 'New book', 1, '{a,b}')",
            "UPDATE book SET title = 'Renamed', price = 9.99 WHERE id = 2",
            "DELETE FROM book WHERE id = 3",
            "UPDATE book SET id = 100002 WHERE id = 4",
            "UPDATE publisher SET name = 'Renamed publisher' WHERE id = 1",
            "INSERT INTO book_author (book_id, author_id) VALUES (100001, 1)",
            "DELETE FROM book_author WHERE book_id = 6",
            "UPDATE author SET name = 'Renamed author' WHERE id = 2",
            "INSERT INTO review (book_id, reader_id, rating, body) VALUES (100001, 1, 5, 'great')",
            "UPDATE review SET book_id = 7 WHERE id = (SELECT max(id) FROM review WHERE book_id NOT IN (7, 100001))",
            "UPDATE reader SET name = 'Renamed reader' WHERE id = (SELECT reader_id FROM review LIMIT 1)",
        )
        with __import__("psycopg").connect(dsn, autocommit=True) as conn:
            for i in range(10, 60):
                conn.execute("UPDATE book SET title = %s WHERE id = %s", (f"kafka {i}", i))
        after_writes = current_lsn(dsn)
        docs = wait_converged(opensearch, config)
        assert "3" not in docs and "4" not in docs and "100002" in docs and docs["2"]["title"] == "Renamed"
        assert docs["100001"]["reviews"][0]["body"] == "great"
        # the slot is acknowledged as far as Kafka holds (here: everything written)
        deadline = time.monotonic() + 30
        while (slot_confirmed(dsn, slot) or 0) < after_writes and time.monotonic() < deadline:
            time.sleep(0.5)
        assert slot_confirmed(dsn, slot) >= after_writes
        # a root truncate goes through a rebuild from current rows (partitions are not ordered together)
        sql(dsn, "TRUNCATE book CASCADE")
        assert wait_converged(opensearch, config, timeout=120) == {}
        sql(dsn, "INSERT INTO book (id, isbn, title) VALUES (1, 'y-1', 'After truncate')")
        assert wait_converged(opensearch, config)["1"]["title"] == "After truncate"
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.output()[-3000:]
    # every change handed to the worker was flushed and its offset committed: the group has no lag
    offsets = committed(kafka_bootstrap, topic, f"flusso-{topic}", 3)
    probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"{topic}-probe"})
    ends = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(3)}
    probe.close()
    assert {p: offsets.get(p, 0) for p in range(3)} == ends
    # and `flusso status` says so, per partition
    shown = flusso("status", "--json", config=config)
    queue = json.loads(shown.stdout)["queue"]
    assert (queue["topic"], queue["group"], queue["lag"]) == (topic, f"flusso-{topic}", 0)
    assert {int(p): v["end"] for p, v in queue["partitions"].items()} == ends
    text = flusso("status", config=config).stdout
    assert f"queue kafka topic {topic}, group flusso-{topic}: lag 0 changes (0: 0, 1: 0, 2: 0)" in text


def test_a_change_kafka_cannot_take_stops_capture_saying_why(kafka_bootstrap, topic) -> None:
    ensure_topic(kafka_bootstrap, topic, 1)
    producer = ChangeProducer(kafka_bootstrap, topic, KEYS, 4 * 1024**2, threading.Event())
    huge = Change("public.book", "insert", new={"id": "1", "body": "x" * 2_000_000}, position=5, xid=1)
    with pytest.raises(QueueError) as err:
        producer.put(huge)
    assert "a change of public.book at 5" in str(err.value) and "max.message.bytes" in str(err.value)
    with pytest.raises(QueueError):  # and nothing after it: its transaction never counts as held
        producer.put(commit(6, 1))
    with pytest.raises(QueueError):
        producer.confirmed()
