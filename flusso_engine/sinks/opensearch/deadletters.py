"""Rejected documents: the rejection policy, and the dead letters (their index, encoding, listing, removal).

An item refused for what it is (a value its field cannot parse, an id over OpenSearch's 512 bytes)
is a rejection, handled by `FailurePolicies.item_rejection`. Under skip and dead_letter the
document's previous version is then deleted, at the rejected write's version (so a newer write still
wins), unless `item_rejection_keeps` is `previous`: search never shows a document that no longer
matches its rows. A dead letter (in `<index>-deadletter`) keeps the whole document and the reason;
its `_id` is the document's, or for an id too long to be one, a hash of it (the id is in `doc_id`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

from opensearchpy import helpers
from opensearchpy.exceptions import NotFoundError

from ...changes import DocId
from ...config import DEAD_LETTER_SUFFIX
from ...error import RejectedItem, SinkError
from .. import DeadLetter, FlushReport, PendingWrite, Rejection, alias_of
from .bulk import MAX_ID_BYTES, Action, Bulk, encode, id_too_long, line
from .client import Retries
from .indexes import Indexes

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


def letter_id(doc_id: DocId) -> str:
    """The dead letter's own `_id`: the document's, or a hash of it when it is too long to be one."""
    if len(doc_id.encode()) <= MAX_ID_BYTES:
        return doc_id
    return "sha256:" + hashlib.sha256(doc_id.encode()).hexdigest()


def encode_dead_letter(write: PendingWrite, reason: str, failed_at: str) -> Action:
    index = alias_of(write.index) + DEAD_LETTER_SUFFIX
    doc = json.loads(write.doc) if isinstance(write.doc, str) else write.doc
    letter = {"index": alias_of(write.index), "doc_id": write.doc_id, "reason": reason, "document": doc,
              "failed_at": failed_at}
    body = line({"index": {"_index": index, "_id": letter_id(write.doc_id)}}) + line(letter)
    return Action(PendingWrite(index, write.doc_id, letter, 0), body.encode())


class DeadLetters(Bulk, Indexes):
    """The sink's part that applies the rejection policy and keeps, lists and removes dead letters."""

    _dead_letter_indexes: set[str]  # created by this sink already
    _dead_letter_lock: threading.Lock

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
        actions = [Action(PendingWrite(name, d.letter_id, None, 0),
                          line({"delete": {"_index": name, "_id": d.letter_id}}).encode()) for d in letters]
        self._send(actions, FlushReport(), self._retries())
        self.refresh(name)

    def _reject(self, rejected: list[tuple[PendingWrite, str]], report: FlushReport,
                retries: Retries) -> None:
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
            actions += [encode(PendingWrite(w.index, w.doc_id, None, w.version, w.routing))
                        for w, _ in rejected if id_too_long(w.doc_id) is None]
        if not actions:
            return
        outcome = self._send(actions, report, retries)
        if outcome.rejected:
            write, reason = outcome.rejected[0]
            raise SinkError(f"the dead-letter index {write.index} refused {write.doc_id}: {reason}")

    def _dead_letters_of(self, rejected: list[tuple[PendingWrite, str]]) -> list[Action]:
        """The dead letters of `rejected`, their indexes created first."""
        failed_at = datetime.now(UTC).isoformat()
        with self._dead_letter_lock:  # two detached flushes may reject at once
            for write, _ in rejected:
                index = alias_of(write.index) + DEAD_LETTER_SUFFIX
                if index not in self._dead_letter_indexes:
                    self.ensure_index(index, DEAD_LETTER_MAPPING)
                    self._dead_letter_indexes.add(index)
        return [encode_dead_letter(w, r, failed_at) for w, r in rejected]
