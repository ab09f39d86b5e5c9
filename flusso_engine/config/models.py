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


class QueueConfig(Strict):
    type: Literal["channel"] = "channel"
    capacity: int = Field(20000, gt=0)


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
        """Every table on every index's relation tree, qualified, in first-seen order."""
        seen: dict[str, None] = {}
        for index in self.indexes.values():
            seen[qualify(index.table)] = None
            for _, rel in walk_relations(index.relations):
                if rel.through is not None:
                    seen[qualify(rel.through.table)] = None
                seen[qualify(rel.table)] = None
        return list(seen)
