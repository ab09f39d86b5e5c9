"""End-to-end benchmark: backfill documents/s, and live changes/s with commit-to-searchable latency.

    python bench/e2e.py [--books 100000] [--rates 500,2000] [--seconds 30] [--out bench/results/e2e.json]
                        [--profile DIR]

Uses the bookstore (examples/bookstore) in a database of its own (`flusso_bench_e2e`), generated
when it does not hold exactly `--books` books (the benchmark never adds or removes books, so the
data is reused from one run to the next), and its own slot, publication and index (`bench_e2e`,
`bench_e2e_books`), dropped at the end. `flusso` runs as a child process, as a user starts it. The
services are shared: before each measurement it waits (a bounded time) for the machine to be
quiet (`--quiet`), and it reports the CPU seconds of flusso, PostgreSQL, OpenSearch, itself, and
everything else ("other": the noise).

1. **Backfill**: `flusso backfill -c CFG --force`; wall time from the process start until the
   index, refreshed, counts every book; peak RSS of the process (VmHWM).
2. **Live**: `flusso run -c CFG` (seeded: straight to live). For each rate, writer threads (one
   connection each, autocommit: every change is a one-statement transaction of its own) commit the
   fixed mix `MIX` for `--seconds`, open loop: change `i` is due at `t0 + i / rate` whenever the
   previous one finished; what a saturated writer does not reach by the end is dropped (achieved <
   offered). Every `--sample-every`-th subtitle update is a latency sample: it writes the marker
   `m<run tag>-<seq>` (unique to this process) into a book of a reserved pool (one pending sample
   per book at a time), and a poller searches the index (`terms` on `subtitle.keyword`, read from
   doc values; not `mget`, which is realtime and would not show searchability) every `--poll-ms`;
   latency = time the search that first finds it was sent - time its commit returned. The index
   keeps its default 1 s refresh interval. After the writers stop, one more marker (the fence) is
   committed; the drain ends when the slot is acknowledged past the fence's commit and the fence is
   searchable (`drain_s`, from the writers' end). The engine kept up when the drain is short
   (`--keep-up-s`). Under a backlog a sample can show up early, rebuilt from the current rows for an
   older change still queued (an author renamed), so latencies then are a lower bound. The engine's
   own changes/s come from its `flushed N changes` log lines; a sample of the documents touched is
   compared with a fresh build after the drain. A rate `max` runs `--max-writers` writers with no
   pacing.

`--profile DIR` samples the flusso process with py-spy (idle threads included) during the backfill
and each rate; `bench/e2e_profile.py pyspy DIR/*.txt` summarizes where its threads spend the time.
Prints a table and writes JSON with the commit, the machine, every parameter and the figures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import yaml
from opensearchpy import OpenSearch
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "bookstore"))
from generate import generate  # noqa: E402

from flusso_engine.config import read_yaml  # noqa: E402

BOOKSTORE = ROOT / "examples" / "bookstore"
FLUSSO = [sys.executable, "-m", "flusso_engine.cli"]
DEFAULT_DSN = os.environ.get("FLUSSO_PG_DSN", "postgresql://postgres:postgres@127.0.0.1:5432/postgres")
DEFAULT_OPENSEARCH = os.environ.get("OPENSEARCH_URL", "http://127.0.0.1:9200")

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
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_FLUSHED = re.compile(r"flushed (\d+) changes -> (\d+) documents .* in ([0-9.]+)s")
_DONE = re.compile(r"backfill of \S+ done: (\d+) documents in ([0-9.]+)s")


# --- set-up -----------------------------------------------------------------------------------------


DIRTY = "bench_dirty"  # a table the writers create: the rows are no longer the generated ones


def ensure_data(admin_dsn: str, database: str, books: int, seed: int,
                pristine: bool = False, at_least: bool = False) -> tuple[str, float | None]:
    """The database's DSN, generating the bookstore unless it holds exactly `books` books (with
    `at_least`, `books` or more; with `pristine`, none changed by a writer since: a backfill is
    measured on the generated rows only); returns the generation's seconds too (None when reused)."""
    dsn = psycopg.conninfo.make_conninfo(admin_dsn, dbname=database)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    with psycopg.connect(dsn) as conn:
        exists = conn.execute("SELECT to_regclass('public.book') IS NOT NULL").fetchone()[0]
        have = conn.execute("SELECT count(*) FROM book").fetchone()[0] if exists else 0
        dirty = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (DIRTY,)).fetchone()[0]
        conn.commit()
        enough = have >= books if at_least else have == books
        if enough and not (pristine and dirty):
            return dsn, None
        why = "changed by writers since" if enough else f"it has {have:,}"
        log(f"generating {books:,} books into {database} ({why})")
        started = time.perf_counter()
        generate(conn, books, seed, progress=lambda line: log("  " + line))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(DIRTY)))
        conn.commit()
        return dsn, time.perf_counter() - started


def write_config(path: Path, dsn: str, opensearch: str, name: str) -> tuple[Path, str]:
    """The bookstore's flusso.yaml with this benchmark's database, slot, publication and index."""
    raw = read_yaml((BOOKSTORE / "flusso.yaml").read_text())
    raw["source"].update(dsn=dsn, slot=name, publication=name)
    raw["sink"]["hosts"] = [opensearch]
    index = f"{name}_books"
    raw["indexes"] = {index: raw["indexes"]["books"]}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, index


def flusso(*args: str, config: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*FLUSSO, *args, "-c", str(config)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM (flusso flushes, acks and exits), then SIGKILL after a minute."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- processes: memory and CPU ---------------------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (kB) of a live process; {} once it is gone."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def _ticks(pid: int | str, children: bool = False) -> float:
    """CPU seconds of a process (its threads; its reaped children too with `children`)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


OPENSEARCH_PORT = "9200"  # which JVM is "opensearch": the one serving this port (others are noise)


def cpu_snapshot(flusso_pid: int | None = None) -> dict[str, float]:
    """CPU seconds so far by group: postgres (postmaster with its reaped backends, and live ones),
    opensearch (the JVM serving OPENSEARCH_PORT; every JVM if none says so), flusso (the given
    process), this process, and the whole machine (busy, from /proc/stat)."""
    groups = {"postgres": 0.0, "opensearch": 0.0}
    jvms: list[tuple[str, float]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        if comm == "postgres" or comm.startswith("postgres:"):
            groups["postgres"] += _ticks(entry.name, children=ppid == 1)
        elif comm == "java":
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except (FileNotFoundError, ProcessLookupError):
                continue
            jvms.append((cmdline, _ticks(entry.name)))
    ours = [t for cmd, t in jvms if f"http.port={OPENSEARCH_PORT}\0" in cmd + "\0"]
    groups["opensearch"] = sum(ours) if ours else sum(t for _, t in jvms)
    if flusso_pid is not None:
        groups["flusso"] = _ticks(flusso_pid)
    groups["bench"] = _ticks(os.getpid())  # this process: the writers and the poller
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in cpu]
    idle = values[3] + values[4]  # idle + iowait
    groups["machine_busy"] = (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    return groups


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    out = {k: round(after[k] - before[k], 2) for k in after if k in before}
    # everything else the machine did meanwhile (other users' processes): the noise
    out["other"] = round(out["machine_busy"] - sum(v for k, v in out.items() if k != "machine_busy"), 2)
    return out


def busy_share(seconds: float = 2.0) -> float:
    """The share of the machine's CPUs busy over `seconds`."""
    before = cpu_snapshot()["machine_busy"]
    time.sleep(seconds)
    return (cpu_snapshot()["machine_busy"] - before) / seconds / (os.cpu_count() or 1)


def wait_quiet(max_busy: float, timeout: float) -> float:
    """Wait (up to `timeout`) until the machine is less than `max_busy` busy: the services are shared
    and other users' tests make the figures noisy. Returns the last busy share seen."""
    deadline = time.monotonic() + timeout
    while True:
        busy = busy_share()
        if busy <= max_busy or time.monotonic() > deadline:
            if busy > max_busy:
                log(f"the machine is still {busy:.0%} busy: measuring anyway")
            return round(busy, 3)
        log(f"the machine is {busy:.0%} busy: waiting for < {max_busy:.0%}")


class Watch(threading.Thread):
    """Polls a process's memory until it exits; keeps the peak (VmHWM, or the largest VmRSS seen)."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_kb = 0
        self.last_cpu = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            status = _status(self.pid)
            if not status:
                return
            self.peak_kb = max(self.peak_kb, status.get("VmHWM", 0), status.get("VmRSS", 0))
            self.last_cpu = _ticks(self.pid) or self.last_cpu
            self.done.wait(self.every)


def opensearch_stats(client: OpenSearch, index: str) -> dict[str, float]:
    """Cumulative OpenSearch figures (ms, counts) of the index and the node's JVM collections."""
    out: dict[str, float] = {}
    try:
        prim = client.indices.stats(index=index, metric="indexing,merge,refresh,search")["_all"]["primaries"]
        out.update({
            "index_ms": prim["indexing"]["index_time_in_millis"],
            "index_ops": prim["indexing"]["index_total"],
            "merge_ms": prim["merges"]["total_time_in_millis"],
            "refresh_ms": prim["refresh"]["total_time_in_millis"],
            "refreshes": prim["refresh"]["total"],
            "search_ms": prim["search"]["query_time_in_millis"] + prim["search"]["fetch_time_in_millis"],
            "searches": prim["search"]["query_total"],
        })
    except Exception as err:  # noqa: BLE001 - figures for the report only (the index may be missing)
        log(f"could not read the index's stats: {err}")
    try:
        for node in client.nodes.stats(metric="jvm")["nodes"].values():
            for name, gc in node["jvm"]["gc"]["collectors"].items():
                out[f"gc_{name}_ms"] = out.get(f"gc_{name}_ms", 0) + gc["collection_time_in_millis"]
    except Exception as err:  # noqa: BLE001 - figures for the report only
        log(f"could not read OpenSearch stats: {err}")
    return out


def stats_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after if k in before}


# --- the flusso log ---------------------------------------------------------------------------------


def log_lines(path: Path, since: float, until: float) -> list[tuple[float, str]]:
    """(wall time, line) of the log lines written between `since` and `until` (time.time())."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = _LOG_TIME.match(line)
        if not m:
            continue
        t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if since <= t <= until:
            out.append((t, line))
    return out


def batch_stats(lines: list[tuple[float, str]], seconds: float) -> dict[str, Any]:
    """What the engine's `flushed` lines say: changes and documents processed, batches, and how busy
    the worker was (the share of the window spent handling batches)."""
    changes = docs = batches = 0
    busy = 0.0
    sizes = []
    for _, line in lines:
        m = _FLUSHED.search(line)
        if m:
            batches += 1
            changes += int(m.group(1))
            docs += int(m.group(2))
            busy += float(m.group(3))
            sizes.append(int(m.group(1)))
    return {
        "batches": batches,
        "changes": changes,
        "documents": docs,
        "changes_per_s": round(changes / seconds, 1) if seconds else None,
        "documents_per_s": round(docs / seconds, 1) if seconds else None,
        "mean_changes_per_batch": round(changes / batches, 1) if batches else None,
        "mean_batch_ms": round(1000 * busy / batches, 1) if batches else None,
        "worker_busy": round(busy / seconds, 3) if seconds else None,
    }


# --- backfill ---------------------------------------------------------------------------------------


def py_spy(pid: int, output: Path, seconds: float | None = None) -> subprocess.Popen:
    """py-spy sampling `pid` (idle threads too: where the worker waits) into a raw collapsed-stack
    file; summarize it with `bench/e2e_profile.py pyspy FILE`."""
    spy = Path(sys.executable).with_name("py-spy")
    cmd = [str(spy), "record", "--pid", str(pid), "--idle", "--threads", "--nonblocking", "--format", "raw",
           "-o", str(output)]
    if seconds:
        cmd += ["--duration", str(int(seconds))]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_backfill(config: Path, index: str, dsn: str, client: OpenSearch, workdir: Path,
                 profile: Path | None = None, quiet: tuple[float, float] = (1.0, 0.0)) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT count(*) FROM book").fetchone()[0]
    busy_before = wait_quiet(*quiet)
    gc_before = {k: v for k, v in opensearch_stats(client, index).items() if k.startswith("gc_")}
    log_path = workdir / "backfill.log"
    cpu0 = cpu_snapshot()
    started = time.monotonic()
    with log_path.open("w") as out:
        proc = subprocess.Popen([*FLUSSO, "backfill", "-c", str(config), "--force"], stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT)
        watch = Watch(proc.pid, every=0.1)
        watch.start()
        cpu_flusso = 0.0
        spy = None
        while proc.poll() is None:
            cpu_flusso = _ticks(proc.pid) or cpu_flusso
            if profile is not None and spy is None and "backfill of" in log_path.read_text():
                spy = py_spy(proc.pid, profile / "backfill.txt")
            time.sleep(0.1)
        if spy is not None:
            spy.wait(30)
        exited = time.monotonic()
    watch.done.set()
    watch.join()
    if proc.returncode != 0:
        raise RuntimeError(f"flusso backfill exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
    while True:
        client.indices.refresh(index=index)
        count = client.count(index=index)["count"]
        if count >= rows or time.monotonic() - exited > 60:
            break
        time.sleep(0.1)
    searchable = time.monotonic()
    os_stats = opensearch_stats(client, index)  # the index was recreated: its counters start at 0 ...
    os_stats.update(stats_delta(gc_before, os_stats))  # ... the node's do not
    cpu0["flusso"] = 0.0
    cpu = cpu_delta(cpu0, {**cpu_snapshot(), "flusso": max(cpu_flusso, watch.last_cpu)})
    text = log_path.read_text()
    m = _DONE.search(text)
    wall = searchable - started
    return {
        "rows": rows,
        "documents": count,
        "wall_s": round(wall, 2),
        "docs_per_s": round(count / wall, 1),
        "engine_s": float(m.group(2)) if m else None,  # the engine's own: from the index recreate on
        "engine_docs_per_s": round(int(m.group(1)) / float(m.group(2)), 1) if m else None,
        "process_exit_s": round(exited - started, 2),
        "peak_rss_mb": round(watch.peak_kb / 1024, 1),
        "cpu_s": cpu,
        "machine_busy_before": busy_before,
        "opensearch": os_stats,
        "complete": count == rows,
    }


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


def pct(values: list[float], p: float) -> float:
    """The p-th percentile of sorted `values` (nearest rank)."""
    if not values:
        return float("nan")
    k = max(0, min(len(values) - 1, round(p / 100 * len(values) + 0.5) - 1))
    return values[k]


def slot_lag(dsn: str, slot: str) -> int | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
    return row[0] if row else None


def wait_confirmed(dsn: str, slot: str, lsn: str, timeout: float) -> float | None:
    """The time (monotonic) the slot's confirmed position reached `lsn`; None after `timeout`."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots "
                               "WHERE slot_name = %s", (lsn, slot)).fetchone()
            if row and row[0]:
                return time.monotonic()
            time.sleep(0.05)
    return None


class LagSampler(threading.Thread):
    def __init__(self, dsn: str, slot: str, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.dsn, self.slot, self.every = dsn, slot, every
        self.stop = threading.Event()
        self.values: list[int] = []

    def run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                lag = slot_lag(self.dsn, self.slot)
            except psycopg.Error:
                continue
            if lag is not None:
                self.values.append(lag)


def check_sample(config_path: Path, index: str, client: OpenSearch, ids: list[int]) -> dict[str, Any]:
    """Documents touched by the run, as indexed, against a fresh build from the database."""
    from flusso_engine.catalog import read_catalog
    from flusso_engine.config import load_config
    from flusso_engine.documents.sql import SqlDocumentBuilder

    config = load_config(config_path)
    dsn = config.source.dsn.get_secret_value()
    with psycopg.connect(dsn, autocommit=True) as conn:
        catalog = read_catalog(conn, config.tables())
    with SqlDocumentBuilder(config, catalog, dsn) as builder:
        expected = builder.build(index, [str(i) for i in ids]).docs
    expected = json.loads(json.dumps(expected, default=str))
    reply = client.mget(index=index, body={"ids": [str(i) for i in ids]})
    actual = {d["_id"]: d.get("_source") for d in reply["docs"]}
    differ = [i for i in expected if expected[i] != actual.get(i)]
    return {"checked": len(ids), "differing": len(differ), "first_differing": differ[:5]}


def live_rate(args: argparse.Namespace, rate: float | None, proc_log: Path, flusso_pid: int, dsn: str,
              slot: str, index: str, client: OpenSearch, pools: Pools, config: Path, seq_start: int,
              ) -> dict[str, Any]:
    label = "max" if rate is None else f"{rate:g}"
    threads = args.max_writers if rate is None else args.writers
    busy_before = wait_quiet(args.quiet, args.quiet_timeout)
    log(f"live at {label} changes/s for {args.seconds:g}s ({threads} writers)")
    samples = Samples()
    poller = Poller(client, index, samples, pools, args.poll_ms / 1000)
    lags = LagSampler(dsn, slot)
    poller.start()
    lags.start()
    spy = None
    if args.profile is not None:
        spy = py_spy(flusso_pid, args.profile / f"live-{label}.txt", args.seconds)
    cpu0 = cpu_snapshot(flusso_pid)
    os0 = opensearch_stats(client, index)
    wall0 = time.time()
    writer = Writer(dsn, pools, samples, rate, args.seconds, threads, args.sample_every, seq_start, args.seed)
    written = writer.run()
    writer_end = time.monotonic()
    wall_end = time.time()
    cpu = cpu_delta(cpu0, cpu_snapshot(flusso_pid))
    os_stats = stats_delta(os0, opensearch_stats(client, index))
    lag_at_end = slot_lag(dsn, slot)
    if spy is not None:
        spy.wait(30)
    # The fence: a marker committed after every change of the run. Its document can turn searchable
    # early (another change still queued rebuilds its book from the current rows), so the drain
    # ends when the slot is acknowledged past the fence's commit, and the fence is searchable.
    fence_book = None
    while fence_book is None:
        fence_book = pools.sample_book()
        if fence_book is None:
            time.sleep(0.05)
    fence = f"fence{RUN_TAG}-{seq_start}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE book SET subtitle = %s WHERE id = %s", (fence, fence_book))
        fence_lsn = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
    samples.add(fence, fence_book, time.monotonic())
    acked = wait_confirmed(dsn, slot, fence_lsn, args.drain_timeout)
    deadline = time.monotonic() + 10
    while fence not in samples.seen and time.monotonic() < deadline:
        time.sleep(0.02)
    drained = None if acked is None or fence not in samples.seen else max(acked, samples.seen[fence])
    drain_s = None if drained is None else drained - writer_end
    # the samples still pending had their chance: the fence came after them
    time.sleep(args.poll_ms / 1000 * 2)
    poller.stop.set()
    lags.stop.set()
    poller.join()
    lags.join()
    wall_drained = time.time()
    with samples.lock:
        latencies = sorted(v for k, v in samples.latencies.items() if k != fence)
        missing = len(samples.pending)
        samples.pending.clear()
    with pools.lock:
        pools.pending_books.clear()
    window = wall_end - wall0
    engine_in_window = batch_stats(log_lines(proc_log, wall0, wall_end), window)
    engine_total = batch_stats(log_lines(proc_log, wall0, wall_drained), wall_drained - wall0)
    with pools.lock:
        touched = sorted(pools.touched)
        pools.touched.clear()
    rng = random.Random(args.seed)
    check = check_sample(config, index, client, rng.sample(touched, min(len(touched), args.check)))
    keep_up = drain_s is not None and drain_s <= args.keep_up_s
    return {
        "rate": label,
        "offered_per_s": rate,
        "writers": threads,
        "writer": written,
        "latency_ms": {
            "samples": len(latencies),
            "missing": missing,
            "p50": round(1000 * pct(latencies, 50)) if latencies else None,
            "p95": round(1000 * pct(latencies, 95)) if latencies else None,
            "p99": round(1000 * pct(latencies, 99)) if latencies else None,
            "max": round(1000 * latencies[-1]) if latencies else None,
            "mean": round(1000 * statistics.fmean(latencies)) if latencies else None,
        },
        "engine_during_writes": engine_in_window,
        "engine_until_drained": engine_total,
        "sustained_per_s": round(engine_total["changes"] / (wall_drained - wall0), 1),
        "drain_s": round(drain_s, 2) if drain_s is not None else None,
        "fence_searchable_s": round(samples.seen[fence] - writer_end, 2) if fence in samples.seen else None,
        "kept_up": keep_up,
        "slot_lag_bytes": {"at_end": lag_at_end, "max": max(lags.values) if lags.values else None},
        "flusso_rss_mb": round(_status(flusso_pid).get("VmRSS", 0) / 1024, 1),
        "cpu_s": cpu,
        "machine_busy_before": busy_before,
        "opensearch": os_stats,
        "poller": {"searches": poller.searches, "errors": poller.errors},
        "check": check,
    }


def run_live(args: argparse.Namespace, config: Path, dsn: str, slot: str, index: str, client: OpenSearch,
             workdir: Path) -> dict[str, Any]:
    proc_log = workdir / "run.log"
    with proc_log.open("w") as out:
        proc = subprocess.Popen([*FLUSSO, "--log-level", "DEBUG", "run", "-c", str(config)], stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while "live capture started" not in proc_log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"flusso run did not go live:\n{proc_log.read_text()[-3000:]}")
            time.sleep(0.1)
        if "backfill of" in proc_log.read_text() and "done" in proc_log.read_text():
            log("warning: flusso run backfilled before going live")
        pools = Pools(dsn, args.pool_every)
        results = []
        for i, rate in enumerate(args.rates):
            results.append(live_rate(args, rate, proc_log, proc.pid, dsn, slot, index, client, pools, config,
                                     seq_start=(i + 1) * 10**8))
            if proc.poll() is not None:
                raise RuntimeError(f"flusso run exited {proc.returncode}:\n{proc_log.read_text()[-3000:]}")
        peak = _status(proc.pid).get("VmHWM", 0)
    finally:
        stop_process(proc)
    return {"rates": results, "flusso_peak_rss_mb": round(peak / 1024, 1), "exit_code": proc.returncode}


# --- report -----------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), None)
    return {"nproc": os.cpu_count(), "mem_total_kb": int(mem.split()[1]), "cpu": model,
            "load_avg_at_start": os.getloadavg()}


def git_commit() -> dict[str, Any]:
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, cwd=ROOT).stdout.strip()
    return {"commit": head, "dirty": bool(dirty)}


def table(report: dict[str, Any]) -> str:
    import pandas as pd

    b = report["backfill"]
    lines = [
        f"{report['books']:,} books; backfill: {b['documents']:,} documents in {b['wall_s']} s wall "
        f"= {b['docs_per_s']:,.0f} docs/s (engine's own {b['engine_docs_per_s']} docs/s over {b['engine_s']} s), "
        f"peak RSS {b['peak_rss_mb']} MB, CPU s {b['cpu_s']}",
        "",
    ]
    rows = []
    for r in report["live"]["rates"]:
        lat = r["latency_ms"]
        rows.append({
            "offered/s": r["rate"],
            "written/s": r["writer"]["achieved_per_s"],
            "engine/s (writes)": r["engine_during_writes"]["changes_per_s"],
            "sustained/s": r["sustained_per_s"],
            "docs/s": r["engine_during_writes"]["documents_per_s"],
            "p50 ms": lat["p50"], "p95 ms": lat["p95"], "p99 ms": lat["p99"], "max ms": lat["max"],
            "samples": lat["samples"],
            "drain s": r["drain_s"],
            "kept up": r["kept_up"],
            "worker busy": r["engine_during_writes"]["worker_busy"],
            "batch": r["engine_during_writes"]["mean_changes_per_batch"],
            "check": f"{r['check']['differing']}/{r['check']['checked']}",
        })
    if rows:
        lines.append(pd.DataFrame(rows).set_index("offered/s").astype(object).fillna("").to_string())
    return "\n".join(lines)


def parse_rates(text: str) -> list[float | None]:
    return [None if r.strip() == "max" else float(r) for r in text.split(",") if r.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--books", type=int, default=100_000)
    parser.add_argument("--rates", type=parse_rates, default=parse_rates("500,2000"),
                        help="offered changes/s, comma-separated; `max` runs the writers unpaced")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of writes per rate")
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="an administrative DSN; the data goes in --database")
    parser.add_argument("--database", default="flusso_bench_e2e")
    parser.add_argument("--opensearch", default=DEFAULT_OPENSEARCH)
    parser.add_argument("--name", default="bench_e2e", help="slot and publication; the index is NAME_books")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "e2e.json")
    parser.add_argument("--writers", type=int, default=4, help="writer connections for a paced rate")
    parser.add_argument("--max-writers", type=int, default=2, help="writer connections for `max`")
    parser.add_argument("--sample-every", type=int, default=10, help="every Nth subtitle update is a sample")
    parser.add_argument("--pool-every", type=int, default=10, help="books with id %% N == 0 carry the samples")
    parser.add_argument("--poll-ms", type=float, default=50.0)
    parser.add_argument("--keep-up-s", type=float, default=5.0, help="a drain this short means it kept up")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--check", type=int, default=500, help="touched documents compared with a fresh build")
    parser.add_argument("--quiet", type=float, default=0.25,
                        help="before each measurement, wait until the machine is at most this busy")
    parser.add_argument("--quiet-timeout", type=float, default=180.0, help="... for at most this long")
    parser.add_argument("--profile", type=Path, default=None,
                        help="a directory: py-spy the flusso process during the backfill and each rate")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    global OPENSEARCH_PORT  # noqa: PLW0603 - set once, from the command line
    OPENSEARCH_PORT = str(urlsplit(args.opensearch).port or 9200)

    report: dict[str, Any] = {"benchmark": "e2e", **git_commit(), "machine": machine(),
                              "started_at": datetime.now().isoformat(timespec="seconds")}
    dsn, generated = ensure_data(args.dsn, args.database, args.books, args.seed)
    client = OpenSearch(hosts=[args.opensearch], timeout=60)
    workdir = Path(tempfile.mkdtemp(prefix="flusso-bench-e2e-"))
    config, index = write_config(workdir / "flusso.yaml", dsn, args.opensearch, args.name)
    flusso("teardown", "--yes", config=config)  # a slot a crashed run left behind
    report.update(books=args.books, generation_s=generated, index=index, slot=args.name,
                  parameters={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                  mix=dict(MIX), workdir=str(workdir))
    try:
        log("backfill")
        report["backfill"] = run_backfill(config, index, dsn, client, workdir, args.profile,
                                          (args.quiet, args.quiet_timeout))
        log(f"  {report['backfill']}")
        if args.rates:
            report["live"] = run_live(args, config, dsn, args.name, index, client, workdir)
    finally:
        done = flusso("teardown", "--yes", config=config)
        if done.returncode != 0:
            log(f"teardown failed: {done.stderr.strip()}")
        try:
            client.indices.delete(index=index, ignore=404)
            client.indices.delete(index=f"{index}-deadletter", ignore=404)
        except Exception as err:  # noqa: BLE001 - best effort
            log(f"could not delete index {index}: {err}")
    if "backfill" in report and "live" in report:
        print()
        print(table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
