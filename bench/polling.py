"""`make bench-polling` (issue #14): what `capture: polling` costs beside `capture: wal`, on the bookstore.

    python bench/run.py --scenario polling [--books 10000] [--polling-database flusso_bench_polling]
                        [--writer-seconds 15] [--polling-rates 50,200] [--live-seconds 20]
                        [--poll-interval-ms 200] [--note TEXT]

1. **Writer overhead.** A writer commits as fast as it can (closed loop, autocommit: every statement a
   transaction of its own, each commit waiting for its WAL flush as the server is configured) over 1
   and 2 connections, two workloads: `update` (single-row UPDATEs of a random book's subtitle) and
   `mix` (half such updates, a quarter review inserts, a quarter deletes of the reviews it inserted).
   Each (workload, connections) is measured four ways: `polling` (`capture: polling` installed,
   `flusso run` live; `--writer-seconds`), then `none` (no capture) and `triggers` (the same install
   with flusso stopped: the triggers' and the change log's cost alone) in alternating 1 s slices,
   `--writer-seconds` each, the row triggers disabled for the `none` slices (`paired`: the shared
   machine's noise falls on both, each pair of slices gives a ratio), then `wal` (publication and
   slot, `flusso run` live, the slot active). A flusso way starts from nothing (`flusso teardown`,
   then `flusso run` backfills and goes live; the writer starts once it is live) and is torn down
   after: an unpaced writer outruns flusso, and the backlog one cell left would be the next one's.
   Overhead = 1 - commits/s / `none`'s commits/s of the same row.
2. **Live latency.** bench/e2e.py's live measurement (its writers, mix, markers, poller, fence and
   drain) at `--polling-rates` changes/s, for `capture: wal` then `capture: polling`
   (`poll_interval_ms` 200), each on an index backfilled first; the index keeps its default 1 s
   refresh; every subtitle update is a latency sample.

The database (`--polling-database`) and the slots and indexes (`bench_polling_*`) are this scenario's
own. Writes bench/results/polling-<books>.json (`--name`) and puts its section into bench/RESULTS.md
(bench/report_polling.py), leaving every other section as it is.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from opensearchpy import OpenSearch
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
import acks  # noqa: E402
import e2e  # noqa: E402
import harness  # noqa: E402
import report_polling  # noqa: E402

WORKLOADS = ("update", "mix")
WAYS = ("none", "polling", "triggers", "wal")
TOUCHED = ("public.book", "public.review")  # the tables the writer changes
SLICE_S = 1.0  # `none` and `triggers` alternate in slices this long
PREFIX = "bench_polling"


@dataclass
class Params:
    books: int = 10_000
    database: str = "flusso_bench_polling"
    dsn: str = harness.DEFAULT_DSN
    opensearch: str = harness.DEFAULT_OPENSEARCH
    writer_seconds: float = 15.0
    connections: tuple[int, ...] = (1, 2)
    rates: tuple[float, ...] = (50.0, 200.0)
    live_seconds: float = 20.0
    live_writers: int = 2
    poll_interval_ms: int = 200
    quiet: float = 0.35
    quiet_timeout: float = 10.0
    seed: int = 42


# --- the writer -------------------------------------------------------------------------------------


class Hammer:
    """Commits `workload` as fast as it can over `connections` for `seconds`: a writer's commits/s."""

    def __init__(self, dsn: str, workload: str, connections: int, seconds: float, seed: int) -> None:
        self.dsn, self.workload, self.connections, self.seconds, self.seed = dsn, workload, connections, seconds, seed
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ()").format(sql.Identifier(harness.DIRTY)))
            self.books = conn.execute("SELECT max(id) FROM book").fetchone()[0]
            self.readers = conn.execute("SELECT max(id) FROM reader").fetchone()[0]
        self.lock = threading.Lock()
        self.done: dict[str, int] = {"book.update": 0, "review.insert": 0, "review.delete": 0}
        self.errors: list[str] = []
        self.t0 = self.t1 = 0.0
        self.ready = threading.Barrier(connections + 1, action=self._go)  # every connection open: not counted

    def _go(self) -> None:
        self.t0 = time.monotonic()

    def run(self) -> dict[str, Any]:
        threads = [threading.Thread(target=self._loop, args=(n,), daemon=True) for n in range(self.connections)]
        for t in threads:
            t.start()
        self.ready.wait(60)
        for t in threads:
            t.join()
        commits = sum(self.done.values())
        elapsed = self.t1 - self.t0
        return {"workload": self.workload, "connections": self.connections, "commits": commits,
                "seconds": round(elapsed, 2), "commits_per_s": round(commits / elapsed, 1),
                "by_kind": dict(self.done), "errors": len(self.errors), "first_errors": self.errors[:3]}

    def _loop(self, n: int) -> None:
        rng = random.Random(f"{self.seed}:{self.workload}:{self.connections}:{n}")
        mine: list[int] = []  # reviews this connection inserted: the ones it deletes
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SET application_name = 'flusso_bench_polling_writer'")
            self.ready.wait(60)
            end = self.t0 + self.seconds
            for seq in itertools.count():
                if time.monotonic() >= end:
                    break
                kind = "book.update"
                if self.workload == "mix":
                    u = rng.random()
                    kind = "book.update" if u < 0.5 else "review.delete" if u >= 0.75 and mine else "review.insert"
                try:
                    if kind == "book.update":
                        conn.execute("UPDATE book SET subtitle = %s WHERE id = %s",
                                     (f"w{n}-{seq}", rng.randint(1, self.books)), prepare=True)
                    elif kind == "review.insert":
                        mine.append(conn.execute(
                            "INSERT INTO review (book_id, reader_id, rating, body, helpful) "
                            "VALUES (%s, %s, %s, %s, 0) RETURNING id",
                            (rng.randint(1, self.books), rng.randint(1, self.readers), rng.randint(1, 5),
                             f"overhead {n}-{seq}"), prepare=True).fetchone()[0])
                    else:
                        conn.execute("DELETE FROM review WHERE id = %s", (mine.pop(0),), prepare=True)
                except psycopg.Error as err:
                    with self.lock:
                        self.errors.append(f"{kind}: {str(err).strip()[:200]}")
                    if conn.broken:
                        break
                    continue
                with self.lock:
                    self.done[kind] += 1
            with self.lock:
                self.t1 = max(self.t1, time.monotonic())
            for review in mine:  # leave the reviews as they were
                conn.execute("DELETE FROM review WHERE id = %s", (review,))


# --- set-up -----------------------------------------------------------------------------------------


class Captures:
    """This scenario's two configs (`wal`, `polling`) over one database, and their clean-up."""

    def __init__(self, p: Params, dsn: str, workdir: Path) -> None:
        self.p, self.dsn, self.workdir = p, dsn, workdir
        self.client = OpenSearch(hosts=[p.opensearch], timeout=60)
        self.configs: dict[str, tuple[Path, str]] = {}
        for capture in ("wal", "polling"):
            name = f"{PREFIX}_{capture[:4]}"
            extra = {"capture": capture, **({"poll_interval_ms": p.poll_interval_ms} if capture == "polling" else {})}
            self.configs[capture] = harness.write_config(workdir / f"{name}.yaml", dsn, p.opensearch, name, **extra)

    def slot(self, capture: str) -> str:
        return f"{PREFIX}_{capture[:4]}"

    def drop(self, capture: str) -> None:
        """Slot and publication, or triggers, change log and cursor; the index's generations."""
        config, index = self.configs[capture]
        done = harness.flusso("teardown", "--yes", config=config)
        if done.returncode != 0:
            raise RuntimeError(f"flusso teardown ({capture}) exited {done.returncode}: {done.stderr[-2000:]}")
        for name in (f"{index}__g*", index, f"{index}-deadletter"):
            self.client.indices.delete(index=name, ignore=[400, 404])

    def start(self, capture: str, log_path: Path) -> Any:
        config, _ = self.configs[capture]
        return harness.start_flusso(config, log_path, "--log-level", "DEBUG", live_within=300)


# --- 1. writer overhead -----------------------------------------------------------------------------


def cell(p: Params, dsn: str, caps: Captures, workload: str, connections: int, way: str,
         proc: Any | None, log_path: Path | None) -> dict[str, Any]:
    pid = proc.pid if proc is not None else None
    cpu0, wall0 = harness.cpu_snapshot(pid), time.time()
    result = Hammer(dsn, workload, connections, p.writer_seconds, p.seed).run()
    wall1 = time.time()
    result["way"] = way
    result["cpu_s"] = harness.cpu_delta(cpu0, harness.cpu_snapshot(pid))
    if log_path is not None:
        result["flusso"] = e2e.batch_stats(e2e.log_lines(log_path, wall0, wall1), wall1 - wall0)
    if way == "polling":
        with psycopg.connect(dsn, autocommit=True) as conn:
            result["change_log_rows_at_end"] = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(acks.POLLING_SCHEMA, "changes"))).fetchone()[0]
    harness.log(f"   {workload} x{connections} {way}: {result['commits_per_s']:,.0f} commits/s "
                f"({result['errors']} errors; CPU s {result['cpu_s']})")
    return result


def _toggle(conn: psycopg.Connection, slot: str, enabled: bool) -> None:
    """The polling install's row triggers on the tables the writer touches, on (ALWAYS, as installed) or off."""
    how = sql.SQL("ENABLE ALWAYS" if enabled else "DISABLE")
    for table in TOUCHED:
        conn.execute(sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
            sql.Identifier(*table.split(".")), how, sql.Identifier(f"flusso_{slot}")))


def paired(p: Params, dsn: str, caps: Captures, workload: str, connections: int) -> dict[str, dict[str, Any]]:
    """`none` and `triggers` in alternating slices of `SLICE_S` (flusso stopped, the polling install in
    place, its row triggers disabled for the `none` slices), in ABBA order: both ways share the
    machine's noise, and each adjacent pair of slices gives one ratio (`pairs`)."""
    slices = max(2, round(p.writer_seconds / SLICE_S))  # per way
    runs: dict[str, list[dict[str, Any]]] = {"none": [], "triggers": []}
    cpu0 = harness.cpu_snapshot()
    with psycopg.connect(dsn, autocommit=True) as admin:
        try:
            for i in range(2 * slices):
                way = ("none", "triggers")[(i + i // 2) % 2]  # none, triggers, triggers, none, ...
                _toggle(admin, caps.slot("polling"), way == "triggers")
                runs[way].append(Hammer(dsn, workload, connections, SLICE_S, p.seed + i).run())
        finally:
            _toggle(admin, caps.slot("polling"), True)
    cpu = harness.cpu_delta(cpu0, harness.cpu_snapshot())
    out = {}
    for way, done in runs.items():
        commits, seconds = sum(r["commits"] for r in done), sum(r["seconds"] for r in done)
        out[way] = {"way": way, "workload": workload, "connections": connections, "commits": commits,
                    "seconds": round(seconds, 2), "commits_per_s": round(commits / seconds, 1), "slices": len(done),
                    "slice_commits_per_s": [r["commits_per_s"] for r in done],
                    "errors": sum(r["errors"] for r in done),
                    "cpu_s": {k: round(v / 2, 2) for k, v in cpu.items()}}  # the phase's, half each
    changes = sorted(100 * (t / n - 1) for n, t in zip(out["none"]["slice_commits_per_s"],
                                                       out["triggers"]["slice_commits_per_s"], strict=True) if n)
    out["triggers"]["pairs"] = {"n": len(changes), "median_pct": round(statistics.median(changes), 1),
                                "p25_pct": round(harness.pct(changes, 25), 1),
                                "p75_pct": round(harness.pct(changes, 75), 1)}
    with psycopg.connect(dsn, autocommit=True) as conn:
        out["triggers"]["change_log_rows_at_end"] = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(acks.POLLING_SCHEMA, "changes"))).fetchone()[0]
    for way, c in out.items():
        harness.log(f"   {workload} x{connections} {way}: {c['commits_per_s']:,.0f} commits/s over {c['slices']} "
                    f"slices ({c['errors']} errors){'; pairs ' + str(c['pairs']) if 'pairs' in c else ''}")
    return out


def overhead(p: Params, dsn: str, caps: Captures, workdir: Path) -> list[dict[str, Any]]:
    """Every (workload, connections) row: polling with flusso live, then `paired` (no capture and the
    triggers alone, flusso stopped), then the WAL with flusso live."""
    rows = []
    for workload in WORKLOADS:
        for connections in p.connections:
            harness.wait_quiet(p.quiet, p.quiet_timeout)
            cells: dict[str, dict[str, Any]] = {}
            log_path = workdir / f"polling-{workload}-{connections}.log"
            proc = caps.start("polling", log_path)
            try:
                cells["polling"] = cell(p, dsn, caps, workload, connections, "polling", proc, log_path)
            finally:
                harness.stop_process(proc)
            cells.update(paired(p, dsn, caps, workload, connections))
            caps.drop("polling")
            log_path = workdir / f"wal-{workload}-{connections}.log"
            proc = caps.start("wal", log_path)
            try:
                cells["wal"] = cell(p, dsn, caps, workload, connections, "wal", proc, log_path)
            finally:
                harness.stop_process(proc)
                caps.drop("wal")
            base = cells["none"]["commits_per_s"]
            for c in cells.values():
                c["overhead_pct"] = round(100 * (1 - c["commits_per_s"] / base), 1) if base else None
            rows.append({"workload": workload, "connections": connections,
                         "ways": {w: cells[w] for w in WAYS}})
    return rows


# --- 2. live latency --------------------------------------------------------------------------------


def live(p: Params, dsn: str, caps: Captures, capture: str, workdir: Path) -> dict[str, Any]:
    """bench/e2e.py's live run for one capture, on an index `flusso backfill` seeded first."""
    config, index = caps.configs[capture]
    caps.drop(capture)
    try:
        done = harness.flusso("backfill", "--force", config=config, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"flusso backfill ({capture}) exited {done.returncode}:\n{done.stderr[-3000:]}")
        args = argparse.Namespace(
            rates=list(p.rates), seconds=p.live_seconds, writers=p.live_writers, max_writers=2, sample_every=1,
            poll_ms=50.0, pool_every=10, keep_up_s=5.0, drain_timeout=120.0, check=200, quiet=p.quiet,
            quiet_timeout=p.quiet_timeout, profile=None, seed=p.seed)
        run_dir = workdir / f"live-{capture}"
        run_dir.mkdir()
        return {"capture": capture, **e2e.run_live(args, config, dsn, caps.slot(capture), index, caps.client, run_dir)}
    finally:
        caps.drop(capture)


# --- the run ----------------------------------------------------------------------------------------


def run(p: Params, name: str, note: str | None = None) -> dict[str, Any]:
    started = time.monotonic()
    report: dict[str, Any] = {"benchmark": "polling", "name": name, **harness.git_commit(),
                              "machine": harness.machine(), "started_at": datetime.now().isoformat(timespec="seconds"),
                              "parameters": harness.public(asdict(p)), "note": note}
    dsn, generated = harness.ensure_data(p.dsn, p.database, p.books, p.seed)
    report["generation_s"] = generated
    workdir = Path(tempfile.mkdtemp(prefix="flusso-bench-polling-"))
    caps = Captures(p, dsn, workdir)
    for capture in caps.configs:  # whatever a crashed run left
        caps.drop(capture)
    harness.log(f"1. writer overhead: {', '.join(WORKLOADS)} x {p.connections} connections, "
                f"{p.writer_seconds:g} s each, ways {', '.join(WAYS)}")
    report["overhead"] = overhead(p, dsn, caps, workdir)
    report["live"] = {}
    for capture in ("wal", "polling"):
        harness.log(f"2. live latency: capture: {capture} at {', '.join(f'{r:g}' for r in p.rates)} changes/s")
        report["live"][capture] = live(p, dsn, caps, capture, workdir)
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    out = harness.ROOT / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    report_polling.write(report_polling.load())
    harness.log(f"wrote {out.relative_to(harness.ROOT)} and its section of bench/RESULTS.md "
                f"in {report['elapsed_s']} s")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--books", type=int, default=10_000)
    parser.add_argument("--name", default=None)
    parser.add_argument("--dsn", default=harness.DEFAULT_DSN)
    parser.add_argument("--opensearch", default=harness.DEFAULT_OPENSEARCH)
    parser.add_argument("--note", default=None)
    args = parser.parse_args()
    run(params(args), args.name or f"polling-{args.books}", args.note)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This scenario's options (bench/run.py's `--scenario polling` takes them too)."""
    parser.add_argument("--polling-database", default=Params.database)
    parser.add_argument("--writer-seconds", type=float, default=Params.writer_seconds)
    parser.add_argument("--writer-connections", default="1,2")
    parser.add_argument("--polling-rates", default="50,200", help="live changes/s, comma-separated")
    parser.add_argument("--live-seconds", type=float, default=Params.live_seconds)
    parser.add_argument("--poll-interval-ms", type=int, default=Params.poll_interval_ms)


def params(args: argparse.Namespace) -> Params:
    return Params(books=args.books, database=args.polling_database, dsn=args.dsn, opensearch=args.opensearch,
                  writer_seconds=args.writer_seconds,
                  connections=tuple(int(c) for c in args.writer_connections.split(",")),
                  rates=tuple(float(r) for r in args.polling_rates.split(",")), live_seconds=args.live_seconds,
                  poll_interval_ms=args.poll_interval_ms, seed=getattr(args, "seed", 42))


if __name__ == "__main__":
    sys.exit(main())
