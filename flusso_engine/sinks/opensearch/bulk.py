"""Bulk writes: encoding the actions, chunks by size, the round trips, and what each item's outcome means.

Hand-written rather than `opensearchpy.helpers.streaming_bulk`, for three reasons. The helper
serializes every action and document through the client's serializer (and again for every retry),
re-encoding them to count their bytes, while flusso sends the JSON text the builder's SQL produced
as it is: each write is encoded once, into the bytes of its two lines (`encode`), and a retry resends
those bytes. The helper retries only 429s, sleeping between attempts with a blocking `time.sleep`,
while flusso retries 429s, 5xx and connection failures with `FailurePolicies`' backoff, one budget
per flush, interruptibly (a stop ends the wait at once). And the helper knows no index-wide errors:
flusso tells an item refused for what the document holds (a rejection) from one refused because the
index cannot take writes (`index_errors`), which must never be skipped or dead-lettered.

Failures: a round trip that fails as a whole (connection refused, timeout, 429, 5xx) and items
refused with 429/5xx are retried with capped exponential backoff; every failed round trip of one
flush spends one retry of `FailurePolicies.retries`, then `SinkError` is raised. Items refused
because the index cannot take writes (a write or read-only block, the flood-stage disk block, a
closed or missing index, no permission: `index_errors`) are retried the same way and then raise
`SinkError` naming the index, the block and how to lift it: they never reach the rejection policy,
so nothing is skipped or dead-lettered, and nothing acknowledged, for them. A refused older
version (409) is a conflict, not an error; anything else is a rejection (`deadletters.py`).

An id over OpenSearch's 512 bytes is never sent (OpenSearch would fail the whole bulk request for
it): its write is a rejection, and a delete of it is done at once, since no such document can exist.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from opensearchpy.exceptions import ConnectionError as TransportConnectionError
from opensearchpy.exceptions import SSLError, TransportError

from ...changes import DocId
from ...config import SinkConfig
from ...error import SinkError
from .. import FlushReport, PendingWrite
from .client import Requests, Retries, describe, retryable, transient
from .index_errors import IndexWide, index_wide
from .refusals import refusal

MAX_ID_BYTES = 512  # OpenSearch refuses a longer `_id` (UTF-8), failing the whole bulk request

# what flush reads of a bulk response: the rest (ids, shards, seq_no) is parsed for nothing
_BULK_FILTER = "errors,items.*.status,items.*.error"


@dataclass(slots=True)
class Action:
    """A write encoded once for the bulk body: `body` is its action line and source line."""

    write: PendingWrite
    body: bytes


def line(value: Any) -> str:
    """One NDJSON line; a str is JSON text already (a raw document from the builder)."""
    if isinstance(value, str):
        return value + "\n"
    return json.dumps(value, separators=(",", ":")) + "\n"


def encode(write: PendingWrite) -> Action:
    meta: dict[str, Any] = {"_index": write.index, "_id": write.doc_id, "version": write.version,
                            "version_type": "external_gte"}
    if write.routing is not None:
        meta["routing"] = write.routing
    if write.doc is None:
        return Action(write, line({"delete": meta}).encode())
    return Action(write, (line({"index": meta}) + line(write.doc)).encode())


def id_too_long(doc_id: DocId) -> str | None:
    """Why `doc_id` cannot be an `_id`, or None when it can."""
    n = len(doc_id.encode())
    if n <= MAX_ID_BYTES:
        return None
    return (f"document id is {n} bytes, OpenSearch's limit is {MAX_ID_BYTES} (UTF-8): the root key's "
            "values are too long to be an _id; shorten them, or index a shorter key column")


def encode_writes(writes: Sequence[PendingWrite]) -> tuple[list[Action], list[tuple[PendingWrite, str]], int]:
    """The actions to send for `writes`; the writes whose id is too long to send, with the reason (to
    be rejected); and how many deletes are done without a request (no document can have such an id)."""
    actions: list[Action] = []
    too_long: list[tuple[PendingWrite, str]] = []
    deleted = 0
    for w in writes:
        reason = id_too_long(w.doc_id)
        if reason is None:
            actions.append(encode(w))
        elif w.doc is None:
            deleted += 1  # no document can have that id: the delete is done
        else:
            too_long.append((w, reason))  # never sent: OpenSearch would fail the whole request
    return actions, too_long, deleted


def chunks(actions: Sequence[Action], max_bytes: int) -> Iterator[list[Action]]:
    """Consecutive runs of actions whose bodies add up to at most `max_bytes` (an oversized one alone)."""
    chunk: list[Action] = []
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


def reason_of(error: Any) -> str:
    """`type: reason (caused by type: reason)` from a bulk item's error object."""
    if not isinstance(error, dict):
        return str(error)
    text = f"{error.get('type', 'error')}: {error.get('reason', '')}"
    cause = error.get("caused_by")
    if isinstance(cause, dict):
        text += f" (caused by {cause.get('type', 'error')}: {cause.get('reason', '')})"
    return text


@dataclass
class Outcome:
    """What became of the items sent: counted, or refused for what they are (`rejected`)."""

    written: int = 0
    deleted: int = 0
    conflicts: int = 0
    rejected: list[tuple[PendingWrite, str]] = field(default_factory=list)


class Bulk(Requests):
    """The sink's part that sends bulk requests and classifies every item's outcome."""

    config: SinkConfig

    def _send(self, actions: list[Action], report: FlushReport, retries: Retries, wait_for: bool = False) -> Outcome:
        """Bulk-send `actions`, resending items refused with 429/5xx, and classify every outcome;
        with `wait_for`, each request returns once its documents are searchable (`refresh=wait_for`)."""
        outcome = Outcome()
        while actions:
            again: list[Action] = []
            last = ""
            wide: IndexWide | None = None
            for chunk in chunks(actions, self.config.max_bulk_bytes):
                reply = self._bulk(chunk, report, retries, wait_for)
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
                    elif retryable(status):
                        again.append(action)
                        last = f"{status} {reason_of(error)}"
                    else:
                        outcome.rejected.append((action.write, reason_of(error)))
            if again:
                if wide is not None:
                    retries.wait(f"bulk write of {len(again)} refused items", wide.cause, wide.fix)
                else:
                    retries.wait(f"bulk write of {len(again)} refused items", last)
            actions = again
        return outcome

    def _bulk(self, chunk: list[Action], report: FlushReport, retries: Retries, wait_for: bool = False) -> dict:
        body = b"".join(a.body for a in chunk)
        params = {"filter_path": _BULK_FILTER, **({"refresh": "wait_for"} if wait_for else {})}
        while True:
            report.requests += 1
            try:
                reply = self.client.bulk(body=body, params=params)
            except TransportError as err:
                wide = _request_index_wide(err, chunk)
                if wide is not None and err.status_code != 401:
                    retries.wait("bulk write", wide.cause, wide.fix)
                    continue
                refused = refusal(err, self.config) if isinstance(err, SSLError) else None
                if refused is not None:  # a certificate does not change between retries
                    raise SinkError(f"bulk write at {self.where} failed: OpenSearch refused flusso: "
                                    f"{self._scrub(refused[0])}. Fix: {refused[1]}") from err
                if not transient(err):
                    raise SinkError(
                        f"bulk write at {self.where} failed: {self._scrub(describe(err))}"
                        + (" (lower sink.max_bulk_bytes)" if err.status_code == 413 else "")
                        + (f": {wide.fix}" if wide is not None else "")
                    ) from err
                retries.wait("bulk write", describe(err))
                continue
            items = reply.get("items", [])
            if reply.get("errors") and len(items) != len(chunk):
                raise SinkError(
                    f"bulk reply from {self.where} has {len(items)} items for {len(chunk)} actions"
                )
            return reply


def _request_index_wide(err: TransportError, chunk: list[Action]) -> IndexWide | None:
    """A whole bulk request refused for a reason about its indexes (a block, no permission)."""
    if isinstance(err, TransportConnectionError):
        return None
    info = err.info if isinstance(err.info, dict) else {}
    error = info.get("error") if isinstance(info.get("error"), dict) else {"reason": str(err.error)}
    indexes = ", ".join(sorted({a.write.index for a in chunk}))
    return index_wide(indexes, err.status_code, error)
