"""Capture's side of the Kafka queue: an idempotent producer, and how far the slot may be acknowledged.

The slot may move past a transaction once Kafka holds every change of it and of every transaction
before it, replicated (`acks=all`): from then on the topic, not the WAL, keeps those changes until a
worker has flushed them. `confirmed` is that position. Each transaction counts its changes not yet
confirmed by a delivery report; its commit marker closes it (markers are not published: a worker
needs no transaction boundary, docs/architecture.md says why). A delivery that fails stops the run
before anything past the last confirmed transaction is acknowledged.

Bounded in bytes: the producer holds at most `queue.producer_buffer` unconfirmed; beyond, `put`
waits (serving delivery reports) until Kafka takes more, so capture stops reading the slot while
Kafka is slow or down, and the slot keeps the changes (nothing past `confirmed` is acked).
Messages never time out (`message.timeout.ms: 0`): a Kafka that is back after any outage gets them,
in order per partition (idempotence).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from ...changes import Change, Position
from ...error import QueueError
from .clientlog import client_logger
from .codec import encode, message_key

log = logging.getLogger(__name__)


@dataclass
class _Txn:
    outstanding: int = 0  # changes produced, not yet confirmed
    position: Position | None = None  # its end position, once its commit marker came


def producer_config(bootstrap: str, buffer_bytes: int) -> dict[str, object]:
    return {
        "bootstrap.servers": bootstrap,
        "client.id": "flusso-capture",
        "enable.idempotence": True,  # no duplicates or reordering from the producer's own retries
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 5,
        "partitioner": "murmur2_random",  # as Java's clients: one key, one partition, whoever produces
        "queue.buffering.max.kbytes": max(1, buffer_bytes // 1024),
        "queue.buffering.max.messages": 1_000_000,
        "message.timeout.ms": 0,  # never give up on a change: the capture waits instead
        "reconnect.backoff.max.ms": 2000,
    }


class ChangeProducer:
    """`put` each change of the stream, in order; `confirmed` is the position the slot may be acked to."""

    def __init__(self, bootstrap: str, topic: str, key_columns: Mapping[str, Sequence[str]],
                 buffer_bytes: int, stop: threading.Event, poll: float = 0.1) -> None:
        self.topic = topic
        self._keys = key_columns
        self._stop = stop
        self._poll = poll
        self._producer = Producer(producer_config(bootstrap, buffer_bytes), logger=client_logger("producer"))
        self._lock = threading.Lock()  # delivery reports run on whichever thread polls
        self._open = _Txn()
        self._closed: deque[_Txn] = deque()
        self._confirmed: Position = 0
        self.error: QueueError | None = None
        self.produced = 0

    def put(self, change: Change) -> bool:
        """Produce one change (or close its transaction); waits while the buffer is full, False once stopped."""
        self._raise()
        if change.is_commit:
            with self._lock:
                self._open.position = change.position
                self._closed.append(self._open)
                self._open = _Txn()
                self._advance()
            self._producer.poll(0)
            return True
        txn = self._open
        value, key = encode(change), message_key(change, self._keys)
        table, position = change.table, change.position  # not the change: the callback outlives it

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            with self._lock:
                if err is not None:
                    if self.error is None:
                        self.error = QueueError(f"Kafka refused a change of {table} at "
                                                f"{position} for topic {self.topic}: {err.str()}; "
                                                "nothing after the last confirmed transaction was acknowledged")
                    return
                txn.outstanding -= 1
                self._advance()

        with self._lock:
            txn.outstanding += 1
        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key, on_delivery=delivered)
                break
            except KafkaException as err:  # refused before it was queued: too large, most likely
                with self._lock:  # its transaction stays open: nothing from here on counts as held
                    self.error = QueueError(
                        f"Kafka refused a change of {table} at {position} ({len(value)} bytes) for topic "
                        f"{self.topic}: {err.args[0].str()}; if it is too large, raise the topic's "
                        "max.message.bytes and the broker's message.max.bytes; nothing after the last "
                        "confirmed transaction was acknowledged")
                raise self.error from err
            except BufferError:  # producer_buffer bytes unconfirmed: wait for Kafka (back-pressure)
                if self._stop.is_set():
                    with self._lock:
                        txn.outstanding -= 1  # never produced; its transaction will never close anyway
                    return False
                self._producer.poll(self._poll)
                self._raise()
        self.produced += 1
        self._producer.poll(0)
        return True

    def _advance(self) -> None:
        """Under the lock: move `confirmed` past every leading closed transaction with nothing outstanding."""
        while self._closed and self._closed[0].outstanding == 0 and self.error is None:
            done = self._closed.popleft()
            assert done.position is not None
            self._confirmed = max(self._confirmed, done.position)

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def confirmed(self) -> Position:
        """The end position of the last transaction that Kafka holds whole, with every one before it."""
        self._producer.poll(0)
        self._raise()
        with self._lock:
            return self._confirmed

    def flush(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for the outstanding changes; how many are still outstanding."""
        return self._producer.flush(timeout)
