"""`make bench`: flusso against the sink's limit (`raw`) and PGSync, on the same bookstore data.

    python bench/run.py [--books 10000] [--seconds 20] [--rates 50,200,500,2000,max] [--scales 10000,100000]
                        [--name quick] [--skip-live] [--skip-pgsync] [--pgsync-timeout 120]
                        [--pgsync-mode wal] [--pgsync-drain-timeout 30] [--pin]
    python bench/run.py --scenario reseed [--books 100000] [--reseed-rate 100] [--note TEXT]
    python bench/run.py --scenario polling [--books 10000] [--writer-seconds 15] [--polling-rates 50,200]
    python bench/run.py --scenario kafka [--books 10000] [--kafka-rates 200,500,max] [--kafka-backlog 100000]

Scenarios (issue 6), each over the bookstore generated with the same seed at `--books`:

1. Backfill throughput, wall time from start to the last document searchable:
   `raw` (bench/raw.py: precomputed documents, opensearch-py bulk helpers, best chunk size and
   thread count), `flusso` (`flusso backfill --force` from an empty index, bench/e2e.py's
   `run_backfill`, peak RSS included) and `pgsync` (bench/pgsync_bench.py: PGSync's initial sync,
   bounded by `--pgsync-timeout`; when it does not finish, its rate so far is reported and the run
   is marked incomplete).
2. Live throughput and commit-to-searchable latency at each rate: flusso with bench/e2e.py as is
   (`--rates`, `--seconds`), in this benchmark's own database, slot and index; then PGSync
   (bench/pgsync_bench.py `run_live`: the same writer, mix, markers, poller and percentiles, in its
   own database) in its at-least-once mode, `--wal` (`--pgsync-mode`), started live on an index
   seeded with every document; a rate it has not drained `--pgsync-drain-timeout` s after the writes
   is reported as not kept up, at the rate it processed until then.
3. Scaling: flusso's backfill at each of `--scales` (default: `--books` only).

`--pin` (issue #17 item 4, bench/pin.py) runs it all with OpenSearch's JVM on core 0 and
PostgreSQL, flusso and the writers on core 1, restored at the end: the sink is then the only
bottleneck, so flusso / raw says how well flusso keeps it busy (results `run-<books>-pinned`). It
slows every other user of the shared services while it runs: a quiet machine only.

`--scenario reseed` runs only the reseed scenario (issue #12, bench/reseed.py: a forced reseed
beside live capture and live writes, as searchers see it) in its own database
(`--reseed-database`), writing bench/results/reseed-<books>.json (`--name`); `make bench-reseed`.
It is not part of the default run (`--scenario all`).

`--scenario polling` runs only the polling scenario (issue #14, bench/polling.py: a writer's commits/s
with no capture, `capture: polling` and `capture: wal`; live latency of both at 50 and 200
changes/s) in its own database (`--polling-database`), writing bench/results/polling-<books>.json and
its section of bench/RESULTS.md alone; `make bench-polling`. Not part of the default run either.

`--scenario kafka` runs only the Kafka queue's scenario (issue #15, bench/kafka.py: live latency and
sustained changes/s with the channel and with Kafka at 1 and 2 workers, and the catch-up of a backlog
held in Kafka by 1 and 2 workers) in its own database (`--kafka-database`), writing
bench/results/kafka-<books>.json and its section of bench/RESULTS.md alone; `make bench-kafka`.

Writes bench/results/<name>.json (commit, machine, every parameter, the figures), then regenerates
bench/RESULTS.md from every bench/results/run-*.json and the plots bench/results/*.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from opensearchpy import OpenSearch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import e2e  # noqa: E402
import harness  # noqa: E402
import kafka  # noqa: E402
import pgsync_bench  # noqa: E402
import polling  # noqa: E402
import raw  # noqa: E402
import reseed  # noqa: E402
import workload  # noqa: E402

RESULTS = ROOT / "bench" / "results"
REPORT = ROOT / "bench" / "RESULTS.md"
TARGETS = {"flusso_over_raw": 0.8, "flusso_over_pgsync": 3.0, "p99_ms_at_2000": 1500, "rss_mb": 300}


def flusso_backfill(args: argparse.Namespace, books: int, workdir: Path) -> dict[str, Any]:
    database = args.database if books == args.books else f"{args.database}_{books}"
    dsn, generated = harness.ensure_data(args.dsn, database, books, args.seed, pristine=True)
    client = OpenSearch(hosts=[args.opensearch], timeout=60)
    config, index = harness.write_config(workdir / f"flusso-{books}.yaml", dsn, args.opensearch, f"bench_run_{books}")
    harness.flusso("teardown", "--yes", config=config)
    try:
        result = e2e.run_backfill(config, index, dsn, client, workdir, None, (args.quiet, args.quiet_timeout))
    finally:
        harness.drop_flusso(config, client, index)
    return {"system": "flusso", "books": books, "generation_s": generated, **result}, config, index


def live(args: argparse.Namespace) -> dict[str, Any]:
    out = RESULTS / f"{args.name}-e2e.json"
    cmd = [sys.executable, str(ROOT / "bench" / "e2e.py"), "--books", str(args.books), "--rates", args.rates,
           "--seconds", str(args.seconds), "--database", args.database, "--name", "bench_run_live",
           "--out", str(out), "--quiet", str(args.quiet), "--quiet-timeout", str(args.quiet_timeout),
           "--max-writers", str(args.max_writers), "--seed", str(args.seed)]
    harness.log("live: " + " ".join(cmd[1:]))
    done = subprocess.run(cmd, cwd=ROOT)
    if done.returncode != 0 or not out.exists():
        return {"error": f"bench/e2e.py exited {done.returncode}"}
    report = json.loads(out.read_text())
    return {"e2e_json": str(out.relative_to(ROOT)), "rates": report.get("live", {}).get("rates", []),
            "flusso_peak_rss_mb": report.get("live", {}).get("flusso_peak_rss_mb")}


def warm_up(args: argparse.Namespace, workdir: Path, fresh_s: float = 600.0) -> float:
    """A node started minutes ago indexes at a fraction of its speed until the JVM has compiled its
    hot paths (a restarted node made a quick run's backfills 3-4x slower): bulk-load the documents
    once, untimed, into a throwaway index first. Returns the node's uptime before the warm-up."""
    client = OpenSearch(hosts=[args.opensearch], timeout=120)
    stats = client.nodes.stats(metric="jvm", filter_path="nodes.*.jvm.uptime_in_millis")
    uptime = min(n["jvm"]["uptime_in_millis"] for n in stats["nodes"].values()) / 1000
    if uptime >= fresh_s:
        return round(uptime, 1)
    harness.log(f"0. warm-up: OpenSearch started {uptime:.0f} s ago; one untimed bulk load first")
    dsn, _ = harness.ensure_data(args.dsn, args.database, args.books, args.seed)
    config, index = harness.write_config(workdir / "flusso-warmup.yaml", dsn, args.opensearch, "bench_run_warmup")
    docs, body, _ = raw.precompute(config, index)
    try:
        raw.load_once(client, index, body, docs, 1000, 2)
    finally:
        client.indices.delete(index=index, ignore=404)
    return round(uptime, 1)


def pgsync_live(args: argparse.Namespace) -> dict[str, Any]:
    dsn, _ = harness.ensure_data(args.dsn, args.pgsync_database, args.books, args.seed)
    try:
        return pgsync_bench.run_live(dsn, args.opensearch, "bench_run_pgsync_live", harness.parse_rates(args.rates),
                                     args.seconds, args.pgsync_mode, drain_timeout=args.pgsync_drain_timeout,
                                     quiet=(args.quiet, args.quiet_timeout), seed=args.seed,
                                     max_writers=args.max_writers)
    except Exception as err:  # noqa: BLE001 - reported, the rest still runs
        return {"system": "pgsync", "mode": args.pgsync_mode, "error": str(err)[-2000:]}


def backlog(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Scenario 4: flusso stopped while the writers commit `--backlog` changes (the e2e mix, unpaced),
    then started: peak RSS while it catches up, and how long until the slot is acknowledged past the
    last change."""
    import psycopg

    dsn, _ = harness.ensure_data(args.dsn, args.database, args.books, args.seed)
    client = OpenSearch(hosts=[args.opensearch], timeout=60)
    config, index = harness.write_config(workdir / "flusso-backlog.yaml", dsn, args.opensearch, "bench_run_backlog")
    slot = "bench_run_backlog"
    harness.flusso("teardown", "--yes", config=config)
    try:
        proc = harness.start_flusso(config, workdir / "backlog-1.log", live_within=300)  # the slot, the index
        harness.stop_process(proc)
        pools = workload.Pools(dsn, 10)
        samples = workload.Samples()
        written, began = 0, time.monotonic()
        while written < args.backlog:
            w = workload.Writer(dsn, pools, samples, None, 10.0, args.max_writers, 10**9, 10**8 + written, args.seed)
            written += w.run()["changes"]
        write_s = time.monotonic() - began
        with psycopg.connect(dsn, autocommit=True) as conn:
            lsn = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
        lag = harness.slot_lag(dsn, slot)
        harness.log(f"4. backlog: {written:,} changes written in {write_s:.0f} s; slot lag {lag:,} bytes; "
                    "starting flusso")
        started = time.monotonic()
        proc = harness.start_flusso(config, workdir / "backlog-2.log")
        watch = harness.Watch(proc.pid, every=0.1)
        watch.start()
        acked = harness.wait_confirmed(dsn, slot, lsn, args.backlog_timeout)
        rss_samples = harness.memory_kb(proc.pid)
        harness.stop_process(proc)
        watch.done.set()
        catch_up = None if acked is None else acked - started
        return {"changes": written, "write_s": round(write_s, 1), "slot_lag_bytes": lag,
                "catch_up_s": round(catch_up, 1) if catch_up else None,
                "changes_per_s": round(written / catch_up, 1) if catch_up else None,
                "peak_rss_mb": round(watch.peak_kb / 1024, 1),
                "rss_at_end_mb": round(rss_samples.get("VmRSS", 0) / 1024, 1), "exit_code": proc.returncode,
                "caught_up": acked is not None}
    finally:
        harness.drop_flusso(config, client, index)


def reseed_only(args: argparse.Namespace) -> int:
    """`--scenario reseed`: bench/reseed.py with this run's data, services, raw trials and quiet."""
    params = reseed.Params(books=args.books, rate=args.reseed_rate, database=args.reseed_database,
                           dsn=args.dsn, opensearch=args.opensearch, raw_chunks=args.raw_chunks,
                           raw_threads=args.raw_threads, quiet=args.quiet, quiet_timeout=args.quiet_timeout,
                           seed=args.seed)
    result = reseed.run(params, args.name or f"reseed-{args.books}", args.note)
    print(reseed.table(result))
    import report as report_md

    report_md.write_all()
    return 0


def polling_only(args: argparse.Namespace) -> int:
    """`--scenario polling`: bench/polling.py with this run's books, services, quiet and seed."""
    p = polling.params(args)
    p.quiet, p.quiet_timeout = args.quiet, args.quiet_timeout
    polling.run(p, args.name or f"polling-{args.books}", args.note)
    return 0


def kafka_only(args: argparse.Namespace) -> int:
    """`--scenario kafka`: bench/kafka.py with this run's books, services, quiet and seed."""
    kafka.run(kafka.params(args), args.name or f"kafka-{args.books}", args.note)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("all", "reseed", "polling", "kafka"), default="all",
                        help="all: the table below; reseed: only the reseed scenario (issue #12); polling: only "
                             "capture: polling's writer overhead and live latency beside the WAL's (issue #14); "
                             "kafka: only the Kafka queue beside the channel, live and through a backlog (issue #15)")
    parser.add_argument("--reseed-database", default="flusso_bench_reseed")
    parser.add_argument("--reseed-rate", type=float, default=100.0, help="live commits/s during the reseed")
    parser.add_argument("--note", default=None, help="reseed, polling, kafka: a line for its run in RESULTS.md")
    polling.add_arguments(parser)
    kafka.add_arguments(parser)
    parser.add_argument("--books", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of writes per live rate")
    parser.add_argument("--rates", default="50,200,500,2000,max")
    parser.add_argument("--scales", default=None, help="books per scaling point, comma-separated (default: --books)")
    parser.add_argument("--name", default=None, help="results name (default: run-<books>)")
    parser.add_argument("--dsn", default=harness.DEFAULT_DSN)
    parser.add_argument("--database", default="flusso_bench_run")
    parser.add_argument("--pgsync-database", default="flusso_bench_pgsync")
    parser.add_argument("--opensearch", default=harness.DEFAULT_OPENSEARCH)
    parser.add_argument("--raw-chunks", default="500,1000,2000")
    parser.add_argument("--raw-threads", default="1,2")
    parser.add_argument("--pgsync-timeout", type=float, default=120.0)
    parser.add_argument("--pgsync-mode", choices=pgsync_bench.LIVE_MODES, default=pgsync_bench.LIVE_MODE,
                        help="PGSync's live mode (wal: its at-least-once mode)")
    parser.add_argument("--pgsync-drain-timeout", type=float, default=30.0,
                        help="PGSync live: a rate not drained this long after the writes did not keep up")
    parser.add_argument("--skip-live", action="store_true")
    parser.add_argument("--backlog", type=int, default=100_000, help="changes in the backlog scenario (0: skip)")
    parser.add_argument("--backlog-timeout", type=float, default=600.0)
    parser.add_argument("--max-writers", type=int, default=2)
    parser.add_argument("--skip-pgsync", action="store_true")
    parser.add_argument("--quiet", type=float, default=0.35)
    parser.add_argument("--quiet-timeout", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--pin", action="store_true",
                        help="OpenSearch on core 0; PostgreSQL, flusso and the writers on core 1 (bench/pin.py)")
    args = parser.parse_args()
    if args.scenario == "reseed":
        return reseed_only(args)
    if args.scenario == "polling":
        return polling_only(args)
    if args.scenario == "kafka":
        return kafka_only(args)
    args.name = args.name or f"run-{args.books}" + ("-pinned" if args.pin else "")
    if args.pin:
        import pin

        with pin.pinned() as pinned:
            return run_all(args, pinned)
    return run_all(args)


def run_all(args: argparse.Namespace, pinned: dict[str, Any] | None = None) -> int:
    """Every scenario of the default run, written to bench/results/<name>.json."""
    scales = [int(s) for s in args.scales.split(",")] if args.scales else [args.books]
    started = time.monotonic()
    report: dict[str, Any] = {"benchmark": "run", "name": args.name, **harness.git_commit(),
                              "machine": harness.machine(),
                              "started_at": datetime.now().isoformat(timespec="seconds"), "books": args.books,
                              "parameters": harness.public(vars(args)), "targets": TARGETS,
                              "pinned": pinned}
    workdir = Path(tempfile.mkdtemp(prefix="flusso-bench-run-"))

    report["opensearch_uptime_s"] = warm_up(args, workdir)
    harness.log(f"1. backfill: flusso ({args.books:,} books)")
    flusso, config, index = flusso_backfill(args, args.books, workdir)
    report["backfill"] = {"flusso": flusso}
    harness.log(f"   flusso {flusso['docs_per_s']:,.0f} docs/s in {flusso['wall_s']} s, "
                f"peak RSS {flusso['peak_rss_mb']} MB")
    harness.log("1. backfill: raw")
    report["backfill"]["raw"] = {"system": "raw", **raw.run_raw(
        config, index, args.opensearch, [int(c) for c in args.raw_chunks.split(",")],
        [int(t) for t in args.raw_threads.split(",")], (args.quiet, args.quiet_timeout))}
    if not args.skip_pgsync:
        harness.log("1. backfill: pgsync")
        dsn, _ = harness.ensure_data(args.dsn, args.pgsync_database, args.books, args.seed, pristine=True)
        try:
            report["backfill"]["pgsync"] = pgsync_bench.run_backfill(
                dsn, args.opensearch, "bench_run_pgsync_books", args.pgsync_timeout, (args.quiet, args.quiet_timeout))
        except Exception as err:  # noqa: BLE001 - reported, the rest still runs
            report["backfill"]["pgsync"] = {"system": "pgsync", "error": str(err)[-2000:]}
    b = report["backfill"]
    if isinstance(b["flusso"].get("cpu_s"), dict):
        b["flusso"]["cpu_s_per_1000_docs"] = harness.per_1000(b["flusso"]["cpu_s"], b["flusso"].get("documents", 0))
    report["ratios"] = {
        "flusso_over_raw": round(b["flusso"]["docs_per_s"] / b["raw"]["docs_per_s"], 2),
        "flusso_over_pgsync": (round(b["flusso"]["docs_per_s"] / b["pgsync"]["docs_per_s"], 2)
                               if b.get("pgsync", {}).get("docs_per_s") else None),
    }
    harness.log(f"   ratios {report['ratios']}")
    report["scaling"] = [{"books": args.books, "wall_s": flusso["wall_s"], "docs_per_s": flusso["docs_per_s"],
                          "peak_rss_mb": flusso["peak_rss_mb"]}]
    for books in scales:
        if books == args.books:
            continue
        harness.log(f"3. scaling: flusso backfill at {books:,} books")
        point, _, _ = flusso_backfill(args, books, workdir)
        report["scaling"].append({"books": books, "wall_s": point["wall_s"], "docs_per_s": point["docs_per_s"],
                                  "peak_rss_mb": point["peak_rss_mb"]})
    if not args.skip_live:
        harness.log("2. live: flusso")
        report["live"] = {"flusso": live(args)}
        if not args.skip_pgsync:
            harness.log(f"2. live: pgsync ({args.pgsync_mode})")
            report["live"]["pgsync"] = pgsync_live(args)
    if args.backlog:
        harness.log(f"4. backlog of {args.backlog:,} changes")
        try:
            report["backlog"] = backlog(args, workdir)
        except Exception as err:  # noqa: BLE001 - reported
            report["backlog"] = {"error": str(err)[-2000:]}
        harness.log(f"   {report['backlog']}")
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    import report as report_md

    report_md.write_all()
    harness.log(f"wrote bench/results/{args.name}.json and bench/RESULTS.md in {report['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
