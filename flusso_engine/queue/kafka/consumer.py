"""The workers' side of the Kafka queue: one consumer group, offsets committed only after the flush.

`get_batch` returns the changes of one batch and remembers, per partition, the offset after its
last message; `batch_done` (called by `drive` once the batch and every earlier one are flushed)
commits the oldest remembered batch's offsets, synchronously. So a committed offset never passes a
change whose documents are not in the sink, and a worker killed or hung (its session or poll
interval expires) leaves its uncommitted changes to whoever gets its partitions: they are delivered
again, and documents are rebuilt from current rows, so that is harmless.

After a rebalance, a batch's offsets are committed only for partitions still assigned here: another
worker owns the rest now, and a late commit of ours must not move its offset (it would only cause
redelivery, but it is someone else's). Fetching is bounded in bytes (`queue.fetch_max`).

A `truncate` read here becomes a `resync` (a rebuild from current rows): with several partitions,
later changes of the truncated table may have been handled already, by this worker or another, so
the truncate's shortcut (an empty generation) could drop them; a rebuild cannot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from ...changes import Change
from ...error import QueueError
from .clientlog import client_logger
from .codec import FormatError, decode

log = logging.getLogger(__name__)

_REBALANCED = {KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS,
               KafkaError._NO_OFFSET, KafkaError.FENCED_MEMBER_EPOCH, KafkaError.STALE_MEMBER_EPOCH,
               KafkaError._ASSIGNMENT_LOST}
# what no reconnect mends: the topic gone, or the group or topic not ours to read
_FATAL = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError.TOPIC_AUTHORIZATION_FAILED,
          KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError._UNKNOWN_PARTITION}


def consumer_config(bootstrap: str, group: str, fetch_bytes: int) -> dict[str, object]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": "flusso-worker",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",  # a new group starts at the topic's beginning: nothing skipped
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 10000,  # a killed worker's partitions move within ~10 s
        "fetch.max.bytes": fetch_bytes,
        "max.partition.fetch.bytes": min(fetch_bytes, 1024**2),
        "queued.max.messages.kbytes": max(1, fetch_bytes // 1024),
        "reconnect.backoff.max.ms": 2000,
    }


class ChangeConsumer:
    def __init__(self, bootstrap: str, topic: str, group: str, fetch_bytes: int, stop: threading.Event,
                 poll: float = 0.1) -> None:
        self.topic = topic
        self.group = group
        self._stop = stop
        self._poll = poll
        self._assigned: set[int] = set()
        self._pending: deque[dict[int, int]] = deque()  # per handed-out batch: partition -> next offset
        self._consumer = Consumer(consumer_config(bootstrap, group, fetch_bytes), logger=client_logger("consumer"))
        self._consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_revoke)
        self.consumed = 0

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned |= {p.partition for p in partitions}
        if partitions:  # a cooperative rebalance also hands out empty increments
            log.info("kafka: partitions %s of %s assigned", sorted(p.partition for p in partitions), self.topic)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned -= {p.partition for p in partitions}
        if partitions:
            log.info("kafka: partitions %s of %s revoked", sorted(p.partition for p in partitions), self.topic)

    def get_batch(self, max_items: int, max_delay: float, timeout: float | None = None) -> list[Change]:
        """Up to `max_items` changes: returns when that many came, or `max_delay` after the first;
        [] after `timeout` with nothing, or at once once stopped (what is left stays in Kafka)."""
        give_up = None if timeout is None else time.monotonic() + timeout
        messages: list[Message] = []
        first = 0.0
        while len(messages) < max_items and not self._stop.is_set():
            now = time.monotonic()
            if not messages:
                if give_up is not None and now >= give_up:
                    break
                wait = self._poll if give_up is None else min(self._poll, give_up - now)
            else:
                wait = first + max_delay - now
                if wait <= 0:
                    break
            for msg in self._consumer.consume(max_items - len(messages), timeout=min(wait, self._poll)):
                err = msg.error()
                if err is None:
                    if not messages:
                        first = time.monotonic()
                    messages.append(msg)
                elif err.code() != KafkaError._PARTITION_EOF:
                    if err.fatal() or err.code() in _FATAL:
                        raise QueueError(f"Kafka topic {self.topic}: {err.str()}; nothing unflushed was committed")
                    log.warning("kafka: %s (the client reconnects by itself)", err.str())
        if not messages:
            return []
        offsets: dict[int, int] = {}
        batch = []
        for msg in messages:
            try:
                change = decode(msg.value())
            except FormatError as err:
                raise QueueError(f"message {msg.partition()}:{msg.offset()} of Kafka topic {self.topic} is not a "
                                 f"flusso change: {err}") from err
            if change.op == "truncate":
                change = Change(change.table, "resync", position=change.position, xid=change.xid)
            batch.append(change)
            offsets[msg.partition()] = max(offsets.get(msg.partition(), 0), msg.offset() + 1)
        self._pending.append(offsets)
        self.consumed += len(batch)
        return batch

    def batch_done(self, reads: int = 1) -> None:
        """The oldest batch handed out is flushed (with every earlier one): commit the offsets of the
        `reads` oldest `get_batch` calls, which gathered it (group commit joins several)."""
        offsets: dict[int, int] = {}
        for _ in range(min(reads, len(self._pending))):
            for partition, offset in self._pending.popleft().items():
                offsets[partition] = max(offsets.get(partition, 0), offset)
        if not offsets:
            return
        mine = [TopicPartition(self.topic, p, o) for p, o in sorted(offsets.items()) if p in self._assigned]
        if not mine:
            return
        pause = 0.2
        while True:
            try:
                self._consumer.commit(offsets=mine, asynchronous=False)
                return
            except KafkaException as err:
                kerr = err.args[0] if err.args else None
                code = kerr.code() if isinstance(kerr, KafkaError) else None
                if code in _REBALANCED:
                    # a rebalance took them: whoever has them now gets those changes again (harmless)
                    log.warning("kafka: offsets %s not committed (%s): they will be delivered again",
                                {t.partition: t.offset for t in mine}, kerr.str())
                    return
                if not isinstance(kerr, KafkaError) or kerr.fatal() or code in _FATAL:
                    raise QueueError(f"Kafka refused the offsets of group {self.group} on {self.topic}: "
                                     f"{err}") from err
                if self._stop.is_set():  # stopping while Kafka is away: they are delivered again later
                    log.warning("kafka: offsets %s not committed while stopping (%s)",
                                {t.partition: t.offset for t in mine}, kerr.str())
                    return
                log.warning("kafka: committing offsets failed (%s); again in %.1fs", kerr.str(), pause)
                self._stop.wait(pause)
                pause = min(pause * 2, 5.0)

    def member_id(self) -> str | None:
        """This worker's member id in the group (None until it joined): its heartbeat's name."""
        try:
            return self._consumer.memberid() or None
        except RuntimeError:  # closed
            return None

    def empty(self) -> bool:
        """Nothing handed out is waiting to be committed? Once stopped, what Kafka holds stays there."""
        return self._stop.is_set() or not self._pending

    def close(self) -> None:
        try:
            self._consumer.close()  # leaves the group at once: its partitions move now, not after a timeout
        except (KafkaException, RuntimeError) as err:
            log.debug("kafka: closing the consumer: %s", err)
