"""The Kafka queue (`queue.type: kafka`): a durable topic between capture and the workers.

`put` produces (`producer.py`: idempotent, `acks=all`, bounded in bytes, keyed by table and row
key) and `get_batch` consumes in one consumer group (`consumer.py`). Two hooks replace the
channel's in-band acknowledgement, which `drive` and the engine look for on any queue:

- `confirmed()`: the slot may be acknowledged up to this position, the end of the last
  transaction Kafka holds whole (commit markers stay on the capture's side);
- `batch_done(reads)`: the oldest batch handed out, gathered by `reads` `get_batch` calls, is
  flushed; their offsets are committed.

The message format is `codec.py`; the topic is created with `queue.partitions` if missing (`topic.py`);
`flusso validate` asks the brokers and the topic through `checks` (`validation.py`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from ...changes import Change, Position
from ...config.models import QueueConfig
from .consumer import ChangeConsumer
from .lag import group_lag
from .producer import ChangeProducer
from .topic import ensure_topic
from .validation import checks  # noqa: F401 - `flusso validate`'s hook (registry.hook)


class KafkaQueue:
    """A producer, a consumer, or both (one process running capture and a worker)."""

    def __init__(self, config: QueueConfig, key_columns: Mapping[str, Sequence[str]], stop: threading.Event,
                 produce: bool = True, consume: bool = True) -> None:
        assert config.bootstrap is not None and config.topic is not None  # the config model requires them
        self.topic = config.topic
        self.partitions = ensure_topic(config.bootstrap, config.topic, config.partitions)
        self.producer = (ChangeProducer(config.bootstrap, config.topic, key_columns, config.producer_buffer, stop)
                         if produce else None)
        self.consumer = (ChangeConsumer(config.bootstrap, config.topic, config.consumer_group, config.fetch_max,
                                        stop) if consume else None)

    def put(self, item: Change) -> bool:
        if self.producer is None:
            raise RuntimeError("this Kafka queue only consumes")
        return self.producer.put(item)

    def get_batch(self, max_items: int, max_delay: float, timeout: float | None = None) -> list[Change]:
        if self.consumer is None:
            raise RuntimeError("this Kafka queue only produces")
        return self.consumer.get_batch(max_items, max_delay, timeout)

    def empty(self) -> bool:
        return self.consumer is None or self.consumer.empty()

    def confirmed(self) -> Position:
        return self.producer.confirmed() if self.producer is not None else 0

    def batch_done(self, reads: int = 1) -> None:
        if self.consumer is not None:
            self.consumer.batch_done(reads)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what the producer holds (up to `timeout`), leave the consumer group."""
        if self.producer is not None:
            self.producer.flush(timeout)
        if self.consumer is not None:
            self.consumer.close()


def status(config: QueueConfig) -> dict[str, Any]:
    """`flusso status`'s view of the queue: the consumer group's lag per partition (`lag.py`)."""
    assert config.bootstrap is not None and config.topic is not None
    return group_lag(config.bootstrap, config.topic, config.consumer_group)


def key_columns(catalog) -> dict[str, list[str]]:  # noqa: ANN001 - catalog.Catalog
    """Each table's row key for the message key: its primary key, else its first unique key."""
    out: dict[str, list[str]] = {}
    for name, table in (catalog.tables.items() if catalog is not None else ()):
        key = table.primary_key or (table.unique_keys[0] if table.unique_keys else [])
        if key:
            out[name] = list(key)
    return out


def create(context, stop: threading.Event, produce: bool = True,  # noqa: ANN001 - registry.Context
           consume: bool = True) -> KafkaQueue:
    """The registry's factory (`queue.type: kafka`): both sides for `flusso run`, one for a role."""
    return KafkaQueue(context.config.queue, key_columns(context.catalog), stop, produce=produce, consume=consume)
