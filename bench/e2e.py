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
The writers, samples and poller are bench/workload.py's (PGSync's live run uses the same); the data
set-up, process control and measurement helpers are bench/harness.py's.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from opensearchpy import OpenSearch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
import pgstat  # noqa: E402
from harness import (  # noqa: E402
    DEFAULT_DSN,
    DEFAULT_OPENSEARCH,
    FLUSSO,
    ROOT,
    Watch,
    built_documents,
    check_documents,
    commit_fence,
    cpu_delta,
    cpu_seconds,
    cpu_since,
    cpu_snapshot,
    ensure_data,
    flusso,
    git_commit,
    latency_ms,
    log,
    machine,
    memory_kb,
    opensearch_stats,
    parse_rates,
    py_spy,
    searchable_count,
    slot_lag,
    start_flusso,
    stats_delta,
    stop_process,
    wait_acked,
    wait_quiet,
    write_config,
)
from workload import MIX, RUN_TAG, Pools, Probe, Writer, rate_label  # noqa: E402

_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_FLUSHED = re.compile(r"flushed (\d+) changes -> (\d+) documents .* in ([0-9.]+)s")
_DONE = re.compile(r"backfill of \S+ done: (\d+) documents in ([0-9.]+)s")


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
            cpu_flusso = cpu_seconds(proc.pid) or cpu_flusso
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
    count = searchable_count(client, index, rows, exited + 60)
    searchable = time.monotonic()
    os_stats = opensearch_stats(client, index)  # the index was recreated: its counters start at 0 ...
    os_stats.update(stats_delta(gc_before, os_stats))  # ... the node's do not
    cpu = cpu_since(cpu0, max(cpu_flusso, watch.last_cpu))
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
        "cpu_s_per_1000_docs": harness.per_1000(cpu, count),
        "machine_busy_before": busy_before,
        "opensearch": os_stats,
        "complete": count == rows,
    }


# --- live -------------------------------------------------------------------------------------------


def check_sample(config_path: Path, index: str, client: OpenSearch, ids: list[int]) -> dict[str, Any]:
    """Documents touched by the run, as indexed, against a fresh build from the database."""
    return check_documents(built_documents(config_path, index, ids), client, index, ids)


def live_rate(args: argparse.Namespace, rate: float | None, proc_log: Path, flusso_pid: int, dsn: str,
              slot: str, index: str, client: OpenSearch, pools: Pools, config: Path, seq_start: int,
              ) -> dict[str, Any]:
    label = rate_label(rate)
    threads = args.max_writers if rate is None else args.writers
    busy_before = wait_quiet(args.quiet, args.quiet_timeout)
    log(f"live at {label} changes/s for {args.seconds:g}s ({threads} writers)")
    probe = Probe(client, index, pools, args.poll_ms, dsn, slot)
    samples = probe.samples
    probe.start()
    spy = None
    if args.profile is not None:
        spy = py_spy(flusso_pid, args.profile / f"live-{label}.txt", args.seconds, idle=not args.profile_cpu)
    statements = pgstat.reset(dsn)
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
    fence_at = commit_fence(dsn, fence, fence_book)  # a slot's or a polling cursor's (bench/acks.py)
    samples.add(fence, fence_book, time.monotonic())
    acked = wait_acked(dsn, slot, fence_at, args.drain_timeout)
    deadline = time.monotonic() + 10
    while fence not in samples.seen and time.monotonic() < deadline:
        time.sleep(0.02)
    drained = None if acked is None or fence not in samples.seen else max(acked, samples.seen[fence])
    drain_s = None if drained is None else drained - writer_end
    probe.stop()
    wall_drained = time.time()
    engine_total_changes = batch_stats(log_lines(proc_log, wall0, wall_drained), wall_drained - wall0)["changes"]
    pg_statements = pgstat.read(dsn, engine_total_changes) if statements else None
    latencies, pending, touched = probe.collect(fence)
    window = wall_end - wall0
    engine_in_window = batch_stats(log_lines(proc_log, wall0, wall_end), window)
    engine_total = batch_stats(log_lines(proc_log, wall0, wall_drained), wall_drained - wall0)
    rng = random.Random(args.seed)
    check = check_sample(config, index, client, rng.sample(touched, min(len(touched), args.check)))
    keep_up = drain_s is not None and drain_s <= args.keep_up_s
    return {
        "rate": label,
        "offered_per_s": rate,
        "writers": threads,
        "writer": written,
        "latency_ms": latency_ms(latencies, len(pending)),
        "engine_during_writes": engine_in_window,
        "engine_until_drained": engine_total,
        "sustained_per_s": round(engine_total["changes"] / (wall_drained - wall0), 1),
        "drain_s": round(drain_s, 2) if drain_s is not None else None,
        "fence_searchable_s": round(samples.seen[fence] - writer_end, 2) if fence in samples.seen else None,
        "kept_up": keep_up,
        "slot_lag_bytes": probe.lag_bytes(lag_at_end),
        "flusso_rss_mb": round(memory_kb(flusso_pid).get("VmRSS", 0) / 1024, 1),
        "cpu_s": cpu,
        "cpu_s_per_1000_changes": harness.per_1000(cpu, engine_total["changes"]),
        "pg_statements": pg_statements or "pg_stat_statements is not loaded (services/postgres.sh loads it)",
        "machine_busy_before": busy_before,
        "opensearch": os_stats,
        "poller": probe.searches(),
        "check": check,
    }


def run_live(args: argparse.Namespace, config: Path, dsn: str, slot: str, index: str, client: OpenSearch,
             workdir: Path) -> dict[str, Any]:
    proc_log = workdir / "run.log"
    proc = start_flusso(config, proc_log, "--log-level", "DEBUG", live_within=120)
    try:
        if "backfill of" in proc_log.read_text() and "done" in proc_log.read_text():
            log("warning: flusso run backfilled before going live")
        pools = Pools(dsn, args.pool_every)
        results = []
        for i, rate in enumerate(args.rates):
            results.append(live_rate(args, rate, proc_log, proc.pid, dsn, slot, index, client, pools, config,
                                     seq_start=(i + 1) * 10**8))
            if proc.poll() is not None:
                raise RuntimeError(f"flusso run exited {proc.returncode}:\n{proc_log.read_text()[-3000:]}")
        peak = memory_kb(proc.pid).get("VmHWM", 0)
    finally:
        stop_process(proc)
    return {"rates": results, "flusso_peak_rss_mb": round(peak / 1024, 1), "exit_code": proc.returncode}


# --- report -----------------------------------------------------------------------------------------


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
    parser.add_argument("--profile-cpu", action="store_true",
                        help="with --profile: sample only threads on CPU during the rates (what costs CPU, "
                             "not where the worker waits)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--refresh", choices=("interval", "wait_for"), default=None,
                        help="the index's refresh mode (wait_for: a live flush waits until searchable)")
    args = parser.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    harness.OPENSEARCH_PORT = str(urlsplit(args.opensearch).port or 9200)

    report: dict[str, Any] = {"benchmark": "e2e", **git_commit(), "machine": machine(),
                              "started_at": datetime.now().isoformat(timespec="seconds")}
    dsn, generated = ensure_data(args.dsn, args.database, args.books, args.seed)
    client = OpenSearch(hosts=[args.opensearch], timeout=60)
    workdir = Path(tempfile.mkdtemp(prefix="flusso-bench-e2e-"))
    config, index = write_config(workdir / "flusso.yaml", dsn, args.opensearch, args.name, args.refresh)
    flusso("teardown", "--yes", config=config)  # a slot a crashed run left behind
    report.update(books=args.books, generation_s=generated, index=index, slot=args.name,
                  parameters=harness.public({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}),
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
            harness.drop_index(client, index)
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
