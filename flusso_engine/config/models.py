"""The whole of flusso.yaml (`FlussoConfig`) and its small sections: slot, batch, queue, failures.

`source:`, `sink:` and `indexes:` have modules of their own; this one puts them together and holds
the rules that read more than one section (an index named like another index's dead letters).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from .base import Strict, report
from .indexes import IndexConfig, IndexName
from .messages import suggest
from .names import DEAD_LETTER_SUFFIX, qualify, walk_relations
from .sink import SinkConfig
from .source import SourceConfig

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 0, "kb": 1, "kib": 1, "mb": 2, "mib": 2, "gb": 3, "gib": 3, "tb": 4, "tib": 4}


def parse_size(value: Any) -> int:
    """A size in bytes from a number of bytes or a text like "1GB", "512 MB" (PostgreSQL's units: 1GB = 1024^3)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size, got {value!r}: write e.g. 1GB, 512MB or a number of bytes")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float) and value.is_integer():
        size = int(value)
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(float(m.group(1)) * 1024 ** _SIZE_UNITS[(m.group(2) or "b").lower()])
    else:
        shown = f'"{value}"' if isinstance(value, str) else repr(value)
        raise ValueError(f"{shown[:40]} is not a size: write e.g. 1GB, 512MB or a number of bytes")
    if size < 0:
        raise ValueError(f"{value!r} is negative: give a size of at least 0, e.g. 1GB")
    return size


class SlotConfig(Strict):
    """How `flusso status`, `validate` and the Dagster slot check judge the slot's health."""

    # an inactive slot holding more WAL than this (bytes, or "1GB") needs attention
    warn_lag: int = 1024**3

    @field_validator("warn_lag", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)


class BatchConfig(Strict):
    max_changes: int = Field(1000, gt=0)
    max_delay_ms: int = Field(200, ge=0)
    # bulk requests sent in the background while the next chunk is built; 0 flushes in line
    flushes_in_flight: int = Field(2, ge=0, le=8)
    # a backfill builds its key ranges on this many connections at once, from one shared snapshot
    backfill_connections: int = Field(2, ge=1, le=16)


_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")  # Kafka's legal topic names
_KAFKA_ONLY = ("bootstrap", "topic", "partitions", "group", "producer_buffer", "fetch_max", "workers")


class QueueConfig(Strict):
    """Between capture and the workers: `channel` (in-process, bounded by `capacity` changes) or
    `kafka` (a durable topic: `bootstrap`, `topic`, `partitions`; queue/kafka/). Backfills always
    use a channel of `capacity`: a snapshot has no position to resume from."""

    type: str = "channel"  # a backend folder below queue/ (or one registered): see registry.py
    capacity: int = Field(20000, gt=0)
    # kafka: the brokers (host:port, comma-separated), the topic (created with `partitions` if missing)
    bootstrap: str | None = None
    topic: str | None = None
    partitions: int = Field(6, gt=0, le=10000)
    group: str | None = None  # the workers' consumer group; default flusso-<topic>
    # kafka: bytes the producer may hold unconfirmed (capture waits beyond), and the consumer may fetch ahead
    producer_buffer: int = 64 * 1024**2
    fetch_max: int = 16 * 1024**2
    # kafka: how many worker roles Dagster's live_capture keeps running beside the capture role
    # (`flusso run --role worker` is started by hand and ignores it); more than `partitions` idle
    workers: int = Field(1, gt=0, le=256)

    @field_validator("type")
    @classmethod
    def _backend(cls, v: str) -> str:
        """One of the queue backends there are (`queue/<name>/`, or registered)."""
        from ..registry import available  # the registry reads the config's types: imported when used

        choices = available("queue")
        if v not in choices:
            raise ValueError(f'"{v}" is not one of {", ".join(choices)}{suggest(v, choices)}: use one of them')
        return v

    @field_validator("producer_buffer", "fetch_max", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        size = parse_size(v)
        if size < 1024**2:
            raise ValueError(f"{v!r} is below 1MB: give at least 1MB, e.g. 64MB")
        return size

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str | None) -> str | None:
        if v is not None and not _TOPIC.match(v):
            fixed = re.sub(r"[^A-Za-z0-9._-]", "_", v)[:249] or "flusso"
            raise ValueError(f'"{v[:60]}" is not a Kafka topic name (letters, digits, ".", "_", "-", at most 249): '
                             f'use e.g. "{fixed}"')
        return v

    @field_validator("bootstrap")
    @classmethod
    def _bootstrap(cls, v: str | None) -> str | None:
        if v is None:
            return v
        hosts = [h.strip() for h in v.split(",")]
        bad = [h for h in hosts if not re.match(r"^[^\s:/]+:\d{1,5}$", h)]
        if bad or not hosts:
            raise ValueError(f'"{v[:60]}" is not a list of brokers: write host:port, e.g. 127.0.0.1:9092 '
                             "(several separated by commas)")
        return ",".join(hosts)

    @model_validator(mode="after")
    def _kafka_settings_for_kafka(self) -> QueueConfig:
        """kafka needs its brokers and topic; a channel given kafka's settings is a mistake to say."""
        if self.type == "kafka":
            report(((name,), f"is required with type: kafka, e.g. {name}: {example}")
                   for name, example in (("bootstrap", "127.0.0.1:9092"), ("topic", "flusso_changes"))
                   if getattr(self, name) is None)
        elif self.type == "channel":
            report(((name,), f"is a setting of type: kafka, not of {self.type}: remove it or set type: kafka")
                   for name in _KAFKA_ONLY if name in self.model_fields_set)
        return self

    @property
    def consumer_group(self) -> str:
        return self.group or f"flusso-{self.topic}"


class FlushErrorConfig(Strict):
    retries: int = Field(5, ge=0)
    backoff_ms: int = Field(200, ge=0)
    max_backoff_ms: int = Field(10000, ge=0)

    @model_validator(mode="after")
    def _backoff_within_its_maximum(self) -> FlushErrorConfig:
        """Checked when the file gives both: a default on one side is not the user's mistake."""
        given = {"backoff_ms", "max_backoff_ms"} <= self.model_fields_set
        if given and self.max_backoff_ms < self.backoff_ms:
            report([(("max_backoff_ms",), f"is below backoff_ms ({self.backoff_ms}): raise it or lower that")])
        return self


class FailuresConfig(Strict):
    item_rejection: Literal["fail", "skip", "dead_letter"] = "dead_letter"
    # what stays in the index when a document is rejected: none (its previous version is deleted, so
    # search never shows a document that no longer matches its rows) or the previous version
    item_rejection_keeps: Literal["none", "previous"] = "none"
    flush_error: FlushErrorConfig = Field(default_factory=FlushErrorConfig)


class IndexLifecycleConfig(Strict):
    """How reseeds replace an index's generation (`rebuild.py`)."""

    # keep the replaced generation (unsearched, for inspection) until the next swap
    keep_previous: bool = True
    # how long a rebuild waits for the running live capture to confirm it writes the new generation
    handshake_timeout_s: float = Field(60.0, gt=0)


class FlussoConfig(Strict):
    source: SourceConfig
    sink: SinkConfig
    slot: SlotConfig = Field(default_factory=SlotConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    failures: FailuresConfig = Field(default_factory=FailuresConfig)
    index_lifecycle: IndexLifecycleConfig = Field(default_factory=IndexLifecycleConfig)
    indexes: dict[IndexName, IndexConfig]

    @field_validator("indexes")
    @classmethod
    def _some_and_apart_from_dead_letters(
        cls, v: dict[str, IndexConfig], info: ValidationInfo
    ) -> dict[str, IndexConfig]:
        """At least one index, and none named like another's dead-letter index while those are on."""
        if not v:
            raise ValueError("no index defined: add at least one, with table, key and fields")
        failures = info.data.get("failures")  # absent when invalid: that is reported on its own
        if failures is not None and failures.item_rejection == "dead_letter":
            report(
                ((name,), f"is the dead-letter index of {name[: -len(DEAD_LETTER_SUFFIX)]}: rename it")
                for name in v
                if name.endswith(DEAD_LETTER_SUFFIX) and name[: -len(DEAD_LETTER_SUFFIX)] in v
            )
        return v

    def tables(self) -> list[str]:
        """Every table and view on every index's relation tree, and the views' base tables
        (`depends_on`), qualified, in first-seen order: what the catalog describes."""
        seen: dict[str, None] = {}
        for index in self.indexes.values():
            seen[qualify(index.table)] = None
            seen.update(dict.fromkeys(qualify(d.table) for d in index.depends_on))
            for _, rel in walk_relations(index.relations):
                if rel.through is not None:
                    seen[qualify(rel.through.table)] = None
                seen[qualify(rel.table)] = None
                seen.update(dict.fromkeys(qualify(d.table) for d in rel.depends_on))
        return list(seen)

    def views(self) -> set[str]:
        """The tables read as views: those with `depends_on` (validation checks they are views)."""
        out = {qualify(i.table) for i in self.indexes.values() if i.depends_on}
        for index in self.indexes.values():
            out.update(qualify(r.table) for _, r in walk_relations(index.relations) if r.depends_on)
        return out

    def captured_tables(self) -> list[str]:
        """The tables whose changes capture reads: `tables()` without the views, whose base tables
        are captured instead."""
        views = self.views()
        return [t for t in self.tables() if t not in views]
