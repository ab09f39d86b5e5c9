"""The OpenSearch sink: one bulk round trip per flush, versioned writes, and the seeded marker.

Every write carries the WAL position of the snapshot its document was built from as an external
version (`version_type=external_gte`), so a document built from an older snapshot never replaces
one built from a newer one, whoever writes it (DESIGN §4). A refused older write is a *conflict*,
not an error. Deletes are versioned the same way, but OpenSearch keeps a delete's tombstone (and
so its version) only for `index.gc_deletes`, 60 s by default: an older write of the same id arriving
later, a flush still being retried, would bring the document back. So the indexes flusso creates
carry a `gc_deletes` above the longest a write can take from its build to its last retry
(`gc_deletes_s`: every attempt running into `sink.timeout_s`, every backoff of
`failures.flush_error` between them, the wait behind an older flush in flight, and a minute of
margin), unless the index's `settings` set one.

The index's `_meta.flusso` holds flusso's state:

```json
{"definition_hash": "<the definition the index was created with>",
 "seeded": {"definition_hash": "...", "slot": "...", "system_identifier": "...", "position": 123}}
```

`seeded` is written only by `mark_seeded`; OpenSearch replaces `_meta` whole on a mapping update,
so every change reads `_meta`, changes `flusso` and writes all of it back, keeping other keys.

Failures: a round trip that fails as a whole (connection refused, timeout, 429, 5xx) and items
refused with 429/5xx are retried with capped exponential backoff; every failed round trip of one
flush spends one retry of `FailurePolicies.retries`, then `SinkError` is raised. Items refused
because the index cannot take writes (a write or read-only block, the flood-stage disk block, a
closed or missing index, no permission: `index_errors`) are retried the same way and then raise
`SinkError` naming the index, the block and how to lift it: they never reach the rejection policy,
so nothing is skipped or dead-lettered, and nothing acknowledged, for them.

An item refused for what it is (a value its field cannot parse, an id over OpenSearch's 512 bytes)
is a rejection, handled by `FailurePolicies.item_rejection`. Under skip and dead_letter the
document's previous version is then deleted, at the rejected write's version (so a newer write still
wins), unless `item_rejection_keeps` is `previous`: search never shows a document that no longer
matches its rows. A dead letter (in `<index>-deadletter`) keeps the whole document and the reason;
its `_id` is the document's, or for an id too long to be one, a hash of it (the id is in `doc_id`).
An id over 512 bytes is never sent (OpenSearch would fail the whole bulk request for it); a delete
of one is done at once, since no such document can exist.
No message or log line carries a password: hosts are shown without their userinfo.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from opensearchpy import OpenSearch, helpers
from opensearchpy.exceptions import ConnectionError as TransportConnectionError
from opensearchpy.exceptions import NotFoundError, TransportError

from ..changes import DocId
from ..config import SinkConfig
from ..error import RejectedItem, SinkError
from ..policy import FailurePolicies
from ..redact import redact_url
from . import FlushReport, PendingWrite, Rejection, SeedMarker, WriteBuffer
from .index_errors import IndexWide, index_wide

DEAD_LETTER_SUFFIX = "-deadletter"
MAX_ID_BYTES = 512  # OpenSearch refuses a longer `_id` (UTF-8), failing the whole bulk request

DEAD_LETTER_MAPPING: dict = {
    "settings": {"number_of_shards": 1},
    "mappings": {
        "dynamic": False,
        "properties": {
            "index": {"type": "keyword"},
            # Lucene refuses a term over 32766 bytes: a longer id is kept in _source only
            "doc_id": {"type": "keyword", "ignore_above": 8191},
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


def client_kwargs(config: SinkConfig, connections: int = 1) -> dict[str, Any]:
    """The `OpenSearch(...)` arguments for a sink config, with a pool of `connections` per host.

    The transport's own retries are off (`max_retries=0`): `FailurePolicies` alone decides how often
    and how patiently a request is retried, with backoff, and interruptibly. The pool holds one
    connection per thread that may send at once (urllib3 keeps one by default, and discards the
    others with a "Connection pool is full" warning, reopening them on the next request).
    """
    kwargs: dict[str, Any] = {
        "hosts": list(config.hosts),
        "use_ssl": any(urlsplit(h).scheme == "https" for h in config.hosts),
        "verify_certs": config.verify_certs,
        "ssl_show_warn": config.verify_certs,
        "timeout": config.timeout_s,
        "max_retries": 0,
        "retry_on_timeout": False,
        "pool_maxsize": max(1, connections),
    }
    if config.ca_certs:
        kwargs["ca_certs"] = config.ca_certs
    if config.username:
        password = config.password.get_secret_value() if config.password else ""
        kwargs["http_auth"] = (config.username, password)
    return kwargs


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


def letter_id(doc_id: DocId) -> str:
    """The dead letter's own `_id`: the document's, or a hash of it when it is too long to be one."""
    if len(doc_id.encode()) <= MAX_ID_BYTES:
        return doc_id
    return "sha256:" + hashlib.sha256(doc_id.encode()).hexdigest()


def _id_too_long(doc_id: DocId) -> str | None:
    n = len(doc_id.encode())
    if n <= MAX_ID_BYTES:
        return None
    return (f"document id is {n} bytes, OpenSearch's limit is {MAX_ID_BYTES} (UTF-8): the root key's "
            "values are too long to be an _id; shorten them, or index a shorter key column")


@dataclass(frozen=True)
class DeadLetter:
    """A rejected document as its dead letter records it (without the document itself)."""

    index: str
    doc_id: DocId
    reason: str
    failed_at: str
    letter_id: str


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
    body = _line({"index": {"_index": index, "_id": letter_id(write.doc_id)}}) + _line(letter)
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

    def wait(self, what: str, error: str, fix: str | None = None) -> None:
        """Wait before the next retry of `what`, or raise `SinkError` when the budget or the run is over.

        `fix` is what the user does about `error` (by default: check that OpenSearch is up)."""
        error = self.scrub(error)
        self.failures += 1
        retries = self.policies.retries
        if self.failures > retries:
            raise SinkError(
                f"{what} at {self.where} failed after {self.failures} attempts (1 + {retries} retries); "
                f"last error: {error}. Nothing was acknowledged past the last good flush: "
                f"{fix or 'check that OpenSearch is up and reachable'}, then start again."
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
        connections: int = 1,
    ) -> None:
        self.config = config
        self.policies = policies
        self.client = client if client is not None else OpenSearch(**client_kwargs(config, connections))
        self.where = ", ".join(redact_url(h) for h in config.hosts)
        self._stop = stop or threading.Event()
        self._log = logger or logging.getLogger(__name__)
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
        """Create the index unseeded; False if it exists already (someone else created it).

        It gets the `gc_deletes` that outlives flusso's retries unless `mapping`'s settings set one
        (see the module's docstring)."""
        body = copy.deepcopy(mapping)
        flusso = body.get("mappings", {}).get("_meta", {}).get("flusso")
        if isinstance(flusso, dict):
            flusso.pop("seeded", None)
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

    # --- dead letters -----------------------------------------------------------------------------

    def dead_letters(self, index: str) -> list[DeadLetter]:
        """The dead letters of `index`, oldest first (none when it has no dead-letter index), including
        those written a moment ago (the index is refreshed first)."""
        name = index + DEAD_LETTER_SUFFIX

        def read() -> list[dict]:
            self.client.indices.refresh(index=name)
            return list(helpers.scan(self.client, index=name, query={"query": {"match_all": {}}},
                                     _source_excludes=["document"]))

        try:
            hits = self._call(f"reading the dead letters in {name}", read)
        except NotFoundError:
            return []
        letters = [
            DeadLetter(index=str(h["_source"].get("index", index)), doc_id=str(h["_source"].get("doc_id", "")),
                       reason=str(h["_source"].get("reason", "")), failed_at=str(h["_source"].get("failed_at", "")),
                       letter_id=h["_id"])
            for h in hits
        ]
        return sorted(letters, key=lambda d: (d.failed_at, d.doc_id))

    def remove_dead_letters(self, index: str, letters: Sequence[DeadLetter]) -> None:
        """Delete these dead letters of `index` (their documents went in) and refresh, so that a
        listing right after no longer shows them."""
        if not letters:
            return
        name = index + DEAD_LETTER_SUFFIX
        actions = [_Action(PendingWrite(name, d.letter_id, None, 0),
                           _line({"delete": {"_index": name, "_id": d.letter_id}}).encode()) for d in letters]
        retries = _Retries(self.policies, self._stop, self.where, self._log, self._scrub)
        self._send(actions, FlushReport(), retries)
        self.refresh(name)

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
        actions: list[_Action] = []
        too_long: list[tuple[PendingWrite, str]] = []
        for w in writes:
            reason = _id_too_long(w.doc_id)
            if reason is None:
                actions.append(_encode(w))
            elif w.doc is None:
                report.deleted += 1  # no document can have that id: the delete is done
            else:
                too_long.append((w, reason))  # never sent: OpenSearch would fail the whole request
        outcome = self._send(actions, report, retries)
        report.written, report.conflicts = outcome.written, outcome.conflicts
        report.deleted += outcome.deleted
        if too_long or outcome.rejected:
            self._reject(too_long + outcome.rejected, report, retries)
        report.seconds = time.monotonic() - started
        return report

    def _reject(self, rejected: list[tuple[PendingWrite, str]], report: FlushReport,
                retries: _Retries) -> None:
        """Apply the rejection policy; under skip and dead_letter, also delete the rejected documents'
        previous versions unless `item_rejection_keeps` is `previous`."""
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
        actions = self._dead_letters_of(rejected) if policy == "dead_letter" else []
        if self.policies.item_rejection_keeps == "none":
            # at the rejected write's version: a newer version already there stays (a 409)
            actions += [_encode(PendingWrite(w.index, w.doc_id, None, w.version))
                        for w, _ in rejected if _id_too_long(w.doc_id) is None]
        if not actions:
            return
        outcome = self._send(actions, report, retries)
        if outcome.rejected:
            write, reason = outcome.rejected[0]
            raise SinkError(f"the dead-letter index {write.index} refused {write.doc_id}: {reason}")

    def _dead_letters_of(self, rejected: list[tuple[PendingWrite, str]]) -> list[_Action]:
        """The dead letters of `rejected`, their indexes created first."""
        failed_at = datetime.now(UTC).isoformat()
        with self._dead_letter_lock:  # two detached flushes may reject at once
            for write, _ in rejected:
                index = write.index + DEAD_LETTER_SUFFIX
                if index not in self._dead_letter_indexes:
                    self.ensure_index(index, DEAD_LETTER_MAPPING)
                    self._dead_letter_indexes.add(index)
        return [_encode_dead_letter(w, r, failed_at) for w, r in rejected]

    def _send(self, actions: list[_Action], report: FlushReport, retries: _Retries) -> _Outcome:
        """Bulk-send `actions`, resending items refused with 429/5xx, and classify every outcome."""
        outcome = _Outcome()
        while actions:
            again: list[_Action] = []
            last = ""
            wide: IndexWide | None = None
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
                    elif (found := index_wide(action.write.index, status, error)) is not None:
                        again.append(action)  # the index cannot take writes: a flush error, never a rejection
                        wide = wide or found
                    elif _retryable(status):
                        again.append(action)
                        last = f"{status} {_reason(error)}"
                    else:
                        outcome.rejected.append((action.write, _reason(error)))
            if again:
                if wide is not None:
                    retries.wait(f"bulk write of {len(again)} refused items", wide.cause, wide.fix)
                else:
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
                wide = self._request_index_wide(err, chunk)
                if wide is not None and err.status_code != 401:
                    retries.wait("bulk write", wide.cause, wide.fix)
                    continue
                if not self._transient(err):
                    raise SinkError(
                        f"bulk write at {self.where} failed: {self._scrub(_describe(err))}"
                        + (" (lower sink.max_bulk_bytes)" if err.status_code == 413 else "")
                        + (f": {wide.fix}" if wide is not None else "")
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
    def _request_index_wide(err: TransportError, chunk: list[_Action]) -> IndexWide | None:
        """A whole bulk request refused for a reason about its indexes (a block, no permission)."""
        if isinstance(err, TransportConnectionError):
            return None
        info = err.info if isinstance(err.info, dict) else {}
        error = info.get("error") if isinstance(info.get("error"), dict) else {"reason": str(err.error)}
        indexes = ", ".join(sorted({a.write.index for a in chunk}))
        return index_wide(indexes, err.status_code, error)

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
