"""The `reseed` scenario (issue #12): a forced reseed of a live index, as its searchers see it.

    python bench/reseed.py [--books 100000] [--rate 100] [--writers 4] [--poll-ms 50] [--tail-s 3]
                           [--raw-docs-per-s N] [--name reseed-100000] [--note TEXT]
                           [--database flusso_bench_reseed] [--prefix bench_reseed]

The bookstore is generated afresh (`--books`) into a database of its own, the `raw` baseline is
measured on those rows (bench/raw.py, built the way a generation is built), and the index is
seeded by a first `flusso backfill`. Then `flusso run` follows it live in a child process, writer
threads commit random DML to every table (bench/dml.py: books and child rows inserted, updated,
deleted, `--rate` commits/s in all), a poller searches and counts the index by its configured name
every `--poll-ms` with the root table's `count(*)` beside it (bench/reseed_probe.py), and after
`--warmup-s` seconds `flusso backfill --force --index NAME` runs as a child process, timed. Polling
goes on `--tail-s` s after it exits; then the writers stop, live capture is given until the slot is
acknowledged past a last commit (the fence), touched documents are compared with a fresh build,
and live capture stops.

It measures, never asserts. The reseed's documents are what its log reports (written or deleted:
a book live capture rewrote meanwhile is a version conflict, not counted), `rows` the root rows
it set out with. Reported: the reseed's wall seconds and documents/s against raw's;
from the reseed's start to `--tail-s` s after its end, the longest gap between successful searches,
the failed polls (404 or other), the lowest count and the root rows at that moment, the largest
shortfall `root rows - count` (and the same figures before the reseed: what live lag alone gives);
the writers' commits, live capture's warnings, whether the index converged. Writes
bench/results/<name>.json (every poll included); bench/report.py puts them in bench/RESULTS.md.
The index is only ever read through its configured name, so it works when that name is an alias.
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
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from opensearchpy import OpenSearch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import harness  # noqa: E402
import raw  # noqa: E402
from dml import MIX, DmlWriter  # noqa: E402
from e2e import log_lines  # noqa: E402
from reseed_probe import RootCounter, SearchPoller, summarize, timeline  # noqa: E402

RESULTS = ROOT / "bench" / "results"
ROOT_TABLE = "public.book"
_DONE = re.compile(r"backfill of \S+ done: (\d+) documents in ([0-9.]+)s")
_ROWS = re.compile(r"backfill of \S+: (\d+) rows in the root table")
_NOTICE = re.compile(r" (WARNING|ERROR) ")


@dataclass
class Params:
    books: int = 100_000
    rate: float = 100.0
    writers: int = 4
    poll_ms: float = 50.0
    warmup_s: float = 5.0
    tail_s: float = 3.0
    converge_timeout_s: float = 300.0
    check: int = 500
    database: str = "flusso_bench_reseed"
    prefix: str = "bench_reseed"  # slot and publication; the index is PREFIX_books
    dsn: str = harness.DEFAULT_DSN
    opensearch: str = harness.DEFAULT_OPENSEARCH
    raw_chunks: str = "500,1000,2000"
    raw_threads: str = "1,2"
    raw_docs_per_s: float | None = None  # a figure measured before: skips the raw trials
    quiet: float = 0.35
    quiet_timeout: float = 10.0
    seed: int = 42


def cleanup(config: Path, client: OpenSearch, index: str) -> None:
    """The slot and publication, and every index under the name: the index or the alias with its
    generations, and the dead-letter index."""
    harness.flusso("teardown", "--yes", config=config)
    for name in client.indices.get(index=f"{index}*", ignore=404, expand_wildcards="all"):
        if name.startswith(index):
            client.indices.delete(index=name, ignore=404)


def measure_raw(p: Params, dsn: str, workdir: Path) -> dict[str, Any]:
    if p.raw_docs_per_s is not None:
        return {"system": "raw", "docs_per_s": p.raw_docs_per_s, "given": True}
    config, index = harness.write_config(workdir / "raw.yaml", dsn, p.opensearch, f"{p.prefix}_raw")
    return {"system": "raw", **raw.run_raw(config, index, p.opensearch, [int(c) for c in p.raw_chunks.split(",")],
                                           [int(t) for t in p.raw_threads.split(",")], (p.quiet, p.quiet_timeout))}


def reseed(config: Path, index: str, log_path: Path, live_pid: int) -> dict[str, Any]:
    """`flusso backfill --force --index INDEX` as a child: its wall time, documents, CPU, peak RSS."""
    cpu0 = harness.cpu_snapshot(live_pid)
    started = time.monotonic()
    with log_path.open("w") as out:
        proc = subprocess.Popen([*harness.FLUSSO, "backfill", "--force", "--index", index, "-c", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    watch = harness.Watch(proc.pid, every=0.1)
    watch.start()
    cpu = 0.0
    while proc.poll() is None:
        cpu = harness.cpu_seconds(proc.pid) or cpu
        time.sleep(0.05)
    ended = time.monotonic()
    watch.done.set()
    text = log_path.read_text(errors="replace")
    m = _DONE.search(text)
    documents = int(m.group(1)) if m else None
    rows = int(r.group(1)) if (r := _ROWS.search(text)) else None
    wall = ended - started
    return {"started": started, "ended": ended, "exit_code": proc.returncode, "wall_s": round(wall, 2),
            "rows": rows, "documents": documents, "docs_per_s": round(documents / wall, 1) if documents else None,
            "engine_s": float(m.group(2)) if m else None,
            "engine_docs_per_s": round(documents / float(m.group(2)), 1) if m and float(m.group(2)) else None,
            "peak_rss_mb": round(watch.peak_kb / 1024, 1),
            "cpu_s": {**harness.cpu_delta(cpu0, harness.cpu_snapshot(live_pid), system="live"),
                      "reseed": round(max(cpu, watch.last_cpu), 2)},
            "log_tail": text[-1500:] if proc.returncode else None}


def converge(p: Params, dsn: str, config: Path, index: str, client: OpenSearch, touched: list[int]) -> dict[str, Any]:
    """After the writers: a last commit (the fence); once the slot is acknowledged past it, the count
    against the root rows, and a sample of the touched documents against a fresh build."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE book SET subtitle = 'fence' WHERE id = (SELECT min(id) FROM book)")
        lsn = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
        began = time.monotonic()
        acked = harness.wait_confirmed(dsn, p.prefix, lsn, p.converge_timeout_s)
        client.indices.refresh(index=index)
        count = client.count(index=index)["count"]
        rows = conn.execute("SELECT count(*) FROM book").fetchone()[0]
    ids = random.Random(p.seed).sample(touched, min(len(touched), p.check))
    check = harness.check_documents(harness.built_documents(config, index, ids), client, index, ids)
    return {"acked_s": round(acked - began, 2) if acked else None, "count": count, "root_rows": rows,
            "converged": acked is not None and count == rows and check["differing"] == 0, "check": check}


def notices(log_path: Path, since: float, until: float) -> dict[str, Any]:
    """Live capture's WARNING and ERROR lines between two wall-clock times."""
    lines = [line for _, line in log_lines(log_path, since, until) if _NOTICE.search(line)]
    return {"count": len(lines), "first": [line[:300] for line in lines[:5]]}


def run_reseed(p: Params, workdir: Path) -> dict[str, Any]:
    dsn, generated = harness.ensure_data(p.dsn, p.database, p.books, p.seed, pristine=True)
    report: dict[str, Any] = {"books": p.books, "generation_s": generated}
    harness.log("reseed: raw baseline")
    report["raw"] = measure_raw(p, dsn, workdir)
    client = OpenSearch(hosts=[p.opensearch], timeout=120)
    config, index = harness.write_config(workdir / "flusso.yaml", dsn, p.opensearch, p.prefix)
    cleanup(config, client, index)
    live_log = workdir / "live.log"
    live = writer = poller = roots = None
    try:
        harness.log(f"reseed: seeding {index}")
        seeded = harness.flusso("backfill", config=config, timeout=3600)
        if seeded.returncode != 0:
            raise RuntimeError(f"the first flusso backfill exited {seeded.returncode}:\n{seeded.stderr[-3000:]}")
        report["seed"] = {"documents": client.count(index=index)["count"]}
        report["machine_busy_before"] = harness.wait_quiet(p.quiet, p.quiet_timeout)
        live = harness.start_flusso(config, live_log, live_within=300)
        roots = RootCounter(dsn, ROOT_TABLE)
        poller = SearchPoller(p.opensearch, index, p.poll_ms / 1000)
        writer = DmlWriter(dsn, p.rate, p.writers, p.seed)
        for part in (roots, poller, writer):
            part.start()
        time.sleep(p.warmup_s)
        wall0 = time.time()
        harness.log(f"reseed: flusso backfill --force --index {index} under {p.rate:g} commits/s")
        done = reseed(config, index, workdir / "reseed.log", live.pid)
        time.sleep(p.tail_s)
        poller.stop.set()
        roots.stop.set()
        poller.join()
        roots.join()
        started, ended = done.pop("started"), done.pop("ended")
        report["reseed"] = done
        report["probe"] = summarize(poller.polls, roots, started, ended, p.tail_s)
        report["writer"] = writer.finish()
        report["live"] = {"notices_during_reseed": notices(live_log, wall0, time.time()),
                          "exited_early": live.poll()}
        harness.log("reseed: waiting for live capture to converge")
        report["after"] = converge(p, dsn, config, index, client, sorted(writer.rows.touched))
        report["timeline"] = timeline(poller.polls, roots, started)
    finally:
        for part in (writer, poller, roots):
            if part is not None and hasattr(part, "stop"):
                part.stop.set()
        if writer is not None and writer.t1 == 0.0:
            writer.finish()
        if live is not None:
            harness.stop_process(live)
            report.setdefault("live", {})["exit_code"] = live.returncode
            if live.returncode:
                report["live"]["log_tail"] = live_log.read_text(errors="replace")[-2000:]
        cleanup(config, client, index)
    r, b = report["raw"]["docs_per_s"], report["reseed"]["docs_per_s"]
    report["ratio_over_raw"] = round(b / r, 2) if r and b else None
    return report


def table(report: dict[str, Any]) -> str:
    """The short table the CLI prints."""
    s, w, raw_, after = report["reseed"], report["writer"], report["raw"], report["after"]
    q, before = report["probe"]["reseed"], report["probe"]["before"]
    f = lambda v: "-" if v is None else f"{v:,}"  # noqa: E731
    failed = ", ".join(f"{k}: {v}" for k, v in sorted(q["failed_by_status"].items())) or "none"
    return "\n".join([
        f"forced reseed of {report['books']:,} books under {w['achieved_per_s']:g} commits/s of live writes",
        f"  reseed      {s['wall_s']} s wall, {f(s['documents'])} documents = {f(s['docs_per_s'])} docs/s "
        f"(engine's own {f(s['engine_docs_per_s'])}); exit {s['exit_code']}",
        f"  raw         {f(raw_['docs_per_s'])} docs/s; reseed/raw = {report['ratio_over_raw']}",
        f"  searches    longest gap {f(q['longest_gap_ms'])} ms (before the reseed: {f(before['longest_gap_ms'])} ms); "
        f"failed polls {q['failed_polls']} of {q['polls']} ({failed})",
        f"  count       min {f(q['min_count'])} at {q['min_count_at_s']} s "
        f"(root rows then {f(q['root_rows_at_min_count'])}); "
        f"largest shortfall {f(q['max_shortfall'])} (before: {f(before['max_shortfall'])}); "
        f"polls below 99% of the rows: {q['polls_below_99pct']}",
        f"  after       count {f(after['count'])}, root rows {f(after['root_rows'])}; "
        f"{after['check']['differing']}/{after['check']['checked']} touched documents differ; "
        f"live exit {report['live'].get('exit_code')}, {report['live']['notices_during_reseed']['count']} "
        "warnings/errors in its log during the reseed",
    ])


def run(p: Params, name: str, note: str | None = None) -> dict[str, Any]:
    """The scenario with its context, written to bench/results/<name>.json."""
    report: dict[str, Any] = {"benchmark": "reseed", "name": name, "note": note, **harness.git_commit(),
                              "machine": harness.machine(), "started_at": datetime.now().isoformat(timespec="seconds"),
                              "parameters": harness.public(asdict(p)), "mix": dict(MIX)}
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="flusso-bench-reseed-"))
    report.update(run_reseed(p, workdir))
    report["elapsed_s"] = round(time.monotonic() - began, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    harness.log(f"wrote bench/results/{name}.json in {report['elapsed_s']} s")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Params()
    for field, value in asdict(defaults).items():
        kind = float if field == "raw_docs_per_s" else type(value)
        parser.add_argument(f"--{field.replace('_', '-')}", type=kind, default=value)
    parser.add_argument("--name", default=None, help="results file name (default: reseed-<books>)")
    parser.add_argument("--note", default=None, help="a line for RESULTS.md (e.g. the change it measures)")
    parser.add_argument("--no-report", action="store_true", help="do not regenerate bench/RESULTS.md")
    args = vars(parser.parse_args())
    name, note, no_report = args.pop("name"), args.pop("note"), args.pop("no_report")
    p = Params(**args)
    report = run(p, name or f"reseed-{p.books}", note)
    print(table(report))
    if not no_report:
        import report as report_md

        report_md.write_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
