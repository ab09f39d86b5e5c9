"""The topic: created with the configured partitions when missing, checked when it exists."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from ...error import QueueError
from .clientlog import client_logger

log = logging.getLogger(__name__)


def ensure_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 15.0) -> int:
    """The topic's partition count, after creating it if it is missing.

    A topic that exists keeps its partitions: more are only a throughput matter (one row's changes
    stay in one partition either way, from the moment the count is what it is), so a difference is
    said, not refused. Replication is the broker's default (`default.replication.factor`).
    """
    admin = AdminClient({"bootstrap.servers": bootstrap, "client.id": "flusso-admin"}, logger=client_logger("admin"))
    try:
        meta = admin.list_topics(topic=topic, timeout=timeout)
    except KafkaException as err:
        raise QueueError(f"Kafka at {bootstrap} did not answer within {timeout:.0f} s ({err.args[0].str()}): "
                         "start it (for the local one: bash services/kafka.sh up) or fix queue.bootstrap") from err
    found = meta.topics.get(topic)
    if found is not None and found.error is None:
        have = len(found.partitions)
        if have != partitions:
            log.warning("kafka: topic %s has %d partitions, queue.partitions says %d: kept as it is "
                        "(change it with Kafka's tools; flusso never repartitions)", topic, have, partitions)
        return have
    future = admin.create_topics([NewTopic(topic, num_partitions=partitions)], operation_timeout=timeout)[topic]
    try:
        future.result(timeout)
    except KafkaException as err:
        kerr = err.args[0]
        if not (isinstance(kerr, KafkaError) and kerr.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            raise QueueError(f"Kafka at {bootstrap} refused to create topic {topic} with {partitions} partitions "
                             f"({kerr.str() if isinstance(kerr, KafkaError) else kerr}): create it yourself, or "
                             "give flusso's user CREATE on the cluster") from err
    log.info("kafka: created topic %s with %d partitions", topic, partitions)
    return partitions
