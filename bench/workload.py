"""The live workload both systems are measured with: the writers' change mix and the latency samples.

`Writer` commits the mix `MIX` at an offered rate, open loop, over its own connections (every
change a one-statement transaction); every few subtitle updates carry a marker (`Samples`) into a
book of a reserved pool (`Pools`), and `Poller` searches the index for the pending markers: a
sample's latency is the time from its commit to the first search that finds it. `Probe` is one
rate's set of observers (samples, poller, slot-lag sampler) with the way a rate ends.
"""

from __future__ import annotations

import itertools
import random
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import psycopg
from opensearchpy import OpenSearch
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DIRTY, LagSampler, pct  # noqa: E402

# The change mix: (kind, share). Each change is one statement in a transaction of its own.
MIX: list[tuple[str, float]] = [
    ("book.subtitle", 0.30),  # the marker; one doc
    ("review.insert", 0.15),  # one doc
    ("review.update", 0.15),  # rating, body, helpful: one doc
    ("review.delete", 0.10),  # one doc
    ("review.book_id", 0.05),  # a review moves: two docs (old and new parent)
    ("book.publisher_id", 0.05),  # a book moves to another publisher: one doc
    ("book.price", 0.05),  # one doc
    ("book_detail.update", 0.05),  # one doc
    ("author.name", 0.05),  # fan-out: ~10 books per author
    ("reader.name", 0.05),  # fan-out: ~5 reviews (books) per reader
]
# Tags this process's markers: the data is reused from one run to the next, so a plain `m<seq>` can
# already sit in some book (left by an earlier run) and be "found" before its own change is searchable.
RUN_TAG = format(int(time.time() * 1000) % 16**6, "06x")


# --- live: the writer -------------------------------------------------------------------------------


class Pools:
    """The rows the writers pick from, and what they have done to them (shared, under one lock)."""

    def __init__(self, dsn: str, pool_every: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            self.books = conn.execute("SELECT max(id) FROM book").fetchone()[0]
            self.publishers = conn.execute("SELECT max(id) FROM publisher").fetchone()[0]
            self.authors = conn.execute("SELECT max(id) FROM author").fetchone()[0]
            self.readers = conn.execute("SELECT max(id) FROM reader").fetchone()[0]
            self.reviews = [r[0] for r in conn.execute("SELECT id FROM review")]
            self.details = conn.execute("SELECT max(book_id) FROM book_detail").fetchone()[0]
        self.pool_every = pool_every  # books with id % pool_every == 0 carry the latency samples
        self.lock = threading.Lock()
        self.inserted: deque[int] = deque()
        self.gone: set[int] = set()
        self.pending_books: set[int] = set()
        self.pool_cursor = 0
        self.touched: set[int] = set()

    def other_book(self, rng: random.Random) -> int:
        while True:
            b = rng.randint(1, self.books)
            if b % self.pool_every:
                return b

    def sample_book(self) -> int | None:
        """The next pool book with no sample pending, or None when every one has."""
        pool = self.books // self.pool_every
        with self.lock:
            for _ in range(pool):
                self.pool_cursor = self.pool_cursor % pool + 1
                book = self.pool_cursor * self.pool_every
                if book not in self.pending_books:
                    self.pending_books.add(book)
                    return book
        return None

    def review(self, rng: random.Random) -> int:
        with self.lock:
            while True:
                if self.inserted and rng.random() < 0.3:
                    r = self.inserted[rng.randrange(len(self.inserted))]
                else:
                    r = self.reviews[rng.randrange(len(self.reviews))]
                if r not in self.gone:
                    return r

    def take_review(self, rng: random.Random) -> int:
        """A review to delete: the oldest one inserted by the benchmark, else an original one."""
        with self.lock:
            while True:
                r = self.inserted.popleft() if self.inserted else self.reviews[rng.randrange(len(self.reviews))]
                if r not in self.gone:
                    self.gone.add(r)
                    return r


class Samples:
    """Latency samples: marker -> (book, commit time, visible time)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[str, tuple[int, float]] = {}
        self.latencies: dict[str, float] = {}
        self.seen: dict[str, float] = {}

    def add(self, marker: str, book: int, committed: float) -> None:
        with self.lock:
            self.pending[marker] = (book, committed)

    def oldest(self, n: int) -> list[str]:
        with self.lock:
            return list(itertools.islice(self.pending, n))

    def visible(self, markers: list[str], at: float, pools: Pools) -> None:
        with self.lock:
            for marker in markers:
                found = self.pending.pop(marker, None)
                if found is None:
                    continue
                book, committed = found
                self.latencies[marker] = at - committed
                self.seen[marker] = at
                with pools.lock:
                    pools.pending_books.discard(book)


class Poller(threading.Thread):
    """Searches the index for the pending markers every `every` seconds."""

    def __init__(self, client: OpenSearch, index: str, samples: Samples, pools: Pools, every: float) -> None:
        super().__init__(daemon=True, name="poller")
        self.client, self.index, self.samples, self.pools, self.every = client, index, samples, pools, every
        self.stop = threading.Event()
        self.searches = 0
        self.errors = 0

    def run(self) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            markers = self.samples.oldest(5000)
            if markers:
                try:
                    # the marker from doc values: no stored _source read, no hit count
                    reply = self.client.search(
                        index=self.index,
                        body={"size": len(markers), "_source": False, "track_total_hits": False,
                              "docvalue_fields": ["subtitle.keyword"],
                              "query": {"bool": {"filter": {"terms": {"subtitle.keyword": markers}}}}},
                    )
                    self.searches += 1
                    hits = [h.get("fields", {}).get("subtitle.keyword", [None])[0] for h in reply["hits"]["hits"]]
                    self.samples.visible([h for h in hits if h], began, self.pools)
                except Exception:  # noqa: BLE001 - a failed poll is retried at the next tick
                    self.errors += 1
            self.stop.wait(max(0.0, self.every - (time.monotonic() - began)))


class Writer:
    """Commits the mix at `rate` changes/s (None: as fast as it can) for `seconds`, open loop,
    over `threads` connections."""

    def __init__(self, dsn: str, pools: Pools, samples: Samples, rate: float | None, seconds: float,
                 threads: int, sample_every: int, seq_start: int, seed: int) -> None:
        self.dsn, self.pools, self.samples = dsn, pools, samples
        self.rate, self.seconds, self.threads = rate, seconds, threads
        self.sample_every = sample_every
        self.seq = itertools.count(seq_start)
        self.seq_start = seq_start
        self.seed = seed
        kinds, weights = zip(*MIX, strict=True)
        self.kinds, self.cum = kinds, list(itertools.accumulate(weights))
        self.lock = threading.Lock()
        self.done: dict[str, int] = dict.fromkeys(kinds, 0)
        self.noops = 0
        self.errors: list[str] = []
        self.late: list[float] = []
        self.subtitles = 0
        self.last_commit = 0.0
        self.t0 = 0.0

    def run(self) -> dict[str, Any]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ()").format(sql.Identifier(DIRTY)))
        self.t0 = time.monotonic() + 0.05
        threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(self.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = sum(self.done.values())
        elapsed = max(self.last_commit - self.t0, 1e-9)
        late = sorted(self.late)
        return {
            "changes": total,
            "seconds": round(elapsed, 2),
            "achieved_per_s": round(total / elapsed, 1),
            "by_kind": dict(self.done),
            "noops": self.noops,
            "errors": len(self.errors),
            "first_errors": self.errors[:3],
            "late_p50_ms": round(1000 * pct(late, 50), 1) if late else None,
            "late_max_ms": round(1000 * late[-1], 1) if late else None,
        }

    def _loop(self, n: int) -> None:
        rng = random.Random(f"{self.seed}:{n}:{self.seq_start}")
        end = self.t0 + self.seconds
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SET application_name = 'flusso_bench_e2e_writer'")
            while True:
                seq = next(self.seq)
                now = time.monotonic()
                if now >= end:
                    return  # what a saturated writer did not get to is dropped: achieved < offered
                if self.rate is not None:
                    due = self.t0 + (seq - self.seq_start) / self.rate
                    if due >= end:
                        return
                    if due > now:
                        time.sleep(due - now)
                    else:
                        self.late.append(now - due)
                u = rng.random() * self.cum[-1]
                kind = next(k for k, c in zip(self.kinds, self.cum, strict=True) if u < c)
                try:
                    rows = self._change(conn, kind, seq, rng)
                except psycopg.Error as err:
                    with self.lock:
                        self.errors.append(f"{kind}: {str(err).strip()[:200]}")
                    if conn.broken:
                        return
                    continue
                with self.lock:
                    self.done[kind] += 1
                    self.noops += rows == 0
                    self.last_commit = max(self.last_commit, time.monotonic())

    def _change(self, conn: psycopg.Connection, kind: str, seq: int, rng: random.Random) -> int:
        p = self.pools
        if kind == "book.subtitle":
            with self.lock:
                self.subtitles += 1
                sampled = self.subtitles % self.sample_every == 0
            book = p.sample_book() if sampled else None
            if book is None:
                book = p.other_book(rng)
            marker = f"m{RUN_TAG}-{seq}"
            rows = conn.execute("UPDATE book SET subtitle = %s WHERE id = %s", (marker, book), prepare=True).rowcount
            if sampled and book % p.pool_every == 0:
                self.samples.add(marker, book, time.monotonic())
            self._touch(book)
            return rows
        if kind == "review.insert":
            book = p.other_book(rng)
            rid = conn.execute(
                "INSERT INTO review (book_id, reader_id, rating, body, helpful) VALUES (%s, %s, %s, %s, 0) "
                "RETURNING id",
                (book, rng.randint(1, p.readers), rng.randint(1, 5), f"bench review {seq}"), prepare=True,
            ).fetchone()[0]
            with p.lock:
                p.inserted.append(rid)
            self._touch(book)
            return 1
        if kind == "review.update":
            return conn.execute(
                "UPDATE review SET rating = %s, body = %s, helpful = helpful + 1 WHERE id = %s",
                (rng.randint(1, 5), f"edited {seq}", p.review(rng)), prepare=True,
            ).rowcount
        if kind == "review.delete":
            return conn.execute("DELETE FROM review WHERE id = %s", (p.take_review(rng),), prepare=True).rowcount
        if kind == "review.book_id":
            book = p.other_book(rng)
            self._touch(book)
            return conn.execute("UPDATE review SET book_id = %s WHERE id = %s", (book, p.review(rng)),
                                prepare=True).rowcount
        if kind == "book.publisher_id":
            book = p.other_book(rng)
            self._touch(book)
            return conn.execute("UPDATE book SET publisher_id = %s WHERE id = %s",
                                (rng.randint(1, p.publishers), book), prepare=True).rowcount
        if kind == "book.price":
            book = p.other_book(rng)
            self._touch(book)
            return conn.execute("UPDATE book SET price = %s WHERE id = %s",
                                (rng.randrange(499, 9999) / 100, book), prepare=True).rowcount
        if kind == "book_detail.update":
            book = p.other_book(rng)
            self._touch(book)
            return conn.execute("UPDATE book_detail SET weight_grams = %s WHERE book_id = %s",
                                (rng.randint(80, 2500), book), prepare=True).rowcount
        if kind == "author.name":
            return conn.execute("UPDATE author SET name = %s WHERE id = %s",
                                (f"Author {seq}", rng.randint(1, p.authors)), prepare=True).rowcount
        if kind == "reader.name":
            return conn.execute("UPDATE reader SET name = %s WHERE id = %s",
                                (f"Reader {seq}", rng.randint(1, p.readers)), prepare=True).rowcount
        raise AssertionError(kind)

    def _touch(self, book: int) -> None:
        with self.pools.lock:
            if len(self.pools.touched) < 50_000:
                self.pools.touched.add(book)



def rate_label(rate: float | None) -> str:
    return "max" if rate is None else f"{rate:g}"


class Probe:
    """One rate's observers: its samples, the poller that searches for them and, given a slot, the
    slot's lag every second."""

    def __init__(self, client: OpenSearch, index: str, pools: Pools, poll_ms: float, dsn: str | None = None,
                 slot: str | None = None) -> None:
        self.pools, self.poll_ms = pools, poll_ms
        self.samples = Samples()
        self.poller = Poller(client, index, self.samples, pools, poll_ms / 1000)
        self.lags = LagSampler(dsn, slot) if slot is not None else None

    def start(self) -> None:
        self.poller.start()
        if self.lags:
            self.lags.start()

    def stop(self) -> None:
        """After the drain: the samples still pending had their chance (the fence came after them),
        two more polls."""
        time.sleep(self.poll_ms / 1000 * 2)
        self.poller.stop.set()
        if self.lags:
            self.lags.stop.set()
        self.poller.join()
        if self.lags:
            self.lags.join()

    def collect(self, fence: str) -> tuple[list[float], dict[str, tuple[int, float]], list[int]]:
        """The sorted latencies seen (not the fence's), the samples still pending (book, commit time;
        the fence too when it was not seen) and the books touched; each cleared for the next rate."""
        with self.samples.lock:
            latencies = sorted(v for k, v in self.samples.latencies.items() if k != fence)
            pending = dict(self.samples.pending)
            self.samples.pending.clear()
        with self.pools.lock:
            self.pools.pending_books.clear()
            touched = sorted(self.pools.touched)
            self.pools.touched.clear()
        return latencies, pending, touched

    def lag_bytes(self, at_end: int | None) -> dict[str, int | None] | None:
        """The `slot_lag_bytes` figures: at the writers' end, and the largest sampled (None: no slot)."""
        if self.lags is None:
            return None
        return {"at_end": at_end, "max": max(self.lags.values) if self.lags.values else None}

    def searches(self) -> dict[str, int]:
        return {"searches": self.poller.searches, "errors": self.poller.errors}
