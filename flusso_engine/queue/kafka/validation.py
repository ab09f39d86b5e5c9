"""`flusso validate` with `queue.type: kafka`: the brokers answer, and the topic is there with the
configured partitions or Kafka would let `flusso run` create it (asked with `validate_only`, so that
validate creates nothing)."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from ...config.models import QueueConfig
from ...error import Problem
from .clientlog import client_logger


def _why(err: KafkaException) -> str:
    kerr = err.args[0] if err.args else err
    return kerr.str() if isinstance(kerr, KafkaError) else str(kerr)


def checks(config: QueueConfig, timeout: float = 10.0) -> tuple[list[Problem], list[str]]:
    """The problems (block a run) and notes (what `run` will do) of the Kafka queue."""
    problems, notes, have = _topic_checks(config, timeout)
    if not problems and config.workers > have:
        notes.append(f"queue: workers is {config.workers} and topic {config.topic} has {have} partitions: Dagster's "
                     f"live_capture runs {config.workers - have} worker(s) that get no partition and stay idle; "
                     f"set queue.workers to at most {have}, or add partitions with Kafka's tools")
    return problems, notes


def _topic_checks(config: QueueConfig, timeout: float) -> tuple[list[Problem], list[str], int]:
    """The brokers and the topic; with the partitions the topic has (or will have)."""
    assert config.bootstrap is not None and config.topic is not None  # the config model requires them
    bootstrap, topic, partitions = config.bootstrap, config.topic, config.partitions
    admin = AdminClient({"bootstrap.servers": bootstrap, "client.id": "flusso-validate"},
                        logger=client_logger("admin"))
    try:
        meta = admin.list_topics(topic=topic, timeout=timeout)
    except KafkaException as err:
        return [Problem("queue.bootstrap", f"Kafka at {bootstrap} did not answer within {timeout:.0f} s "
                        f"({_why(err)}): start it (for the local one: bash services/kafka.sh up), or set "
                        "queue.bootstrap to brokers this machine reaches (host:port, comma-separated)")], [], 0
    found = meta.topics.get(topic)
    if found is not None and found.error is None:
        have = len(found.partitions)
        if have == partitions:
            return [], [f"queue: Kafka at {bootstrap} answers; topic {topic} exists with {have} partitions"], have
        return [], [f"queue: Kafka at {bootstrap} answers; topic {topic} has {have} partitions and queue.partitions "
                    f"says {partitions}: flusso keeps the topic as it is (one row's changes stay in one partition "
                    "either way); change the count with Kafka's tools or set queue.partitions to match"], have
    future = admin.create_topics([NewTopic(topic, num_partitions=partitions)], operation_timeout=timeout,
                                 validate_only=True)[topic]
    try:
        future.result(timeout)
    except KafkaException as err:
        kerr = err.args[0] if err.args else None
        if not (isinstance(kerr, KafkaError) and kerr.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            return [Problem("queue.topic", f"topic {topic} does not exist and Kafka at {bootstrap} would refuse to "
                            f"create it with {partitions} partitions ({_why(err)}): create it yourself, or give "
                            "flusso's user CREATE on the cluster")], [], 0
    return [], [f"queue: Kafka at {bootstrap} answers; topic {topic} does not exist yet: `flusso run` creates it "
                f"with {partitions} partitions (Kafka accepts that)"], partitions
