"""`queue:` in flusso.yaml: the channel as before, and `type: kafka` with its brokers, topic and bounds.

Unit tests: no services needed.
"""

from __future__ import annotations

from typing import Any

import pytest

from flusso_engine.config import parse_config
from flusso_engine.error import Problem

from .test_config import example, only_problem, problems_of


def with_queue(queue: dict[str, Any]) -> dict[str, Any]:
    raw = example()
    raw["queue"] = queue
    return raw


def test_channel_stays_the_default_with_its_capacity() -> None:
    raw = example()
    del raw["queue"]
    config = parse_config(raw, env={"FLUSSO_PG_DSN": "postgresql://u:p@h/db"})
    assert (config.queue.type, config.queue.capacity) == ("channel", 20000)


def test_kafka_queue_with_its_settings_and_defaults() -> None:
    raw = with_queue({"type": "kafka", "bootstrap": "127.0.0.1:9092, kafka2:9092", "topic": "flusso.books"})
    queue = parse_config(raw, env={"FLUSSO_PG_DSN": "postgresql://u:p@h/db"}).queue
    assert queue.type == "kafka"
    assert queue.bootstrap == "127.0.0.1:9092,kafka2:9092"
    assert (queue.topic, queue.partitions, queue.consumer_group) == ("flusso.books", 6, "flusso-flusso.books")
    assert (queue.producer_buffer, queue.fetch_max, queue.workers) == (64 * 1024**2, 16 * 1024**2, 1)
    raw["queue"].update(partitions=12, group="search", producer_buffer="128MB", fetch_max="4MB", workers=4)
    queue = parse_config(raw, env={"FLUSSO_PG_DSN": "postgresql://u:p@h/db"}).queue
    assert (queue.partitions, queue.consumer_group, queue.producer_buffer, queue.fetch_max, queue.workers) == (
        12, "search", 128 * 1024**2, 4 * 1024**2, 4)


def test_kafka_queue_needs_its_brokers_and_topic() -> None:
    assert problems_of(with_queue({"type": "kafka"})) == [
        Problem("queue.bootstrap", "is required with type: kafka, e.g. bootstrap: 127.0.0.1:9092"),
        Problem("queue.topic", "is required with type: kafka, e.g. topic: flusso_changes"),
    ]


@pytest.mark.parametrize(
    ("queue", "path", "says"),
    [
        ({"type": "kafak"}, "queue.type", '"kafak" is not one of channel, kafka (did you mean "kafka"?)'),
        ({"type": "kafka", "bootstrap": "http://h:9092", "topic": "t"}, "queue.bootstrap", "write host:port"),
        ({"type": "kafka", "bootstrap": "h:9092", "topic": "my topic!"}, "queue.topic", 'use e.g. "my_topic_"'),
        ({"type": "kafka", "bootstrap": "h:9092", "topic": "t", "partitions": 0}, "queue.partitions",
         "greater than 0"),
        ({"type": "kafka", "bootstrap": "h:9092", "topic": "t", "producer_buffer": "10kB"}, "queue.producer_buffer",
         "below 1MB"),
        ({"type": "channel", "topic": "t"}, "queue.topic", "is a setting of type: kafka, not of channel"),
        ({"type": "channel", "workers": 2}, "queue.workers", "is a setting of type: kafka, not of channel"),
        ({"type": "kafka", "bootstrap": "h:9092", "topic": "t", "workers": 0}, "queue.workers", "greater than 0"),
        ({"type": "kafka", "bootstrap": "h:9092", "topic": "t", "workers": 300}, "queue.workers",
         "must be at most 256"),
    ],
)
def test_a_wrong_queue_setting_names_its_path_and_the_fix(queue: dict[str, Any], path: str, says: str) -> None:
    problem = only_problem(with_queue(queue))
    assert problem.path == path
    assert says in problem.message
