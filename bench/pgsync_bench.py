"""PGSync (PyPI) on the same bookstore: its initial sync, and its live changes, into the same OpenSearch node.

    python bench/pgsync_bench.py [--books 10000] [--timeout 180]
    python bench/pgsync_bench.py --live [--mode wal|daemon] [--rates 500,2000,max] [--seconds 20]
                                 [--drain-timeout 30] [--books 10000]

PGSync lives in a virtualenv of its own, `.flusso/pgsync-venv` (created here: its pins, e.g.
opensearch-py and SQLAlchemy, must not touch flusso's .venv). Its daemon needs Redis: Debian's
redis-server (apt-get installed when missing) runs on 127.0.0.1:6390 with its files under
`.flusso/redis`. The schema is bench/pgsync/schema.json (the same nested structure as the bookstore's
flusso.yaml: publisher, detail, authors via book_author, reviews with reviewer and tags); the
database (`flusso_bench_pgsync`, generated with the same seed: the same rows) is separate because
PGSync's bootstrap puts triggers on every table. Initial sync = `bootstrap` (triggers, slot), then
`pgsync -c schema.json` one-shot; wall time from its start until a refreshed count shows every book,
or `--timeout` (then the documents indexed so far are reported, and the run is marked incomplete).
`bootstrap --teardown` drops its slot and triggers at the end.

`--live` (scenario 2, `run_live`): PGSync in WAL mode (its at-least-once mode; `--mode daemon` for
the trigger + Redis daemon), started at the current position on an index seeded with every document,
against flusso's writer, poller and percentiles (bench/workload.py) at each offered rate; see
`run_live`. Its installation and processes: bench/pgsync_control.py; its documents: bench/pgsync_docs.py.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from opensearchpy import OpenSearch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    DEFAULT_DSN,
    DEFAULT_OPENSEARCH,
    Watch,
    cpu_delta,
    cpu_since,
    cpu_snapshot,
    ensure_data,
    latency_ms,
    log,
    memory_kb,
    opensearch_stats,
    parse_rates,
    searchable_count,
    slot_lag,
    stats_delta,
    wait_quiet,
)
from pgsync_control import (  # noqa: E402
    PGSYNC_VERSION,
    WORK,
    bootstrap,
    cancel_queries,
    cpu_groups,
    daemon_processed,
    environment,
    prepare,
    redis_llen,
    settings,
    slot_name,
    start_live,
    stop,
    teardown,
    wal_processed,
)
from pgsync_docs import check_sample, seed_documents  # noqa: E402
from workload import RUN_TAG, Pools, Probe, Writer, rate_label  # noqa: E402

from flusso_engine.capture.wal import read_slot  # noqa: E402
from flusso_engine.changes import lsn_to_int  # noqa: E402

LIVE_MODES = ("wal", "daemon")
LIVE_MODE = "wal"  # PGSync's at-least-once mode: see run_live


def run_backfill(dsn: str, opensearch: str, index: str, timeout: float,
                 quiet: tuple[float, float] = (1.0, 0.0)) -> dict[str, Any]:
    bin_dir, database, schema = prepare(dsn, index)
    env = environment(dsn, opensearch)
    client = OpenSearch(hosts=[opensearch], timeout=60)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT count(*) FROM book").fetchone()[0]
    teardown(bin_dir, schema, env)  # a slot or triggers a crashed run left behind
    client.indices.delete(index=index, ignore=404)
    for f in WORK.glob(f".{database}_{index}*"):
        f.unlink()
    log_path = WORK / f"{index}.log"
    boot = time.monotonic()
    bootstrap(bin_dir, schema, env)
    bootstrap_s = time.monotonic() - boot
    busy_before = wait_quiet(*quiet)
    cpu0 = cpu_snapshot()
    started = time.monotonic()
    with log_path.open("w") as out:
        proc = subprocess.Popen([str(bin_dir / "pgsync"), "-c", str(schema)], cwd=WORK, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    watch = Watch(proc.pid, every=0.2)
    watch.start()
    count = 0
    try:
        while time.monotonic() - started < timeout:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
        exited = proc.poll() is not None
        timed_out = not exited
    finally:
        cpu_pgsync = watch.last_cpu
        stop(proc)
        watch.done.set()
        cancel_queries(dsn)
    try:
        count = searchable_count(client, index, rows, started + timeout + 60, once=timed_out)
    except Exception as err:  # noqa: BLE001 - the index may not exist when nothing was written
        log(f"pgsync index {index}: {err}")
    wall = time.monotonic() - started
    cpu = cpu_since(cpu0, cpu_pgsync, "pgsync")
    teardown(bin_dir, schema, env)
    client.indices.delete(index=index, ignore=404)
    return {
        "system": "pgsync", "version": PGSYNC_VERSION, "rows": rows, "documents": count,
        "complete": count == rows, "timed_out": timed_out, "timeout_s": timeout,
        "exit_code": proc.returncode, "wall_s": round(wall, 2),
        "docs_per_s": round(count / wall, 1), "bootstrap_s": round(bootstrap_s, 2),
        "peak_rss_mb": round(watch.peak_kb / 1024, 1), "cpu_s": cpu, "machine_busy_before": busy_before,
        "log_tail": log_path.read_text(errors="replace")[-1500:],
        "settings": settings(env),
    }


# --- live (scenario 2) ------------------------------------------------------------------------------


def _live_rate(ctx: dict[str, Any], proc: subprocess.Popen, rate: float | None, seq_start: int) -> dict[str, Any]:
    """One offered rate against a live PGSync: the workload's Writer and Probe, and the percentiles,
    as for flusso. The drain ends when the fence is searchable and PGSync is past it: in WAL mode its
    slot is acknowledged past the LSN read just before the fence's commit (PGSync acknowledges a
    commit after its bulk request, and nothing else commits in this database meanwhile); in daemon
    mode its Redis queue is empty (a batch it already popped may still be in flight).
    `--drain-timeout` bounds it: a PGSync that has not drained by then did not keep up, and what it
    processed so far is its rate."""
    mode, dsn, client, index, pools = ctx["mode"], ctx["dsn"], ctx["client"], ctx["index"], ctx["pools"]
    log_path = ctx["log_path"]
    label = rate_label(rate)
    threads = ctx["max_writers"] if rate is None else ctx["writers"]
    busy_before = wait_quiet(*ctx["quiet"])
    log(f"pgsync ({mode}) live at {label} changes/s for {ctx['seconds']:g}s ({threads} writers)")
    probe = Probe(client, index, pools, ctx["poll_ms"], dsn, ctx["slot"] if mode == "wal" else None)
    samples = probe.samples
    probe.start()
    cpu0 = cpu_groups(proc.pid)
    os0 = opensearch_stats(client, index)
    processed0 = daemon_processed(log_path) if mode == "daemon" else (0, 0)
    wall0 = time.time()
    writer = Writer(dsn, pools, samples, rate, ctx["seconds"], threads, ctx["sample_every"], seq_start,
                    ctx["seed"])
    written = writer.run()
    writer_end = time.monotonic()
    cpu1 = cpu_groups(proc.pid)
    os_stats = stats_delta(os0, opensearch_stats(client, index))
    lag_at_end = slot_lag(dsn, ctx["slot"]) if mode == "wal" else None
    fence_book = pools.sample_book()
    if fence_book is None:  # every pool book has a sample pending (far behind): the oldest sample's book
        with samples.lock:
            fence_book = next(iter(samples.pending.values()))[0]
    fence = f"fence{RUN_TAG}-{seq_start}"
    queue = f"queue:{ctx['slot']}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        before = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
        conn.execute("UPDATE book SET subtitle = %s WHERE id = %s", (fence, fence_book))
        samples.add(fence, fence_book, time.monotonic())
        deadline = writer_end + ctx["drain_timeout"]
        past = None  # when PGSync was first seen past the fence
        while time.monotonic() < deadline and proc.poll() is None:
            if past is None:
                if mode == "wal":
                    _, info = read_slot(conn, ctx["slot"], wal_dir=False)
                    moved = info is not None and (info.confirmed_flush_lsn or 0) > lsn_to_int(before)
                    past = time.monotonic() if moved else None
                elif fence in samples.seen and redis_llen(queue) == 0:
                    past = time.monotonic()
            if past is not None and fence in samples.seen:
                break
            time.sleep(0.05)
    drained = max(past, samples.seen[fence]) if past is not None and fence in samples.seen else None
    ended = drained if drained is not None else time.monotonic()
    wall_ended = time.time() - (time.monotonic() - ended)
    if mode == "wal":
        processed, documents = wal_processed(log_path, wall0, wall_ended)
    else:
        processed, documents = (a - b for a, b in zip(daemon_processed(log_path), processed0, strict=True))
    probe.stop()
    stopped = time.monotonic()
    latencies, pending, touched = probe.collect(fence)
    # not searchable by the end: their latency is at least (end - commit)
    censored = sorted(stopped - c for k, (_, c) in pending.items() if k != fence)
    check = None
    if drained is not None:
        rng = random.Random(ctx["seed"])
        ids = rng.sample(touched, min(len(touched), ctx["check"]))
        check = check_sample(dsn, ctx["opensearch"], index, client, ids)
    cpu = cpu_delta(cpu0, cpu1, "pgsync")
    drain_s = None if drained is None else drained - writer_end
    return {
        "rate": label,
        "offered_per_s": rate,
        "writers": threads,
        "writer": written,
        "latency_ms": latency_ms(latencies, len(censored), censored),
        "processed": processed,
        "documents": documents,
        "sustained_per_s": round(processed / max(wall_ended - wall0, 1e-9), 1),
        "documents_per_s": round(documents / max(wall_ended - wall0, 1e-9), 1),
        # daemon mode, not drained: `processed` counts the batch its consumers popped and still work on
        # (up to NUM_WORKERS x REDIS_READ_CHUNK_SIZE changes): an upper bound
        "sustained_upper_bound": mode == "daemon" and drained is None,
        "drain_s": round(drain_s, 2) if drain_s is not None else None,
        "drain_timeout_s": ctx["drain_timeout"],
        "fence_searchable_s": round(samples.seen[fence] - writer_end, 2) if fence in samples.seen else None,
        "kept_up": drain_s is not None and drain_s <= ctx["keep_up_s"],
        "drained": drained is not None,
        "slot_lag_bytes": probe.lag_bytes(lag_at_end),
        "redis_queue_at_end": redis_llen(queue) if mode == "daemon" else None,
        "rss_mb": round(memory_kb(proc.pid).get("VmRSS", 0) / 1024, 1),
        "cpu_s": cpu,
        "machine_busy_before": busy_before,
        "opensearch": os_stats,
        "poller": probe.searches(),
        "check": check,
        "pgsync_exit_code": proc.poll(),  # None: still running
    }


def run_live(dsn: str, opensearch: str, index: str, rates: list[float | None], seconds: float,
             mode: str = LIVE_MODE, *, drain_timeout: float = 30.0, quiet: tuple[float, float] = (0.25, 10.0),
             seed: int = 42, writers: int = 4, max_writers: int = 2, sample_every: int = 10,
             pool_every: int = 10, poll_ms: float = 50.0, keep_up_s: float = 5.0, check: int = 200,
             seed_index: bool = True) -> dict[str, Any]:
    """Scenario 2 for PGSync: live changes/s and commit-to-searchable latency at each offered rate,
    with flusso's writer (bench/workload.py: the same mix, pacing and markers), poller and percentiles.

    The mode: `wal` (default) or `daemon`. Read in PGSync 7.3.0's sync.py, WAL mode is its
    at-least-once mode: `wal_consumer` streams its slot (test_decoding) and, at each COMMIT,
    bulk-indexes the buffered rows' documents and only then acknowledges the commit's LSN
    (`_flush_buffer`: `send_feedback(flush_lsn)` after `search_client.bulk`, which raises on errors),
    so after a crash the slot replays whatever was not indexed. Daemon mode (`-d`) is not: triggers
    NOTIFY (lost while no one LISTENs), a producer pushes the payloads to Redis, consumers pop them
    with LRANGE+LTRIM *before* indexing them (a batch in flight when the process dies is gone from
    the queue), and the slot that could replay them is consumed wholesale on a timer
    (`truncate_slots`, every REPLICATION_SLOT_CLEANUP_INTERVAL) whatever the consumers' progress; its
    restart recovery (`pull`: root rows with xmin >= the checkpoint, plus what is left in the slot)
    cannot see child-row changes or deletes once the slot was truncated. Daemon mode also fires a
    trigger (JSON + NOTIFY) inside every writer transaction.

    No initial sync: PGSync's is quadratic on this schema (see run_backfill). The index is created by
    PGSync at start-up (its mapping) and seeded (`seed_index`) with every book's document plus the
    `_meta` PGSync's change handlers search (so a renamed author or a deleted review finds the same
    documents to rebuild as after a real initial sync; `seed_documents`); then PGSync starts from the current position
    (see `_start_live`). A rate PGSync does not drain within `drain_timeout` is reported as not kept
    up, with the changes/s it processed until then, and PGSync is restarted from the current
    position before the next rate (its backlog dropped), so each rate starts from zero backlog; the
    index is not seeded again: documents it did not get to stay stale, which matters only to which
    documents a later change finds through `_meta`."""
    if mode not in LIVE_MODES:
        raise ValueError(f"mode {mode!r}: one of {LIVE_MODES}")
    started = time.monotonic()
    bin_dir, database, schema = prepare(dsn, index)
    # INFO: WAL mode's per-commit `flushing buffer with N docs` lines (its processed changes), not
    # opensearch-py's line per request
    env = {**environment(dsn, opensearch), "CONSOLE_LOGGING_HANDLER_MIN_LEVEL": "INFO",
           "CUSTOM_LOGGING": "opensearch=WARNING,elasticsearch=WARNING,elastic_transport=WARNING,urllib3=WARNING"}
    slot = slot_name(database, index)
    client = OpenSearch(hosts=[opensearch], timeout=60)
    log_path = WORK / f"{index}-live.log"
    log_path.write_text("")
    teardown(bin_dir, schema, env)  # a slot, triggers or a queue a crashed run left behind
    client.indices.delete(index=index, ignore=404)
    for f in WORK.glob(f".{slot}*"):
        f.unlink()
    ctx = {"mode": mode, "dsn": dsn, "opensearch": opensearch, "client": client, "index": index, "slot": slot,
           "log_path": log_path, "seconds": seconds, "writers": writers, "max_writers": max_writers,
           "sample_every": sample_every, "poll_ms": poll_ms, "keep_up_s": keep_up_s,
           "drain_timeout": drain_timeout, "quiet": quiet, "seed": seed, "check": check}
    results: list[dict[str, Any]] = []
    peak_kb = 0
    proc: subprocess.Popen | None = None
    watch: Watch | None = None
    seeded = None
    try:
        ctx["pools"] = Pools(dsn, pool_every)
        for i, rate in enumerate(rates):
            startup_s = None
            if proc is None:
                proc, startup_s = start_live(bin_dir, schema, env, mode, dsn, slot, log_path)
                watch = Watch(proc.pid, every=0.2)
                watch.start()
                if seeded is None and seed_index:
                    seeded = seed_documents(dsn, opensearch, index, client)
                    log(f"  seeded {index}: {seeded}")
            result = _live_rate(ctx, proc, rate, seq_start=(i + 1) * 10**8)
            result["started_s"] = round(startup_s, 2) if startup_s is not None else None  # a (re)start before
            results.append(result)
            log(f"  {result['rate']}: written {result['writer']['achieved_per_s']}/s, sustained "
                    f"{result['sustained_per_s']}/s, p50/p95/p99 {result['latency_ms']['p50']}/"
                    f"{result['latency_ms']['p95']}/{result['latency_ms']['p99']} ms, drain {result['drain_s']} s")
            if not result["drained"] or proc.poll() is not None:
                # not drained: drop the backlog, so that the next rate starts from zero as flusso's did
                peak_kb = max(peak_kb, watch.peak_kb)
                stop(proc)
                watch.done.set()
                proc = None
    finally:
        if proc is not None:
            peak_kb = max(peak_kb, watch.peak_kb)
            stop(proc)
            watch.done.set()
        cancel_queries(dsn)
        teardown(bin_dir, schema, env)
        client.indices.delete(index=index, ignore=404)
    return {
        "system": "pgsync", "version": PGSYNC_VERSION, "mode": mode, "rates": results,
        "seeded": seeded, "peak_rss_mb": round(peak_kb / 1024, 1), "elapsed_s": round(time.monotonic() - started, 1),
        "log": str(log_path), "log_tail": log_path.read_text(errors="replace")[-1500:],
        "settings": settings(env),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--books", type=int, default=10_000)
    parser.add_argument("--database", default="flusso_bench_pgsync")
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--opensearch", default=DEFAULT_OPENSEARCH)
    parser.add_argument("--index", default=None, help="default: bench_pgsync_books (--live: bench_pgsync_live)")
    parser.add_argument("--timeout", type=float, default=180.0, help="initial sync: stop after this long")
    parser.add_argument("--live", action="store_true", help="scenario 2 (live) instead of the initial sync")
    parser.add_argument("--mode", choices=LIVE_MODES, default=LIVE_MODE, help="--live: PGSync's mode")
    parser.add_argument("--rates", type=parse_rates, default=parse_rates("500,2000,max"))
    parser.add_argument("--seconds", type=float, default=20.0, help="--live: seconds of writes per rate")
    parser.add_argument("--drain-timeout", type=float, default=30.0,
                        help="--live: a rate not drained this long after the writes did not keep up")
    parser.add_argument("--max-writers", type=int, default=2)
    parser.add_argument("--no-seed", action="store_true", help="--live: leave the index empty at the start")
    parser.add_argument("--quiet", type=float, default=0.35)
    parser.add_argument("--quiet-timeout", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    dsn, _ = ensure_data(args.dsn, args.database, args.books, 42, pristine=not args.live)
    if args.live:
        result = run_live(dsn, args.opensearch, args.index or "bench_pgsync_live", args.rates, args.seconds,
                          args.mode, drain_timeout=args.drain_timeout, quiet=(args.quiet, args.quiet_timeout),
                          max_writers=args.max_writers, seed_index=not args.no_seed)
    else:
        result = run_backfill(dsn, args.opensearch, args.index or "bench_pgsync_books", args.timeout)
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
