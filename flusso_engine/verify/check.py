"""Classifying documents against their rows: the first pass over every id (or a sample), and the
re-check of its suspects, with the rule that keeps changes made during the walk from reading as drift.

The first pass compares fingerprints only: each page of documents from the point in time
(`search.Documents.walk`) against the fingerprints a fresh build would carry, from one snapshot per
page, and each keyset page of root keys against the point in time. A document whose version (the WAL
position of the snapshot it was built from) is above the page's snapshot position was built after
it: it is newer than what it is compared with, and is not compared. Anything else that differs is a
*suspect*, not drift yet: the document may have been written after the point in time opened, or the
live engine may not have applied a change committed before the snapshot.

The re-check settles that. It builds each suspect in full from a new snapshot at position Q, waits
(bounded by `settle_s`) until a running live engine has acknowledged Q, and only then reads the
document as it is now (realtime). Every change committed before Q has then been built and flushed
(flush, then ack), each from a snapshot that saw it and versioned by it: so the stored document is
either newer than Q (not compared) or was built from everything up to Q, and must equal the build.
With no live engine (the slot inactive or gone) nothing waits: what is missing then stays missing.
A suspect found again is checked once more the same way; what is still wrong is drift: `missing`
(a row, no document), `extra` (a document, no row), `stale` (the fingerprints differ; the fields
that differ are listed).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg

from ..documents.mapping import FINGERPRINT
from ..error import ConfigError, FlussoError, Problem
from ..pipeline.flushes import chunked
from .diff import field_diff
from .search import Documents, Stored, current

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger(__name__)

KINDS = ("missing", "extra", "stale")
ROUNDS = 2


@dataclass
class Finding:
    """One drifted id: its kind, the stored document's version, the build it was compared with."""

    index: str
    id: str
    kind: str
    stored_version: int | None
    built_position: int
    fields: list[str] = field(default_factory=list)
    stored: dict[str, Any] | None = None
    fresh: dict[str, Any] | None = None
    routings: tuple[str, ...] = ()  # a routed index's: the routing of each stored copy


@dataclass
class IndexCheck:
    """What one index's verification looked at and found."""

    index: str
    mode: str  # "full" or "sample N"
    rows: int = 0  # root keys looked up in the index
    documents: int = 0  # documents compared with their rows' fingerprints
    newer: int = 0  # documents built after the snapshot they would be compared with: not compared
    suspects: int = 0
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0


def _parse(doc: Any) -> dict[str, Any] | None:
    return json.loads(doc) if isinstance(doc, str) else doc


def advance_wal(dsn: str) -> None:
    """Commit one WAL record (a transactional logical message, which pgoutput does not send unless
    asked), so that snapshots taken from now on sit above every version already written. Without it
    an idle server keeps one position, and a document changed behind flusso's back (an internal
    version is the previous one plus one) would read as newer than any build, and refuse a repair."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_logical_emit_message(true, 'flusso', 'verify')")
    except psycopg.Error as err:  # no privilege: the position moves with the next write anyway
        log.debug("could not advance the WAL position: %s", err)


class Verifier:
    """Verification of an engine's indexes (opened, not started: it writes nothing)."""

    def __init__(self, engine: Engine, settle_s: float = 30.0, page: int = 1000) -> None:
        client = getattr(engine.sink, "client", None)
        if client is None:
            raise ConfigError([Problem("sink.type", f"flusso verify reads documents back, which the "
                                                    f"{engine.config.sink.type} sink cannot: use opensearch")])
        self.engine, self.client, self.builder = engine, client, engine.builder
        self.settle_s, self.page = settle_s, page

    def _routed(self, index: str) -> bool:
        return self.engine.config.indexes[index].routing is not None

    def check(self, index: str, sample: int | None = None) -> IndexCheck:
        """Verify one index: every id, or `sample` random root keys and as many random documents."""
        started = time.monotonic()
        self._require_fingerprints(index)
        advance_wal(self.engine.context.dsn)
        result = IndexCheck(index, "full" if sample is None else f"sample {sample}")
        suspects: set[str] = set()
        with Documents(self.client, index, self.page, self._routed(index)) as docs:
            if sample is None:
                for page in docs.walk():
                    suspects |= self._compare(index, page, result)
                after = None
                while keys := self.builder.key_page(index, after, self.page):
                    suspects |= self._absent(keys, docs, result)
                    after = keys[-1]
            else:
                ids = self.builder.sample_ids(index, sample)
                found = docs.present(ids)
                suspects |= self._absent(ids, docs, result, found)
                suspects |= self._compare(index, {i: found[i] for i in ids if i in found}, result)
                suspects |= self._compare(index, docs.random(sample), result)
        result.suspects = len(suspects)
        result.findings = self.recheck(index, suspects)
        result.seconds = time.monotonic() - started
        return result

    def _require_fingerprints(self, index: str) -> None:
        stored, expected = self.engine.sink.definition_hash(index), self.builder.definition_hash(index)
        if stored is None:
            raise FlussoError(f"index {index} does not exist: `flusso run` or `flusso backfill` creates it")
        if stored != expected:
            raise FlussoError(f"index {index} was built from another definition than this config's (or before "
                              "documents carried fingerprints): verification compares this definition's "
                              "documents, so reseed it first (`flusso run` or `flusso backfill` does)")

    def _compare(self, index: str, page: dict[str, Stored], result: IndexCheck) -> set[str]:
        """The ids of a page of documents whose fingerprint differs from a fresh build's, or whose
        row is gone; documents newer than that build are not compared."""
        prints, position = self.builder.fingerprints(index, list(page))
        out = set()
        for doc_id, stored in page.items():
            result.documents += 1
            if stored.version > position:
                result.newer += 1
            elif prints.get(doc_id) != stored.fingerprint or stored.fingerprint is None:
                out.add(doc_id)
        return out

    def _absent(self, keys: Sequence[str], docs: Documents, result: IndexCheck,
                found: dict[str, Stored] | None = None) -> set[str]:
        found = docs.present(keys) if found is None else found
        result.rows += len(keys)
        return {k for k in keys if k not in found}

    def recheck(self, index: str, ids: Iterable[str]) -> list[Finding]:
        """The drift among `ids`, each built from a new snapshot and compared with the document as it
        is now, twice at most (the module's docstring says why)."""
        pending = sorted(ids)
        findings: list[Finding] = []
        for _ in range(ROUNDS):
            if not pending:
                return []
            findings = [f for chunk in chunked(pending, self.page) for f in self._recheck(index, chunk)]
            pending = [f.id for f in findings]
        return findings

    def _recheck(self, index: str, ids: Sequence[str]) -> list[Finding]:
        built = self.builder.build(index, ids)
        self._settle(built.position)
        routed = self._routed(index)
        now = current(self.client, index, ids, self.page, routed)
        out = []
        for doc_id in ids:
            fresh, stored = _parse(built.docs.get(doc_id)), now.get(doc_id)
            expected = None if fresh is None else fresh.get(FINGERPRINT)
            if routed and fresh is not None:  # compared with its routing, as the stored one is
                expected = f"{expected} {(built.routing or {}).get(doc_id) or ''}"
            if stored is not None and stored.version > built.position:
                continue  # written from a newer snapshot than this build
            if fresh is None and stored is None:
                continue
            version = None if stored is None else stored.version
            if fresh is None:
                kind, fields = "extra", []
            elif stored is None:
                kind, fields = "missing", []
            elif stored.fingerprint == expected:
                continue
            else:
                # the same document under another routing (or in two shards): its `_routing` differs
                kind, fields = "stale", field_diff(stored.source, fresh) or (["_routing"] if routed else [FINGERPRINT])
            out.append(Finding(index, doc_id, kind, version, built.position, fields,
                               None if stored is None else stored.source, fresh,
                               routings=() if stored is None else stored.routings))
        return out

    def _settle(self, target: int) -> None:
        """Wait until a running live engine has acknowledged `target` (bounded by `settle_s`): every
        change committed before the snapshot at `target` is then in the index (flush, then ack)."""
        info = self.engine.capture.slot_info()
        if info is None or not info.active:
            return
        deadline = time.monotonic() + self.settle_s
        while (info is not None and info.active and (info.confirmed_flush_lsn or 0) < target
               and time.monotonic() < deadline):
            time.sleep(0.2)
            info = self.engine.capture.slot_info()
        if info is not None and info.active and (info.confirmed_flush_lsn or 0) < target:
            log.warning("the live engine did not catch up within %.0fs: changes it has yet to apply may "
                        "read as drift", self.settle_s)
