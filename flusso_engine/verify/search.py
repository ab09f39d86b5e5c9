"""The OpenSearch side of `flusso verify`: the documents' ids, versions and fingerprints, read without
their sources.

The walk opens a point in time on the alias (one consistent view of the index for the whole walk)
and pages through it with `search_after`, sorted by `_id` (OpenSearch 2.x has no `_shard_doc`; `_id`
is the one unique sort key, at the price of its field data on the cluster), reading each document's
fingerprint as a doc value and its version (the build's WAL position). Lookups by id during the walk
ask the same point in time; the re-check of suspects asks a realtime `mget`, which sees writes not
yet refreshed.

A routed index (`routing:`) is read with each document's `_routing`: its fingerprint is compared as
`<md5> <routing>` (what the builder's fingerprint statement gives), so a document under another
routing than its row's reads as drift, and two copies of one id in one page read as a suspect. An
`mget` needs each document's routing, which a copy under a stale one does not have: the re-check
refreshes the index and searches the ids instead (every copy, in every shard).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import TransportError

from ..documents.mapping import FINGERPRINT
from ..error import SinkError

KEEP_ALIVE = "5m"


@dataclass(frozen=True, slots=True)
class Stored:
    """A document as the index holds it: its version, its fingerprint (None: it has none, e.g. it
    was written by someone else) and, from `current`, its source."""

    version: int
    fingerprint: str | None
    source: dict[str, Any] | None = None
    routings: tuple[str, ...] = ()  # a routed index's: the `_routing` of every copy found


def _stored(hit: dict, routed: bool = False) -> Stored:
    found = (hit.get("fields") or {}).get(FINGERPRINT) or [None]
    if not routed:
        return Stored(int(hit.get("_version", 0)), found[0])
    routing = hit.get("_routing")
    fingerprint = None if found[0] is None else f"{found[0]} {routing or ''}"
    return Stored(int(hit.get("_version", 0)), fingerprint, routings=(routing,) if routing is not None else ())


def _by_id(hits: list[dict], routed: bool) -> dict[str, Stored]:
    """Hits by id; two copies of one id (a routed index's, in two shards) read as no fingerprint:
    a suspect, which the re-check sees whole."""
    out: dict[str, Stored] = {}
    for h in hits:
        stored = _stored(h, routed)
        if h["_id"] in out:
            first = out[h["_id"]]
            stored = Stored(max(first.version, stored.version), None, routings=first.routings + stored.routings)
        out[h["_id"]] = stored
    return out


class Documents:
    """One index (the alias) read through a point in time, closed by `close` (or `with`)."""

    def __init__(self, client: OpenSearch, index: str, page: int = 1000, routed: bool = False) -> None:
        self.client, self.index, self.page, self.routed = client, index, page, routed
        try:
            self.pit = client.create_pit(index=index, params={"keep_alive": KEEP_ALIVE})["pit_id"]
        except TransportError as err:
            raise SinkError(f"cannot open a point in time on {index}: {err}") from err

    def close(self) -> None:
        try:
            self.client.delete_pit(body={"pit_id": [self.pit]})
        except TransportError:
            pass  # it expires on its own

    def __enter__(self) -> Documents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _search(self, body: dict) -> list[dict]:
        body = {"pit": {"id": self.pit, "keep_alive": KEEP_ALIVE}, "_source": False, "version": True,
                "docvalue_fields": [FINGERPRINT], "track_total_hits": False, **body}
        try:
            found = self.client.search(body=body)
        except TransportError as err:
            raise SinkError(f"searching {self.index} failed: {err}") from err
        self.pit = found.get("pit_id", self.pit)
        return found["hits"]["hits"]

    def walk(self) -> Iterator[dict[str, Stored]]:
        """Every document, a page at a time, in `_id` order."""
        after: list | None = None
        while True:
            body: dict[str, Any] = {"size": self.page, "sort": [{"_id": "asc"}]}
            if after is not None:
                body["search_after"] = after
            hits = self._search(body)
            if not hits:
                return
            yield _by_id(hits, self.routed)
            after = hits[-1]["sort"]

    def present(self, ids: Sequence[str]) -> dict[str, Stored]:
        """Which of `ids` the point in time holds."""
        out: dict[str, Stored] = {}
        for start in range(0, len(ids), self.page):
            chunk = list(ids[start:start + self.page])
            size = min(10_000, len(chunk) * (4 if self.routed else 1))  # a routed id may have stale copies
            hits = self._search({"size": size, "query": {"ids": {"values": chunk}}})
            out.update(_by_id(hits, self.routed))
        return out

    def random(self, n: int) -> dict[str, Stored]:
        """About `n` random documents (for `--sample`)."""
        hits = self._search({"size": n, "query": {"function_score": {"random_score": {},
                                                                     "query": {"match_all": {}}}}})
        return _by_id(hits, self.routed)


def current(client: OpenSearch, index: str, ids: Sequence[str], page: int = 1000,
            routed: bool = False) -> dict[str, Stored]:
    """The documents as they are now (realtime `mget`, refreshed or not), with their sources; a
    routed index's after a refresh, by a search that finds every copy."""
    if routed:
        return _current_routed(client, index, ids, page)
    out: dict[str, Stored] = {}
    for start in range(0, len(ids), page):
        chunk = list(ids[start:start + page])
        try:
            found = client.mget(index=index, body={"ids": chunk})
        except TransportError as err:
            raise SinkError(f"reading documents of {index} failed: {err}") from err
        for doc in found["docs"]:
            if doc.get("found"):
                source = doc.get("_source") or {}
                if isinstance(source, str):
                    source = json.loads(source)
                out[doc["_id"]] = Stored(int(doc["_version"]), source.get(FINGERPRINT), source)
    return out


def _current_routed(client: OpenSearch, index: str, ids: Sequence[str], page: int) -> dict[str, Stored]:
    """Every copy of `ids` after a refresh: one (the fingerprint `<md5> <routing>`), or several
    (no fingerprint: drift), with the routings they are under."""
    out: dict[str, Stored] = {}
    try:
        client.indices.refresh(index=index)
        for start in range(0, len(ids), page):
            chunk = list(ids[start:start + page])
            found = client.search(index=index, body={"size": min(10_000, 4 * len(chunk)), "version": True,
                                                     "query": {"ids": {"values": chunk}}})
            copies: dict[str, list[dict]] = {}
            for hit in found["hits"]["hits"]:
                copies.setdefault(hit["_id"], []).append(hit)
            for doc_id, hits in copies.items():
                source = hits[0].get("_source") or {}
                routings = tuple(h.get("_routing") or "" for h in hits)
                fingerprint = f"{source.get(FINGERPRINT)} {routings[0]}" if len(hits) == 1 else None
                out[doc_id] = Stored(max(int(h["_version"]) for h in hits), fingerprint, source, routings)
    except TransportError as err:
        raise SinkError(f"reading documents of {index} failed: {err}") from err
    return out
