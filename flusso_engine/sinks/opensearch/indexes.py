"""The indexes themselves: created (never claiming to be seeded), recreated, refreshed, counted.

Deletes are versioned like every write, but OpenSearch keeps a delete's tombstone (and so its
version) only for `index.gc_deletes`, 60 s by default: an older write of the same id arriving
later, a flush still being retried, would bring the document back. So the indexes flusso creates
carry a `gc_deletes` above the longest a write can take from its build to its last retry
(`gc_deletes_s`: every attempt running into `sink.timeout_s`, every backoff of
`failures.flush_error` between them, the wait behind an older flush in flight, and a minute of
margin), unless the index's `settings` set one.
"""

from __future__ import annotations

import math
import re
from typing import Any

from opensearchpy.exceptions import NotFoundError

from ...config import SinkConfig
from ...error import SinkError
from ...policy import FailurePolicies
from ..marker import unseeded_mapping
from .bulk import reason_of
from .client import Requests


def retry_window_s(policies: FailurePolicies, timeout_s: float) -> float:
    """The longest one flush can take: every attempt running into the request timeout, with every
    backoff wait (at its cap, before jitter) between them."""
    waits = sum(min(policies.max_backoff_s, policies.backoff_s * 2 ** min(n - 1, 62))
                for n in range(1, policies.retries + 1))
    return (policies.retries + 1) * timeout_s + waits


def gc_deletes_s(policies: FailurePolicies, timeout_s: float) -> int:
    """The `index.gc_deletes` (seconds) that outlives any write flusso may still send.

    A write waits behind at most one older flush in flight before it is sent (one window), then
    takes its own window; a minute on top covers the build before it. Never below OpenSearch's
    default of 60 s.
    """
    return max(60, math.ceil(2 * retry_window_s(policies, timeout_s) + 60))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(nanos|micros|ms|s|m|h|d)?\s*$")
_UNIT_S = {"nanos": 1e-9, "micros": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _seconds(value: Any) -> float | None:
    """An OpenSearch time value (`60s`, `5m`, a bare number of milliseconds) in seconds, or None."""
    m = _DURATION.match(str(value))
    if m is None:
        return None
    return float(m.group(1)) * (_UNIT_S[m.group(2)] if m.group(2) else 1e-3)


def _setting(settings: dict, name: str) -> Any:
    """An index setting however it is written: `name`, `index.name` or `{index: {name: ...}}`."""
    nested = settings.get("index")
    for value in (settings.get(name), settings.get(f"index.{name}"),
                  nested.get(name) if isinstance(nested, dict) else None):
        if value is not None:
            return value
    return None


class Indexes(Requests):
    """The sink's part that creates, recreates, refreshes and counts indexes."""

    config: SinkConfig

    def ensure_index(self, index: str, mapping: dict) -> None:
        """Create the index if it is missing; an existing index is left exactly as it is.

        A changed definition is not handled here: `is_seeded` reads false for it and the engine
        calls `recreate`. The created index never claims to be seeded, whatever `mapping` holds.
        """
        if self._call(f"checking index {index}", self.client.indices.exists, index=index):
            return
        self._create(index, mapping)

    def _create(self, index: str, mapping: dict) -> bool:
        """Create the index unseeded; False if it exists already (someone else created it).

        It gets the `gc_deletes` that outlives flusso's retries unless `mapping`'s settings set one
        (see the module's docstring)."""
        body = unseeded_mapping(mapping)
        settings = body.setdefault("settings", {})
        needed = gc_deletes_s(self.policies, self.config.timeout_s)
        given = _setting(settings, "gc_deletes")
        if given is None:
            settings["index.gc_deletes"] = f"{needed}s"
        elif (seconds := _seconds(given)) is not None and seconds < needed:
            self._log.warning(
                "index %s is created with gc_deletes %s from its settings, below the %ss a retried write "
                "can take: a document deleted while a write of it is retried could come back; raise it "
                "or remove it from the settings", index, given, needed)
        reply = self._call(f"creating index {index}", self.client.indices.create, index=index, body=body,
                           ignore=400)
        error = reply.get("error") if isinstance(reply, dict) else None
        raced = isinstance(error, dict) and error.get("type") == "resource_already_exists_exception"
        if error and not raced:
            raise SinkError(f"creating index {index} at {self.where} failed: {self._scrub(reason_of(error))}")
        return not raced

    def recreate(self, index: str, mapping: dict) -> None:
        """Drop the index and create it empty, unseeded, with `mapping`.

        Another writer (a live run beside a forced reseed) can auto-create the index, with guessed
        types, between the delete and the create: then it is dropped again until the create is ours.
        """
        for _ in range(10):
            self._call(f"deleting index {index}", self.client.indices.delete, index=index, ignore=404)
            if self._create(index, mapping):
                return
        raise SinkError(f"index {index} at {self.where} kept being created by another writer while it was "
                        "recreated: stop the other writer and try again")

    def refresh(self, index: str) -> None:
        self._call(f"refreshing index {index}", self.client.indices.refresh, index=index)

    def count(self, index: str) -> int:
        """Documents searchable in the index now (0 if it is missing); see `refresh`."""
        try:
            reply = self._call(f"counting index {index}", self.client.count, index=index)
        except NotFoundError:
            return 0
        return int(reply["count"])
