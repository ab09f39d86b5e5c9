"""Harness for the zero-downtime reseed tests (issue #12): what a user searching the index sees while
it is rebuilt. `Writers` (reseed_writers.py) keep changing every table; `Poller` counts and searches
the alias every 50 ms beside the root table's row count; its `Report` (reseed_bound.py, where the
bound and its reasoning are) says whether every poll was answered, the longest gap between
successful searches and the worst shortfall against the bound; `Load` runs both. `generations`,
`serving_generation`, `wait_serving` and `settled` look at the alias's physical indexes and their
`_meta.flusso`; `make_concrete_index` makes an index as flusso did before generations.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import urllib3
from opensearchpy import OpenSearch, helpers
from psycopg import sql

from flusso_engine import keys
from flusso_engine.catalog import read_catalog
from flusso_engine.changes import doc_id
from flusso_engine.config import load_config, split_table
from flusso_engine.documents.sql import SqlDocumentBuilder

from .conftest import OPENSEARCH_URL
from .reseed_bound import LAG_S, Poll, Report, Span
from .reseed_writers import Writers

__all__ = ["LAG_S", "Load", "Poll", "Poller", "Report", "Writers", "generations", "make_concrete_index", "serving",
           "serving_generation", "settled", "wait_serving"]

INTERVAL_S = 0.05
SEARCH = json.dumps({"size": 1, "track_total_hits": True, "_source": False, "query": {"match_all": {}}})

# --- the poller ----------------------------------------------------------------------------------


class Poller:
    """A thread that every 50 ms counts and searches `alias` and reads the root table's row count.

    It talks HTTP itself (not through opensearch-py) to record the exact status of every answer.
    """

    def __init__(self, alias: str, dsn: str, table: str, url: str = OPENSEARCH_URL,
                 interval: float = INTERVAL_S, timeout: float = 10.0) -> None:
        self.alias, self.dsn, self.url, self.interval = alias, dsn, url.rstrip("/"), interval
        self._count_rows = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*split_table(table)))
        self._http = urllib3.PoolManager(maxsize=2, timeout=urllib3.Timeout(total=timeout), retries=False)
        self.polls: list[Poll] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reseed-poller", daemon=True)
        self._conn: psycopg.Connection | None = None
        self.start_t = self.end_t = 0.0

    @classmethod
    def for_config(cls, config: Path, index: str | None = None) -> Poller:
        cfg = load_config(config)
        index = index or next(iter(cfg.indexes))
        return cls(index, cfg.source.dsn.get_secret_value(), cfg.indexes[index].table)

    def start(self) -> Poller:
        self.start_t = time.monotonic()
        self._thread.start()
        while not self.polls and self._thread.is_alive():  # the first poll is in before anything else starts
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.end_t = time.monotonic()

    def __enter__(self) -> Poller:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def report(self, frozen: Sequence[Span] = (), deletes: Sequence[Span] = (), lag_s: float = LAG_S) -> Report:
        """The report of the polls so far; `deletes`: the writers' root deletes (`Writers.root_deletes`)."""
        return Report(list(self.polls), self.start_t, self.end_t or time.monotonic(), lag_s, list(frozen),
                      list(deletes))

    def _get(self, method: str, path: str, body: str | None = None) -> tuple[int | None, dict, str | None]:
        try:
            reply = self._http.request(method, f"{self.url}/{self.alias}/{path}", body=body,
                                       headers={"Content-Type": "application/json"})
        except urllib3.exceptions.HTTPError as err:
            return None, {}, f"{type(err).__name__}: {err}"
        try:
            data = json.loads(reply.data or b"{}")
        except ValueError:
            data = {}
        error = None if reply.status == 200 else reply.data.decode(errors="replace")[:300]
        return reply.status, data, error

    def _rows(self) -> tuple[int | None, Span | None]:
        sent = time.monotonic()
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
            rows = self._conn.execute(self._count_rows).fetchone()[0]
        except psycopg.Error:
            if self._conn is not None:
                self._conn.close()
            return None, None
        return rows, (sent, time.monotonic())

    def _poll(self) -> Poll:
        t = time.monotonic()
        c_status, counted, c_error = self._get("GET", "_count")
        s_status, searched, s_error = self._get("POST", "_search", SEARCH)
        rows, read = self._rows()
        ok = c_status == 200 and s_status == 200
        status = 200 if ok else (c_status if c_status != 200 else s_status)
        hits = searched.get("hits", {}) if s_status == 200 else {}
        first = (hits.get("hits") or [{}])[0].get("_index")
        return Poll(t, ok, status, counted.get("count") if c_status == 200 else None,
                    hits.get("total", {}).get("value") if hits else None, rows, read, first, c_error or s_error)

    def _loop(self) -> None:
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                self.polls.append(self._poll())
                next_at = max(next_at + self.interval, time.monotonic())
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            if self._conn is not None:
                self._conn.close()


class Load:
    """The poller, then the writers, started in that order and stopped in reverse; `report` gives
    the poller's report with the writers' root deletes."""

    def __init__(self, config: Path, rate: float = 20.0) -> None:
        self.poller = Poller.for_config(config)
        self.writers = Writers(load_config(config).source.dsn.get_secret_value(), rate=rate)

    def __enter__(self) -> Load:
        self.poller.start()
        self.writers.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.writers.stop()
        self.poller.stop()

    def report(self, frozen: Sequence[Span] = ()) -> Report:
        return self.poller.report(frozen, self.writers.root_deletes)


# --- the alias and its generations ---------------------------------------------------------------


@dataclass(frozen=True)
class Generation:
    index: str  # the physical index
    generation: int | None  # `_meta.flusso.generation`
    state: str | None  # building | serving | previous
    definition_hash: str | None
    seeded: bool


def serving(client: OpenSearch, alias: str) -> list[str]:
    """The physical indexes `alias` points at; [] when no alias has that name (a concrete index may)."""
    reply = client.indices.get_alias(name=alias, ignore=404)
    return sorted(k for k, v in reply.items() if isinstance(v, dict) and alias in v.get("aliases", {}))


def generations(client: OpenSearch, alias: str) -> list[Generation]:
    """Every physical index of `alias` (named `<alias>__g*`, or pointed at by it), by generation."""
    names = ",".join([f"{alias}__g*", *serving(client, alias)])
    out = []
    for index, body in client.indices.get_mapping(index=names, ignore=404).items():
        if not isinstance(body, dict) or "mappings" not in body:
            continue
        meta = (body["mappings"].get("_meta") or {}).get("flusso") or {}
        out.append(Generation(index, meta.get("generation"), meta.get("state"), meta.get("definition_hash"),
                              "seeded" in meta))
    return sorted(out, key=lambda g: (g.generation is None, g.generation or 0, g.index))


def serving_generation(client: OpenSearch, alias: str) -> int | None:
    """The generation of the one physical index `alias` points at; None when it is no alias (or
    points at more than one index, or at one without a generation)."""
    targets = serving(client, alias)
    if len(targets) != 1:
        return None
    found = [g.generation for g in generations(client, alias) if g.index == targets[0]]
    return found[0] if found else None


def wait_serving(client: OpenSearch, alias: str, newer_than: int | None, timeout: float = 60,
                 concrete_ok: bool = False) -> int | None:
    """Wait until `alias` serves a generation above `newer_than`; that generation, or None when the
    time is up, or at once when the name is a concrete index (unless `concrete_ok`: a migration)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        gen = serving_generation(client, alias)
        if gen is not None and (newer_than is None or gen > newer_than):
            return gen
        if not concrete_ok and client.indices.exists(index=alias) and not serving(client, alias):
            return None  # the old scheme: this name will never become an alias
        time.sleep(0.1)
    return None


def settled(client: OpenSearch, alias: str, newer_than: int | None = None, gone: Sequence[str] = ()) -> list[str]:
    """What is wrong with `alias` once every rebuild is over: it must point at exactly one index,
    that index the only `serving` generation (above `newer_than`), no `building` one left, at most
    one `previous` (index_lifecycle.keep_previous), and none of the indexes in `gone`."""
    gens = generations(client, alias)
    targets = serving(client, alias)
    listing = ", ".join(f"{g.index}={g.state}" for g in gens) or "none"
    out = []
    if len(targets) != 1:
        concrete = not targets and client.indices.exists(index=alias)
        out.append(f"{alias} is {'a concrete index, not an alias' if concrete else f'an alias of {targets}'}")
    by_state = Counter(g.state for g in gens)
    serving_gens = [g for g in gens if g.state == "serving"]
    if len(serving_gens) != 1 or (targets and serving_gens[0].index != targets[0]):
        out.append(f"the alias's target must be the one serving generation ({targets} -> {listing})")
    if serving_gens and newer_than is not None and (serving_gens[0].generation or 0) <= newer_than:
        out.append(f"still serving generation {serving_gens[0].generation}, not one above {newer_than}")
    if by_state["building"] or by_state["previous"] > 1:
        out.append(f"left behind: {listing}")
    if still := sorted(set(gone) & {g.index for g in gens}):
        out.append(f"abandoned generations not deleted: {still}")
    return out


def make_concrete_index(client: OpenSearch, config: Path, name: str | None = None) -> int:
    """An index as flusso made it before generations: a concrete index under the alias's name, with
    the mapping and every document (versioned by their build's position), `_meta.flusso` holding the
    definition hash and no generation. Returns the number of documents."""
    cfg = load_config(config)
    index = next(iter(cfg.indexes))
    name = name or index
    spec, dsn = cfg.indexes[index], cfg.source.dsn.get_secret_value()
    with psycopg.connect(keys.conninfo(dsn), autocommit=True) as conn:
        catalog = read_catalog(conn, cfg.tables())
        ids = conn.execute(sql.SQL("SELECT {} FROM {}").format(
            keys.key_text([sql.Identifier(k) for k in spec.key]), sql.Identifier(*split_table(spec.table)),
        )).fetchall()
    with SqlDocumentBuilder(cfg, catalog, dsn) as builder:
        body = builder.mapping(index)
        built = builder.build(index, [doc_id(row) for row in ids])
    client.indices.create(index=name, body=body)
    actions = [{"_index": name, "_id": i, "_version": built.position, "_version_type": "external_gte",
                "_source": json.loads(doc if isinstance(doc, str) else json.dumps(doc, default=str))}
               for i, doc in built.docs.items() if doc is not None]
    helpers.bulk(client, actions, refresh=True)
    return len(actions)
