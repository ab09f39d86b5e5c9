"""The OpenSearch sink: one bulk round trip per flush, versioned writes, and the seeded marker.

Every write carries the WAL position of the snapshot its document was built from as an external
version (`version_type=external_gte`), so a document built from an older snapshot never replaces
one built from a newer one, whoever writes it (DESIGN §4). A refused older write is a *conflict*,
not an error. Deletes are versioned the same way; OpenSearch keeps their tombstone for
`index.gc_deletes` (60 s by default), after which an older write of the same id would be accepted
again: an accepted limit, since only a writer holding a snapshot older than that could send one.

The index's `_meta.flusso` holds flusso's state:

```json
{"definition_hash": "<the definition the index was created with>",
 "seeded": {"definition_hash": "...", "slot": "...", "system_identifier": "...", "position": 123}}
```

`seeded` is written only by `mark_seeded`; OpenSearch replaces `_meta` whole on a mapping update,
so every change reads `_meta`, changes `flusso` and writes all of it back, keeping other keys.

Failures: a round trip that fails as a whole (connection refused, timeout, 429, 5xx) and items
refused with 429/5xx are retried with capped exponential backoff; every failed round trip of one
flush spends one retry of `FailurePolicies.retries`, then `SinkError` is raised. An item refused for
what it is (mapping conflict, too large) is a rejection, handled by `FailurePolicies.item_rejection`.
No message or log line carries a password: hosts are shown without their userinfo.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as TransportConnectionError
from opensearchpy.exceptions import NotFoundError, TransportError

from ..changes import DocId
from ..config import SinkConfig
from ..error import RejectedItem, SinkError
from ..policy import FailurePolicies
from . import FlushReport, PendingWrite, Rejection, SeedMarker, WriteBuffer

DEAD_LETTER_SUFFIX = "-deadletter"

DEAD_LETTER_MAPPING: dict = {
    "settings": {"number_of_shards": 1},
    "mappings": {
        "dynamic": False,
        "properties": {
            "index": {"type": "keyword"},
            "doc_id": {"type": "keyword"},
            "reason": {"type": "text"},
            # kept, never indexed: a dead letter cannot be refused again for what made it one
            "document": {"type": "object", "enabled": False},
            "failed_at": {"type": "date"},
        },
    },
}

STATE_MAPPING: dict = {
    "settings": {"number_of_shards": 1, "auto_expand_replicas": "0-1"},
    "mappings": {
        "dynamic": False,
        "properties": {
            "slot": {"type": "keyword"},
            "system_identifier": {"type": "keyword"},
            "incarnation": {"type": "keyword"},
            "timeline": {"type": "long"},
            "confirmed_bound": {"type": "long"},
            "version_bound": {"type": "long"},
            "updated_at": {"type": "date"},
        },
    },
}

# what flush reads of a bulk response: the rest (ids, shards, seq_no) is parsed for nothing
_BULK_FILTER = "errors,items.*.status,items.*.error"


def redact_url(url: str) -> str:
    """A host URL fit for a message: its userinfo (user and password) replaced by `***`."""
    parts = urlsplit(url if "://" in url else f"//{url}")
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc)).removeprefix("//")


def client_kwargs(config: SinkConfig) -> dict[str, Any]:
    """The `OpenSearch(...)` arguments for a sink config.

    The transport's own retries are off (`max_retries=0`): `FailurePolicies` alone decides how often
    and how patiently a request is retried, with backoff, and interruptibly.
    """
    kwargs: dict[str, Any] = {
        "hosts": list(config.hosts),
        "use_ssl": any(urlsplit(h).scheme == "https" for h in config.hosts),
        "verify_certs": config.verify_certs,
        "ssl_show_warn": config.verify_certs,
        "timeout": config.timeout_s,
        "max_retries": 0,
        "retry_on_timeout": False,
    }
    if config.ca_certs:
        kwargs["ca_certs"] = config.ca_certs
    if config.username:
        password = config.password.get_secret_value() if config.password else ""
        kwargs["http_auth"] = (config.username, password)
    return kwargs


@dataclass(slots=True)
class _Action:
    """A write encoded once for the bulk body: `body` is its action line and source line."""

    write: PendingWrite
    body: bytes


def _line(value: Any) -> str:
    """One NDJSON line; a str is JSON text already (a raw document from the builder)."""
    if isinstance(value, str):
        return value + "\n"
    return json.dumps(value, separators=(",", ":")) + "\n"


def _encode(write: PendingWrite) -> _Action:
    meta = {"_index": write.index, "_id": write.doc_id, "version": write.version,
            "version_type": "external_gte"}
    if write.doc is None:
        return _Action(write, _line({"delete": meta}).encode())
    return _Action(write, (_line({"index": meta}) + _line(write.doc)).encode())


def _encode_dead_letter(write: PendingWrite, reason: str, failed_at: str) -> _Action:
    index = write.index + DEAD_LETTER_SUFFIX
    doc = json.loads(write.doc) if isinstance(write.doc, str) else write.doc
    letter = {"index": write.index, "doc_id": write.doc_id, "reason": reason, "document": doc,
              "failed_at": failed_at}
    body = _line({"index": {"_index": index, "_id": write.doc_id}}) + _line(letter)
    return _Action(PendingWrite(index, write.doc_id, letter, 0), body.encode())


def _chunks(actions: Sequence[_Action], max_bytes: int) -> Iterator[list[_Action]]:
    """Consecutive runs of actions whose bodies add up to at most `max_bytes` (an oversized one alone)."""
    chunk: list[_Action] = []
    size = 0
    for action in actions:
        n = len(action.body)
        if chunk and size + n > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(action)
        size += n
    if chunk:
        yield chunk


def _reason(error: Any) -> str:
    """`type: reason (caused by type: reason)` from a bulk item's error object."""
    if not isinstance(error, dict):
        return str(error)
    text = f"{error.get('type', 'error')}: {error.get('reason', '')}"
    cause = error.get("caused_by")
    if isinstance(cause, dict):
        text += f" (caused by {cause.get('type', 'error')}: {cause.get('reason', '')})"
    return text


def _describe(err: TransportError) -> str:
    """A failed request in a line: the network's own words for a connection error or a timeout, else
    the server's."""
    if isinstance(err, TransportConnectionError):
        return str(err.info)
    return str(err)


def _retryable(status: Any) -> bool:
    return isinstance(status, int) and (status == 429 or status >= 500)


@dataclass
class _Outcome:
    written: int = 0
    deleted: int = 0
    conflicts: int = 0
    rejected: list[tuple[PendingWrite, str]] = field(default_factory=list)


class _Retries:
    """One operation's retry budget: every failed round trip spends one, with a backoff wait first."""

    def __init__(self, policies: FailurePolicies, stop: threading.Event, where: str, log: logging.Logger,
                 scrub: Callable[[str], str]) -> None:
        self.policies = policies
        self.stop = stop
        self.where = where
        self.log = log
        self.scrub = scrub
        self.failures = 0

    def wait(self, what: str, error: str) -> None:
        """Wait before the next retry of `what`, or raise `SinkError` when the budget or the run is over."""
        error = self.scrub(error)
        self.failures += 1
        retries = self.policies.retries
        if self.failures > retries:
            raise SinkError(
                f"{what} at {self.where} failed after {self.failures} attempts (1 + {retries} retries); "
                f"last error: {error}. Nothing was acknowledged past the last good flush: check that "
                "OpenSearch is up and reachable, then start again."
            )
        delay = self.policies.backoff(self.failures)
        self.log.warning("%s at %s failed (%s); retry %d of %d in %.2fs",
                         what, self.where, error, self.failures, retries, delay)
        if self.stop.wait(delay):
            raise SinkError(
                f"{what} at {self.where} failed ({error}) and the run was stopped before retry "
                f"{self.failures} of {retries}; nothing past the last good flush was acknowledged."
            )


class OpenSearchSink:
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
    ) -> None:
        self.config = config
        self.policies = policies
        self.client = client if client is not None else OpenSearch(**client_kwargs(config))
        self.where = ", ".join(redact_url(h) for h in config.hosts)
        self._stop = stop or threading.Event()
        self._log = logger or logging.getLogger("flusso.sink.opensearch")
        self._secrets: set[str] = {pw for h in config.hosts if (pw := urlsplit(h).password)}
        if config.password:
            self._secrets.add(config.password.get_secret_value())
        self._buffer = WriteBuffer()
        self._dead_letter_indexes: set[str] = set()
        self._dead_letter_lock = threading.Lock()
        self._state_ready = False

    # --- index state ------------------------------------------------------------------------------

    def ensure_index(self, index: str, mapping: dict) -> None:
        """Create the index if it is missing; an existing index is left exactly as it is.

        A changed definition is not handled here: `is_seeded` reads false for it and the engine
        calls `recreate`. The created index never claims to be seeded, whatever `mapping` holds.
        """
        if self._call(f"checking index {index}", self.client.indices.exists, index=index):
            return
        self._create(index, mapping)

    def _create(self, index: str, mapping: dict) -> bool:
        """Create the index unseeded; False if it exists already (someone else created it)."""
        body = copy.deepcopy(mapping)
        flusso = body.get("mappings", {}).get("_meta", {}).get("flusso")
        if isinstance(flusso, dict):
            flusso.pop("seeded", None)
        reply = self._call(f"creating index {index}", self.client.indices.create, index=index, body=body,
                           ignore=400)
        error = reply.get("error") if isinstance(reply, dict) else None
        raced = isinstance(error, dict) and error.get("type") == "resource_already_exists_exception"
        if error and not raced:
            raise SinkError(f"creating index {index} at {self.where} failed: {self._scrub(_reason(error))}")
        return not raced

    def is_seeded(self, index: str, expected: SeedMarker) -> bool:
        """Marker present and `expected`'s definition (also the one the index was created with), slot
        and database; the position is not compared."""
        flusso = self._flusso_meta(index)
        if flusso is None or flusso.get("definition_hash") != expected.definition_hash:
            return False
        marker = SeedMarker.from_meta(flusso.get("seeded"))
        return marker is not None and marker.same_seed(expected)

    def seed_marker(self, index: str) -> SeedMarker | None:
        """The stored marker (with the position the seeding ran at), or None."""
        flusso = self._flusso_meta(index)
        return None if flusso is None else SeedMarker.from_meta(flusso.get("seeded"))

    def definition_hash(self, index: str) -> str | None:
        """The definition hash the live index was created with; None if missing or not flusso's."""
        flusso = self._flusso_meta(index)
        value = None if flusso is None else flusso.get("definition_hash")
        return value if isinstance(value, str) else None

    def mark_seeded(self, index: str, marker: SeedMarker) -> None:
        meta = self._meta(index)
        if meta is None:
            raise SinkError(f"cannot mark {index} seeded: the index does not exist at {self.where}")
        flusso = meta.get("flusso")
        meta["flusso"] = {**(flusso if isinstance(flusso, dict) else {}), "seeded": marker.as_meta()}
        self._put_meta(index, meta)

    def mark_unseeded(self, index: str) -> None:
        """Remove the marker; a missing index is unseeded already."""
        meta = self._meta(index)
        flusso = None if meta is None else meta.get("flusso")
        if meta is None or not isinstance(flusso, dict) or "seeded" not in flusso:
            return
        meta["flusso"] = {k: v for k, v in flusso.items() if k != "seeded"}
        self._put_meta(index, meta)

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

    def close(self) -> None:
        self.client.close()

    # --- flusso's state ---------------------------------------------------------------------------

    def read_state(self, key: str) -> tuple[dict, Any] | None:
        """The state document `key` of `sink.state_index` (a realtime GET) and its compare-and-set
        token, or None if there is none."""
        try:
            reply = self._call(f"reading {key} from {self.config.state_index}", self.client.get,
                               index=self.config.state_index, id=key)
        except NotFoundError:
            return None
        return dict(reply["_source"]), (reply["_seq_no"], reply["_primary_term"])

    def write_state(self, key: str, doc: dict, token: Any) -> Any | None:
        """Write `doc` if the stored one is still the one `token` was read with (None: if there is
        none); durable when it returns (the translog is synced per request by default). None when
        someone else wrote first."""
        if not self._state_ready:
            self.ensure_index(self.config.state_index, STATE_MAPPING)
            self._state_ready = True
        body = {**doc, "updated_at": datetime.now(UTC).isoformat()}
        guard: dict[str, Any] = ({"op_type": "create"} if token is None
                                 else {"if_seq_no": token[0], "if_primary_term": token[1]})
        reply = self._call(f"writing {key} to {self.config.state_index}", self.client.index,
                           index=self.config.state_index, id=key, body=body, ignore=409, **guard)
        if reply.get("status") == 409 or "_seq_no" not in reply:
            return None  # version_conflict_engine_exception: someone else wrote it first
        return reply["_seq_no"], reply["_primary_term"]

    # --- writes -----------------------------------------------------------------------------------

    def write(self, index: str, doc_id: DocId, doc: dict | str | None, version: int) -> None:
        """Buffer an index (or, for None, a delete) of `doc_id` at `version`; nothing is sent."""
        self._buffer.add(index, doc_id, doc, version)

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
        retries = _Retries(self.policies, self._stop, self.where, self._log, self._scrub)
        outcome = self._send([_encode(w) for w in writes], report, retries)
        report.written, report.deleted, report.conflicts = outcome.written, outcome.deleted, outcome.conflicts
        if outcome.rejected:
            self._reject(outcome.rejected, report, retries)
        report.seconds = time.monotonic() - started
        return report

    def _reject(self, rejected: list[tuple[PendingWrite, str]], report: FlushReport,
                retries: _Retries) -> None:
        policy = self.policies.item_rejection
        if policy == "fail":
            write, reason = rejected[0]
            more = f" (and {len(rejected) - 1} more rejected in the same flush)" if len(rejected) > 1 else ""
            raise RejectedItem(write.index, write.doc_id, reason + more)
        for write, reason in rejected:
            report.rejected.append(Rejection(write.index, write.doc_id, reason))
            if policy == "skip":
                self._log.warning("skipped %s/%s, rejected: %s", write.index, write.doc_id, reason)
            else:
                self._log.warning("dead-lettered %s/%s to %s%s, rejected: %s",
                                  write.index, write.doc_id, write.index, DEAD_LETTER_SUFFIX, reason)
        if policy == "dead_letter":
            self._dead_letter(rejected, report, retries)

    def _dead_letter(self, rejected: list[tuple[PendingWrite, str]], report: FlushReport,
                     retries: _Retries) -> None:
        failed_at = datetime.now(UTC).isoformat()
        with self._dead_letter_lock:  # two detached flushes may reject at once
            for write, _ in rejected:
                index = write.index + DEAD_LETTER_SUFFIX
                if index not in self._dead_letter_indexes:
                    self.ensure_index(index, DEAD_LETTER_MAPPING)
                    self._dead_letter_indexes.add(index)
        outcome = self._send([_encode_dead_letter(w, r, failed_at) for w, r in rejected], report, retries)
        if outcome.rejected:
            write, reason = outcome.rejected[0]
            raise SinkError(f"the dead-letter index {write.index} refused {write.doc_id}: {reason}")

    def _send(self, actions: list[_Action], report: FlushReport, retries: _Retries) -> _Outcome:
        """Bulk-send `actions`, resending items refused with 429/5xx, and classify every outcome."""
        outcome = _Outcome()
        while actions:
            again: list[_Action] = []
            last = ""
            for chunk in _chunks(actions, self.config.max_bulk_bytes):
                reply = self._bulk(chunk, report, retries)
                if not reply.get("errors"):
                    for action in chunk:
                        if action.write.doc is None:
                            outcome.deleted += 1
                        else:
                            outcome.written += 1
                    continue
                for action, item in zip(chunk, reply["items"], strict=True):
                    result = next(iter(item.values()))
                    status, error = result.get("status", 0), result.get("error")
                    deleting = action.write.doc is None
                    if error is None and (status < 300 or (deleting and status == 404)):
                        if deleting:
                            outcome.deleted += 1  # a delete of a missing document leaves it missing: done
                        else:
                            outcome.written += 1
                    elif status == 409:
                        outcome.conflicts += 1  # a newer version is there already
                    elif _retryable(status):
                        again.append(action)
                        last = f"{status} {_reason(error)}"
                    else:
                        outcome.rejected.append((action.write, _reason(error)))
            if again:
                retries.wait(f"bulk write of {len(again)} refused items", last)
            actions = again
        return outcome

    def _bulk(self, chunk: list[_Action], report: FlushReport, retries: _Retries) -> dict:
        body = b"".join(a.body for a in chunk)
        while True:
            report.requests += 1
            try:
                reply = self.client.bulk(body=body, params={"filter_path": _BULK_FILTER})
            except TransportError as err:
                if not self._transient(err):
                    raise SinkError(
                        f"bulk write at {self.where} failed: {self._scrub(_describe(err))}"
                        + (" (lower sink.max_bulk_bytes)" if err.status_code == 413 else "")
                    ) from err
                retries.wait("bulk write", _describe(err))
                continue
            items = reply.get("items", [])
            if reply.get("errors") and len(items) != len(chunk):
                raise SinkError(
                    f"bulk reply from {self.where} has {len(items)} items for {len(chunk)} actions"
                )
            return reply

    # --- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _transient(err: TransportError) -> bool:
        return isinstance(err, TransportConnectionError) or _retryable(err.status_code)

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """An administrative request, retried like a flush; a 404 is the caller's to handle."""
        retries = _Retries(self.policies, self._stop, self.where, self._log, self._scrub)
        while True:
            try:
                return fn(**kwargs)
            except NotFoundError:
                raise
            except TransportError as err:
                if not self._transient(err):
                    raise SinkError(f"{what} at {self.where} failed: {self._scrub(_describe(err))}") from err
                retries.wait(what, _describe(err))

    def _meta(self, index: str) -> dict | None:
        """The index's whole `_meta` (freshly read, the caller's to change), or None if it is missing."""
        try:
            reply = self._call(f"reading the mapping of {index}", self.client.indices.get_mapping,
                               index=index)
        except NotFoundError:
            return None
        mappings = next(iter(reply.values()), {}).get("mappings", {})
        return dict(mappings.get("_meta") or {})

    def _flusso_meta(self, index: str) -> dict | None:
        meta = self._meta(index)
        flusso = None if meta is None else meta.get("flusso")
        return flusso if isinstance(flusso, dict) else None

    def _put_meta(self, index: str, meta: dict) -> None:
        self._call(f"writing the _meta of {index}", self.client.indices.put_mapping, index=index,
                   body={"_meta": meta})

    def _scrub(self, text: str) -> str:
        """`text` with every password taken out, whatever a library put in it."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
