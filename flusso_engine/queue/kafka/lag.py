"""The consumer group's lag per partition and its members, for `flusso status`: what Kafka holds that no
worker flushed, and which workers hold which partitions now (their throughput is in `heartbeat.py`)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from .clientlog import client_logger


def group_lag(bootstrap: str, topic: str, group: str, timeout: float = 10.0) -> dict[str, Any]:
    """Per partition: the group's committed offset, the end offset, and the lag between (a partition
    with nothing committed lags from its first offset). Reads only: it never joins the group."""
    out: dict[str, Any] = {"type": "kafka", "topic": topic, "group": group}
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                      "client.id": "flusso-status"}, logger=client_logger("status"))
    try:
        found = probe.list_topics(topic, timeout=timeout).topics.get(topic)
        if found is None or found.error is not None:
            return {**out, "exists": False, "lag": None, "partitions": {}}
        parts = [TopicPartition(topic, p) for p in sorted(found.partitions)]
        partitions: dict[int, dict[str, int | None]] = {}
        for tp in probe.committed(parts, timeout=timeout):
            low, high = probe.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout)
            done = tp.offset if tp.offset >= 0 else None
            partitions[tp.partition] = {"committed": done, "end": high, "lag": high - (low if done is None else done)}
        return {**out, "exists": True, "lag": sum(p["lag"] or 0 for p in partitions.values()),
                "partitions": partitions, "members": group_members(bootstrap, topic, group, timeout)}
    except KafkaException as err:
        return {**out, "error": f"Kafka at {bootstrap} did not answer ({err.args[0].str()})"}
    finally:
        probe.close()


def group_members(bootstrap: str, topic: str, group: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The group's members now: member id, client id, host, and their partitions of `topic`."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "client.id": "flusso-status"}, logger=client_logger("status"))
    described = admin.describe_consumer_groups([group], request_timeout=timeout)[group].result(timeout)
    return [{"member": m.member_id, "client": m.client_id, "host": m.host.lstrip("/"),
             "partitions": sorted(tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic)}
            for m in sorted(described.members, key=lambda m: m.member_id)]
