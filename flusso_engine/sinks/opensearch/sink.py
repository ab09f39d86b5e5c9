"""The OpenSearch sink: one bulk round trip per flush, versioned writes, and the seeded marker.

Every write carries the WAL position of the snapshot its document was built from as an external
version (`version_type=external_gte`), so a document built from an older snapshot never replaces
one built from a newer one, whoever writes it (DESIGN §4). A refused older write is a *conflict*,
not an error. Deletes are versioned the same way, and outlive the longest retry (`indexes.py`).

`OpenSearchSink` is one class composed of its parts, each in its own module:

| module | part |
| --- | --- |
| `client.py` | the client's arguments and pool, retries of every request, no password in any message |
| `bulk.py` | encoding, chunks by size, the bulk round trips, each item's outcome (`index_errors.py`) |
| `indexes.py` | creating (with `gc_deletes`), recreating, refreshing, counting indexes |
| `marker.py` | the seeded marker in the index's `_meta` (its layout: `flusso_engine/sinks/marker.py`) |
| `deadletters.py` | the rejection policy, and dead letters: their index, listing, removal |
| `state.py` | flusso's state documents, with compare-and-set |
| `aliases.py` | generations `<alias>__g<N>` behind the alias: build settings, the atomic swap |
| `pipelines.py` | the ingest pipelines indexes name (`pipeline:`): put from the config, or looked up |
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable

from opensearchpy import OpenSearch

from ...changes import DocId
from ...config import SinkConfig
from ...error import Refused
from ...policy import FailurePolicies
from ...redact import redact_url
from .. import FlushReport, PendingWrite, WriteBuffer
from .aliases import Aliases
from .bulk import encode_writes
from .client import client_kwargs, secrets_of
from .deadletters import DeadLetters
from .marker import Markers
from .pipelines import Pipelines
from .refusals import preflight
from .state import StateDocuments


class OpenSearchSink(Aliases, Markers, DeadLetters, StateDocuments, Pipelines):
    """The Sink of DESIGN §2 for OpenSearch.

    `is_seeded(index, expected)` compares the stored marker with `expected` (definition hash, slot,
    system identifier). `count` does not refresh: call `refresh` first when the count must include
    the latest writes.
    """

    def __init__(
        self,
        config: SinkConfig,
        policies: FailurePolicies,
        stop: threading.Event | None = None,
        logger: logging.Logger | None = None,
        client: OpenSearch | None = None,
        connections: int = 1,
    ) -> None:
        self.config = config
        self.policies = policies
        self.client = client if client is not None else OpenSearch(**client_kwargs(config, connections))
        self.where = ", ".join(redact_url(h) for h in config.hosts)
        self._stop = stop or threading.Event()
        self._log = logger or logging.getLogger(__package__)  # flusso_engine.sinks.opensearch
        self._secrets = secrets_of(config)
        self._buffer = WriteBuffer()
        self._dead_letter_indexes = set()
        self._dead_letter_lock = threading.Lock()
        self._state_ready = False
        # physical indexes whose flushes wait until their documents are searchable (`refresh: wait_for`,
        # set by the engine for the serving generations only: one built with refresh_interval -1
        # would make a waiting request hang)
        self.refresh_waits: frozenset[str] = frozenset()
        if not config.verify_certs and any(h.startswith("https") for h in config.hosts):
            self._log.warning(
                "sink.verify_certs is false: the certificate of %s is NOT checked, so anyone on the path can "
                "read and change what flusso sends, credentials included. Set verify_certs: true and "
                "ca_certs to the CA that signed the cluster's certificate", self.where)

    def preflight(self) -> None:
        """Refuse now, before anything runs, if OpenSearch refuses flusso's certificate check, credentials
        or first request (`refusals.preflight`); raises `Refused` (exit 1)."""
        refused = preflight(self.client, self.config)
        if refused is not None:
            cause, fix = refused
            raise Refused(f"OpenSearch at {self.where} refused flusso: {self._scrub(cause)}. Fix: {fix}")

    def close(self) -> None:
        self.client.close()

    def write(self, index: str, doc_id: DocId, doc: dict | str | None, version: int,
              routing: str | None = None) -> None:
        """Buffer an index (or, for None, a delete) of `doc_id` at `version`, under `routing` when the
        index routes its documents; nothing is sent."""
        self._buffer.add(index, doc_id, doc, version, routing)

    def flush(self) -> FlushReport:
        """Send the buffer (one bulk request unless it exceeds `max_bulk_bytes`); clear it on success.

        Under `fail` a rejection raises `RejectedItem` once the rest is sent; the buffer is kept, as
        after any error, since the caller acknowledges nothing.
        """
        report = self._flush_writes(self._buffer.writes())
        self._buffer.clear()
        return report

    def detach(self) -> Callable[[], FlushReport]:
        """Hand the buffer over and start a fresh one: the returned call sends it, like `flush`, and
        may run on another thread while new writes fill the fresh buffer (the client is thread-safe).

        Two detached buffers may hold the same document at different versions; the versions decide
        which one OpenSearch keeps, whichever request arrives first.
        """
        writes = self._buffer.writes()
        self._buffer.clear()
        return functools.partial(self._flush_writes, writes)

    def _flush_writes(self, writes: list[PendingWrite]) -> FlushReport:
        started = time.monotonic()
        report = FlushReport()
        if not writes:
            return report
        retries = self._retries()
        actions, too_long, report.deleted = encode_writes(writes)
        waits = self.refresh_waits
        waiting = [a for a in actions if a.write.index in waits] if waits else []
        outcome = self._send([a for a in actions if a.write.index not in waits] if waiting else actions,
                             report, retries)
        if waiting:  # sent apart: only these requests wait for the refresh
            more = self._send(waiting, report, retries, wait_for=True)
            outcome.written += more.written
            outcome.deleted += more.deleted
            outcome.conflicts += more.conflicts
            outcome.rejected += more.rejected
        report.written, report.conflicts = outcome.written, outcome.conflicts
        report.deleted += outcome.deleted
        if too_long or outcome.rejected:
            self._reject(too_long + outcome.rejected, report, retries)
        report.seconds = time.monotonic() - started
        return report
