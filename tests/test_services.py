"""The real services that every other test relies on: logical decoding, an OpenSearch 2.19 node, and the
Kafka broker of `queue: {type: kafka}` (started by its tests only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg
from opensearchpy import helpers


def test_logical_slot_with_pgoutput_sees_committed_rows(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("CREATE PUBLICATION p FOR TABLE t")
        conn.execute("SELECT pg_create_logical_replication_slot('s_services', 'pgoutput')")
        conn.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        rows = conn.execute(
            "SELECT lsn, data FROM pg_logical_slot_peek_binary_changes("
            "'s_services', NULL, NULL, 'proto_version', '1', 'publication_names', 'p')"
        ).fetchall()
    kinds = [bytes(data)[:1] for _, data in rows]
    # Begin, Relation, two Inserts, Commit: the binary protocol that flusso decodes
    assert kinds == [b"B", b"R", b"I", b"I", b"C"]
    assert b"one" in bytes(rows[2][1]) and b"two" in bytes(rows[3][1])


def test_wal_level_is_logical(admin_dsn: str) -> None:
    with psycopg.connect(admin_dsn) as conn:
        assert conn.execute("SHOW wal_level").fetchone()[0] == "logical"


def test_opensearch_is_version_2_19(opensearch) -> None:
    info = opensearch.info()
    assert info["version"]["number"].startswith("2.19.")
    assert opensearch.cluster.health()["status"] in ("green", "yellow")


def test_explicit_mapping_bulk_and_search(opensearch, index_prefix: str) -> None:
    index = f"{index_prefix}books"
    opensearch.indices.create(
        index=index,
        body={
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": {
                "dynamic": False,
                "properties": {
                    "title": {"type": "search_as_you_type"},
                    "isbn": {"type": "keyword"},
                    "pages": {"type": "long"},
                },
            },
        },
    )
    docs = [
        {"title": "The Name of the Rose", "isbn": "978-0151446476", "pages": 512},
        {"title": "Foucault's Pendulum", "isbn": "978-0151322305", "pages": 623},
        {"title": "Baudolino", "isbn": "978-0151006854", "pages": 521},
    ]
    ok, errors = helpers.bulk(
        opensearch, ({"_index": index, "_id": str(i), **d} for i, d in enumerate(docs)), refresh=True
    )
    assert (ok, errors) == (3, [])
    hits = opensearch.search(
        index=index,
        body={"query": {"multi_match": {"query": "name of th", "type": "bool_prefix",
                                        "fields": ["title", "title._2gram", "title._3gram"]}}},
    )["hits"]["hits"]
    assert hits[0]["_source"]["isbn"] == "978-0151446476"
    mapping = opensearch.indices.get_mapping(index=index)[index]["mappings"]
    assert mapping["properties"]["title"]["type"] == "search_as_you_type"


def _copy_kafka_service(root: Path) -> Path:
    """services/kafka.sh and its folder in a directory of their own: their own .flusso/kafka state."""
    here = Path(__file__).resolve().parents[1] / "services"
    (root / "services" / "kafka").mkdir(parents=True)
    shutil.copy(here / "kafka.sh", root / "services" / "kafka.sh")
    for name in ("pom.xml", "server.properties", "log4j2.properties"):
        shutil.copy(here / "kafka" / name, root / "services" / "kafka" / name)
    # the jars the session's broker fetched, not a second download
    (root / "services" / "kafka" / "target").symlink_to(here / "kafka" / "target")
    return root / "services" / "kafka.sh"


def test_kafka_script_is_idempotent(kafka_bootstrap: str, tmp_path: Path) -> None:
    script = _copy_kafka_service(tmp_path)
    env = {**os.environ, "KAFKA_PORT": "19092", "KAFKA_CONTROLLER_PORT": "19093", "KAFKA_HEAP": "256m"}

    def run(cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(script), cmd], env=env, capture_output=True, text=True, timeout=180)

    try:
        first = run("up")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "formatted" in first.stdout and "up at 127.0.0.1:19092" in first.stdout
        again = run("up")
        assert again.returncode == 0 and "already running" in again.stdout, again.stdout
        status = run("status")
        assert status.returncode == 0 and "running" in status.stdout
        assert (tmp_path / ".flusso" / "kafka" / "data" / "meta.properties").exists()
    finally:
        down = run("down")
    assert down.returncode == 0 and "stopped" in down.stdout, down.stdout
    assert run("down").stdout.strip() == "kafka: not running"
    assert run("status").returncode == 1


def test_kafka_broker_serves_a_produced_message(kafka_bootstrap: str) -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"flusso-services-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(30)
    try:
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "acks": "all"})
        producer.produce(topic, key=b"k", value=b"hello")
        assert producer.flush(30) == 0
        consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": topic,
                             "auto.offset.reset": "earliest"})
        consumer.subscribe([topic])
        msg = None
        for _ in range(60):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                break
        consumer.close()
        assert msg is not None and msg.value() == b"hello"
    finally:
        admin.delete_topics([topic])[topic].result(30)
