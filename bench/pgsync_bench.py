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
against bench/e2e.py's writer, poller and percentiles at each offered rate; see `run_live`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from opensearchpy import OpenSearch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import e2e  # noqa: E402

PGSYNC_VERSION = "7.3.0"  # the latest on PyPI that installs on Python 3.11 (2026-11)
STATE = ROOT / ".flusso"
VENV = STATE / "pgsync-venv"
REDIS_DIR = STATE / "redis"
REDIS_PORT = 6390
WORK = STATE / "pgsync"
SCHEMA = ROOT / "bench" / "pgsync" / "schema.json"


def ensure_venv() -> Path:
    if not (VENV / "bin" / "pgsync").exists():
        e2e.log(f"installing pgsync=={PGSYNC_VERSION} into {VENV}")
        py = shutil.which("python3.11") or shutil.which("python3") or sys.executable
        subprocess.run([py, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        f"pgsync=={PGSYNC_VERSION}"], check=True)
    return VENV / "bin"


def ensure_redis() -> None:
    if shutil.which("redis-server") is None:
        e2e.log("installing redis-server (apt-get)")
        subprocess.run(["apt-get", "install", "-y", "redis-server"], check=True, capture_output=True)
    ping = subprocess.run(["redis-cli", "-p", str(REDIS_PORT), "ping"], capture_output=True, text=True)
    if ping.stdout.strip() == "PONG":
        return
    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--dir", str(REDIS_DIR),
                    "--daemonize", "yes", "--pidfile", str(REDIS_DIR / "redis.pid"),
                    "--logfile", str(REDIS_DIR / "redis.log"), "--save", "", "--appendonly", "no"], check=True)
    for _ in range(50):
        ping = subprocess.run(["redis-cli", "-p", str(REDIS_PORT), "ping"], capture_output=True, text=True)
        if ping.stdout.strip() == "PONG":
            return
        time.sleep(0.1)
    raise RuntimeError("redis-server did not start")


def environment(dsn: str, opensearch: str) -> dict[str, str]:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    return {**os.environ, "OPENSEARCH": "true", "ELASTICSEARCH": "false", "ELASTICSEARCH_URL": opensearch,
            "PG_USER": str(info.get("user", "postgres")), "PG_PASSWORD": str(info.get("password", "")),
            "PG_HOST": str(info.get("host", "127.0.0.1")), "PG_PORT": str(info.get("port", 5432)),
            "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(REDIS_PORT), "CHECKPOINT_PATH": str(WORK) + "/",
            # smaller fetch/bulk chunks than the defaults (10,000 / 5,000) so that a bounded run shows
            # its progress at ~10 documents/s; PGSync's bulk stays parallel (4 threads)
            "QUERY_CHUNK_SIZE": "100", "ELASTICSEARCH_CHUNK_SIZE": "100"}


def write_schema(database: str, index: str) -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    text = SCHEMA.read_text().replace("${DATABASE}", database).replace("${INDEX}", index)
    path = WORK / f"schema-{index}.json"
    path.write_text(text)
    return path


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT, then SIGKILL the process group PGSync started (its bulk pool does not always exit)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(5)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


def _cancel_queries(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                     "AND pid <> pg_backend_pid() AND state = 'active'")


def teardown(bin_dir: Path, schema: Path, env: dict[str, str]) -> None:
    subprocess.run([str(bin_dir / "bootstrap"), "--teardown", "-c", str(schema)], cwd=WORK, env=env,
                   capture_output=True, timeout=120)


def run_backfill(dsn: str, opensearch: str, index: str, timeout: float,
                 quiet: tuple[float, float] = (1.0, 0.0)) -> dict[str, Any]:
    bin_dir = ensure_venv()
    ensure_redis()
    database = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    schema = write_schema(database, index)
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
    done = subprocess.run([str(bin_dir / "bootstrap"), "-c", str(schema)], cwd=WORK, env=env,
                          capture_output=True, text=True, timeout=300)
    bootstrap_s = time.monotonic() - boot
    if done.returncode != 0:
        raise RuntimeError(f"pgsync bootstrap failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    busy_before = e2e.wait_quiet(*quiet)
    cpu0 = e2e.cpu_snapshot()
    started = time.monotonic()
    with log_path.open("w") as out:
        proc = subprocess.Popen([str(bin_dir / "pgsync"), "-c", str(schema)], cwd=WORK, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    watch = e2e.Watch(proc.pid, every=0.2)
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
        _stop(proc)
        watch.done.set()
        _cancel_queries(dsn)
    try:
        while True:
            client.indices.refresh(index=index)
            count = client.count(index=index)["count"]
            if count >= rows or timed_out or time.monotonic() - started > timeout + 60:
                break
            time.sleep(0.1)
    except Exception as err:  # noqa: BLE001 - the index may not exist when nothing was written
        e2e.log(f"pgsync index {index}: {err}")
    wall = time.monotonic() - started
    cpu0["flusso"] = 0.0
    cpu = e2e.cpu_delta(cpu0, {**e2e.cpu_snapshot(), "flusso": cpu_pgsync})
    cpu["pgsync"] = cpu.pop("flusso")
    teardown(bin_dir, schema, env)
    client.indices.delete(index=index, ignore=404)
    return {
        "system": "pgsync", "version": PGSYNC_VERSION, "rows": rows, "documents": count,
        "complete": count == rows, "timed_out": timed_out, "timeout_s": timeout,
        "exit_code": proc.returncode, "wall_s": round(wall, 2),
        "docs_per_s": round(count / wall, 1), "bootstrap_s": round(bootstrap_s, 2),
        "peak_rss_mb": round(watch.peak_kb / 1024, 1), "cpu_s": cpu, "machine_busy_before": busy_before,
        "log_tail": log_path.read_text(errors="replace")[-1500:],
        "settings": {k: env[k] for k in ("OPENSEARCH", "REDIS_PORT", "QUERY_CHUNK_SIZE", "ELASTICSEARCH_CHUNK_SIZE")},
    }


# --- live (scenario 2) ------------------------------------------------------------------------------

LIVE_MODES = ("wal", "daemon")
LIVE_MODE = "wal"  # PGSync's at-least-once mode: see run_live
_STATUS = re.compile(r"Xlog: \[([\d,]+)\] => Db: \[([\d,]+)\] => Redis: \[([\d,]+)\] => \w+: \[([\d,]+)\]")
_WAL_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3}):INFO:pgsync\.sync: "
                       r"(flushing buffer|sending bulk) (?:with|of) (\d+) docs", re.MULTILINE)
_WAL_READY = "Starting logical replication stream"


def slot_name(database: str, index: str) -> str:
    """PGSync's name for the slot, the checkpoint file (`.NAME`) and the Redis queue (`queue:NAME`)."""
    return re.sub("[^0-9a-zA-Z_]+", "", f"{database.lower()}_{index}")


def _redis_llen(key: str) -> int:
    """LLEN over RESP (flusso's venv has no redis client)."""
    with socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=5) as sock:
        sock.sendall(f"*2\r\n$4\r\nLLEN\r\n${len(key)}\r\n{key}\r\n".encode())
        reply = sock.recv(64)
    return int(reply[1:].split(b"\r\n")[0])


def _redis_pid() -> int | None:
    try:
        return int((REDIS_DIR / "redis.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _cpu(pid: int) -> dict[str, float]:
    """e2e's CPU groups, PGSync's process as `flusso` (renamed by the caller) and redis-server apart."""
    snap = e2e.cpu_snapshot(pid)
    redis = _redis_pid()
    snap["redis"] = e2e._ticks(redis) if redis else 0.0
    return snap


def _wal_processed(log_path: Path, since: float, until: float) -> tuple[int, int]:
    """Row changes and documents PGSync's WAL consumer handled between two wall times: its `flushing
    buffer with N docs` lines (N: the row changes of a commit, whose documents are bulk-indexed before
    the commit is acknowledged) and `sending bulk of N docs` lines (N: documents)."""
    changes = docs = 0
    for m in _WAL_LINE.finditer(log_path.read_text(errors="replace")):
        t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(m.group(2)) / 1000
        if since <= t <= until:
            if m.group(3) == "flushing buffer":
                changes += int(m.group(4))
            else:
                docs += int(m.group(4))
    return changes, docs


def _daemon_processed(log_path: Path) -> tuple[int, int]:
    """Row changes the daemon has taken off its queue so far and documents it has indexed, from its
    last status line (printed every 0.5 s): changes replayed from the slot (Xlog) + notifications
    received (Db) - still queued (Redis); documents: its bulk successes. Its consumers pop up to
    REDIS_READ_CHUNK_SIZE (1,000) changes at a time before indexing them, so while it is behind the
    changes include the batches in flight."""
    found = _STATUS.findall(log_path.read_text(errors="replace")[-20_000:])
    if not found:
        return 0, 0
    xlog, db, queued, docs = (int(v.replace(",", "")) for v in found[-1])
    return xlog + db - queued, docs


def _build_meta(dsn: str, ids: list[int]) -> dict[int, dict]:
    """PGSync's private `_meta` of each book (the keys of every row its document is made of, per table, as
    its own documents carry them): its change handlers search it to find the documents a child row is in."""
    query = """
        SELECT b.id, b.publisher_id,
               (SELECT array_agg(d.book_id) FROM book_detail d WHERE d.book_id = b.id),
               (SELECT array_agg(DISTINCT ba.author_id) FROM book_author ba WHERE ba.book_id = b.id),
               (SELECT array_agg(r.id ORDER BY r.id) FROM review r WHERE r.book_id = b.id),
               (SELECT array_agg(DISTINCT r.reader_id) FROM review r
                 WHERE r.book_id = b.id AND r.reader_id IS NOT NULL),
               (SELECT array_agg(DISTINCT rt.review_id) FROM review r JOIN review_tag rt ON rt.review_id = r.id
                 WHERE r.book_id = b.id),
               (SELECT array_agg(DISTINCT rt.tag_id) FROM review r JOIN review_tag rt ON rt.review_id = r.id
                 WHERE r.book_id = b.id)
          FROM book b WHERE b.id = ANY(%s)"""
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for book, publisher, detail, authors, reviews, readers, rt_reviews, tags in conn.execute(query, (ids,)):
            meta: dict[str, dict[str, list]] = {}
            if publisher is not None:
                meta["publisher"] = {"id": [publisher]}
            if detail:
                meta["book_detail"] = {"book_id": detail}
            if authors:
                meta["author"] = {"id": authors}
                meta["book_author"] = {"author_id": authors, "book_id": [book]}
            if reviews:
                meta["review"] = {"id": reviews}
            if readers:
                meta["reader"] = {"id": readers}
            if tags:
                meta["tag"] = {"id": tags}
                meta["review_tag"] = {"review_id": rt_reviews, "tag_id": tags}
            meta["book"] = {"id": [str(book)]}
            out[book] = meta
    return out


def seed_documents(dsn: str, opensearch: str, index: str, client: OpenSearch, batch: int = 1000) -> dict[str, Any]:
    """Every book's document, as after an initial sync, without PGSync's quadratic initial-sync query:
    flusso's SQL builder output (the same fields and nesting as PGSync's documents) plus PGSync's
    `_meta`, bulk-indexed into the index PGSync created (its mapping). PGSync rebuilds a document
    whole from the rows whenever a change touches it."""
    import raw  # flusso's builder: imported here so that the backfill side does not need it
    from opensearchpy import helpers

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="flusso-bench-pgsync-seed-"))
    config, flusso_index = e2e.write_config(workdir / "flusso.yaml", dsn, opensearch, "bench_pgsync_seed")
    docs, _, _ = raw.precompute(config, flusso_index, batch)
    metas = _build_meta(dsn, [int(k) for k in docs])

    def actions():
        for key, text in docs.items():
            doc = json.loads(text)
            doc["_meta"] = metas[int(key)]
            yield {"_index": index, "_id": key, "_source": doc}

    errors = [info for ok, info in helpers.streaming_bulk(client, actions(), chunk_size=1000, raise_on_error=False)
              if not ok]
    client.indices.refresh(index=index)
    count = client.count(index=index)["count"]
    shutil.rmtree(workdir, ignore_errors=True)
    if errors:
        raise RuntimeError(f"seeding {index}: {len(errors)} errors, first {errors[0]}")
    return {"documents": count, "seconds": round(time.monotonic() - started, 2)}


def _normalized(doc: Any) -> Any:
    """A document compared across the two builders: no `_meta`, `null` and `[]` the same, lists sorted."""
    if isinstance(doc, dict):
        return {k: _normalized(v) for k, v in doc.items() if k != "_meta" and v is not None and v != []}
    if isinstance(doc, list):
        return sorted((_normalized(v) for v in doc), key=lambda v: json.dumps(v, sort_keys=True, default=str))
    return doc


def check_sample(dsn: str, opensearch: str, index: str, client: OpenSearch, ids: list[int]) -> dict[str, Any]:
    """Documents touched by the run, as PGSync indexed them, against a fresh build from the database
    (flusso's builder, compared with `_normalized`)."""
    from flusso_engine.catalog import read_catalog
    from flusso_engine.config import load_config
    from flusso_engine.documents.sql import SqlDocumentBuilder

    if not ids:
        return {"checked": 0, "differing": 0, "first_differing": []}
    workdir = Path(tempfile.mkdtemp(prefix="flusso-bench-pgsync-check-"))
    config_path, flusso_index = e2e.write_config(workdir / "flusso.yaml", dsn, opensearch, "bench_pgsync_check")
    config = load_config(config_path)
    with psycopg.connect(dsn, autocommit=True) as conn:
        catalog = read_catalog(conn, config.tables())
    with SqlDocumentBuilder(config, catalog, dsn) as builder:
        expected = builder.build(flusso_index, [str(i) for i in ids]).docs
    shutil.rmtree(workdir, ignore_errors=True)
    expected = json.loads(json.dumps(expected, default=str))
    reply = client.mget(index=index, body={"ids": [str(i) for i in ids]})
    actual = {d["_id"]: d.get("_source") for d in reply["docs"]}
    differ = [i for i in expected if _normalized(expected[i]) != _normalized(actual.get(i))]
    return {"checked": len(ids), "differing": len(differ), "first_differing": differ[:5]}


def _start_live(bin_dir: Path, schema: Path, env: dict[str, str], mode: str, dsn: str, slot: str,
                log_path: Path) -> tuple[subprocess.Popen, float]:
    """PGSync live from now on, without its initial sync; returns the process once it listens.

    wal: `pgsync -c SCHEMA --wal --bootstrap`: the bootstrap of WAL mode drops PGSync's checkpoint and
    slot and creates a new slot (no triggers), then it streams from that slot: WAL mode has no initial
    sync, it starts where its slot starts. daemon: `bootstrap -c SCHEMA` (triggers, slot; clears the
    Redis queue and the checkpoint), then the checkpoint file written at `txid_current()`, then
    `pgsync -c SCHEMA -d`: its start-up `pull()` syncs the root rows with xmin >= checkpoint and the
    slot's changes since (none: this is how PGSync resumes after a restart, here as if its initial sync
    had just ended), then it LISTENs for its triggers' notifications and prints status lines."""
    began = time.monotonic()
    if mode == "daemon":
        done = subprocess.run([str(bin_dir / "bootstrap"), "-c", str(schema)], cwd=WORK, env=env,
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"pgsync bootstrap failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        with psycopg.connect(dsn, autocommit=True) as conn:
            txid = conn.execute("SELECT txid_current()").fetchone()[0]
        (WORK / f".{slot}").write_text(f"{txid}\n")
        cmd = [str(bin_dir / "pgsync"), "-c", str(schema), "--daemon"]
    else:
        cmd = [str(bin_dir / "pgsync"), "-c", str(schema), "--wal", "--bootstrap"]
    offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("a") as out:
        proc = subprocess.Popen(cmd, cwd=WORK, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while True:
        with log_path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        if (_WAL_READY in text) if mode == "wal" else bool(_STATUS.search(text)):
            return proc, time.monotonic() - began
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            raise RuntimeError(f"pgsync ({mode}) did not go live:\n{text[-3000:]}")
        time.sleep(0.1)


def _live_rate(ctx: dict[str, Any], proc: subprocess.Popen, rate: float | None, seq_start: int) -> dict[str, Any]:
    """One offered rate against a live PGSync: e2e's Writer, Samples, Poller and percentiles as for
    flusso. The drain ends when the fence is searchable and PGSync is past it: in WAL mode its slot is
    acknowledged past the LSN read just before the fence's commit (PGSync acknowledges a commit after
    its bulk request, and nothing else commits in this database meanwhile); in daemon mode its Redis
    queue is empty (a batch it already popped may still be in flight). `--drain-timeout` bounds it:
    a PGSync that has not drained by then did not keep up, and what it processed so far is its rate."""
    mode, dsn, client, index, pools = ctx["mode"], ctx["dsn"], ctx["client"], ctx["index"], ctx["pools"]
    log_path = ctx["log_path"]
    label = "max" if rate is None else f"{rate:g}"
    threads = ctx["max_writers"] if rate is None else ctx["writers"]
    busy_before = e2e.wait_quiet(*ctx["quiet"])
    e2e.log(f"pgsync ({mode}) live at {label} changes/s for {ctx['seconds']:g}s ({threads} writers)")
    samples = e2e.Samples()
    poller = e2e.Poller(client, index, samples, pools, ctx["poll_ms"] / 1000)
    lags = e2e.LagSampler(dsn, ctx["slot"]) if mode == "wal" else None
    poller.start()
    if lags:
        lags.start()
    cpu0 = _cpu(proc.pid)
    os0 = e2e.opensearch_stats(client, index)
    processed0 = _daemon_processed(log_path) if mode == "daemon" else (0, 0)
    wall0 = time.time()
    writer = e2e.Writer(dsn, pools, samples, rate, ctx["seconds"], threads, ctx["sample_every"], seq_start,
                        ctx["seed"])
    written = writer.run()
    writer_end = time.monotonic()
    cpu1 = _cpu(proc.pid)
    os_stats = e2e.stats_delta(os0, e2e.opensearch_stats(client, index))
    lag_at_end = e2e.slot_lag(dsn, ctx["slot"]) if mode == "wal" else None
    fence_book = pools.sample_book()
    if fence_book is None:  # every pool book has a sample pending (far behind): the oldest sample's book
        with samples.lock:
            fence_book = next(iter(samples.pending.values()))[0]
    fence = f"fence{e2e.RUN_TAG}-{seq_start}"
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
                    row = conn.execute("SELECT confirmed_flush_lsn > %s::pg_lsn FROM pg_replication_slots "
                                       "WHERE slot_name = %s", (before, ctx["slot"])).fetchone()
                    past = time.monotonic() if row and row[0] else None
                elif fence in samples.seen and _redis_llen(queue) == 0:
                    past = time.monotonic()
            if past is not None and fence in samples.seen:
                break
            time.sleep(0.05)
    drained = max(past, samples.seen[fence]) if past is not None and fence in samples.seen else None
    ended = drained if drained is not None else time.monotonic()
    wall_ended = time.time() - (time.monotonic() - ended)
    if mode == "wal":
        processed, documents = _wal_processed(log_path, wall0, wall_ended)
    else:
        processed, documents = (a - b for a, b in zip(_daemon_processed(log_path), processed0, strict=True))
    time.sleep(ctx["poll_ms"] / 1000 * 2)
    poller.stop.set()
    poller.join()
    if lags:
        lags.stop.set()
        lags.join()
    stopped = time.monotonic()
    with samples.lock:
        latencies = sorted(v for k, v in samples.latencies.items() if k != fence)
        # not searchable by the end: their latency is at least (end - commit)
        censored = sorted(stopped - c for k, (_, c) in samples.pending.items() if k != fence)
        samples.pending.clear()
    with pools.lock:
        pools.pending_books.clear()
        touched = sorted(pools.touched)
        pools.touched.clear()
    bounds = sorted(latencies + censored)  # the k-th of these is a lower bound of the k-th latency

    def pct_ms(p: float) -> int | None:
        return round(1000 * e2e.pct(bounds, p)) if bounds else None

    lower = [p for p in ("p50", "p95", "p99") if censored and bounds and
             e2e.pct(bounds, float(p[1:])) >= censored[0]]
    check = None
    if drained is not None:
        rng = random.Random(ctx["seed"])
        ids = rng.sample(touched, min(len(touched), ctx["check"]))
        check = check_sample(dsn, ctx["opensearch"], index, client, ids)
    cpu = e2e.cpu_delta(cpu0, cpu1)
    cpu["pgsync"] = cpu.pop("flusso")
    drain_s = None if drained is None else drained - writer_end
    return {
        "rate": label,
        "offered_per_s": rate,
        "writers": threads,
        "writer": written,
        "latency_ms": {
            "samples": len(latencies),
            "missing": len(censored),
            "p50": pct_ms(50), "p95": pct_ms(95), "p99": pct_ms(99),
            "lower_bound": lower,  # these percentiles fall on samples never seen: true value >= the figure
            "max": round(1000 * bounds[-1]) if bounds else None,
            "mean": round(1000 * statistics.fmean(latencies)) if latencies else None,
        },
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
        "slot_lag_bytes": ({"at_end": lag_at_end, "max": max(lags.values) if lags.values else None}
                           if lags else None),
        "redis_queue_at_end": _redis_llen(queue) if mode == "daemon" else None,
        "rss_mb": round(e2e._status(proc.pid).get("VmRSS", 0) / 1024, 1),
        "cpu_s": cpu,
        "machine_busy_before": busy_before,
        "opensearch": os_stats,
        "poller": {"searches": poller.searches, "errors": poller.errors},
        "check": check,
        "pgsync_exit_code": proc.poll(),  # None: still running
    }


def run_live(dsn: str, opensearch: str, index: str, rates: list[float | None], seconds: float,
             mode: str = LIVE_MODE, *, drain_timeout: float = 30.0, quiet: tuple[float, float] = (0.25, 10.0),
             seed: int = 42, writers: int = 4, max_writers: int = 2, sample_every: int = 10,
             pool_every: int = 10, poll_ms: float = 50.0, keep_up_s: float = 5.0, check: int = 200,
             seed_index: bool = True) -> dict[str, Any]:
    """Scenario 2 for PGSync: live changes/s and commit-to-searchable latency at each offered rate,
    with bench/e2e.py's writer (the same mix, pacing and markers), poller and percentiles.

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
    bin_dir = ensure_venv()
    ensure_redis()
    database = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    schema = write_schema(database, index)
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
    watch: e2e.Watch | None = None
    seeded = None
    try:
        ctx["pools"] = e2e.Pools(dsn, pool_every)
        for i, rate in enumerate(rates):
            startup_s = None
            if proc is None:
                proc, startup_s = _start_live(bin_dir, schema, env, mode, dsn, slot, log_path)
                watch = e2e.Watch(proc.pid, every=0.2)
                watch.start()
                if seeded is None and seed_index:
                    seeded = seed_documents(dsn, opensearch, index, client)
                    e2e.log(f"  seeded {index}: {seeded}")
            result = _live_rate(ctx, proc, rate, seq_start=(i + 1) * 10**8)
            result["started_s"] = round(startup_s, 2) if startup_s is not None else None  # a (re)start before
            results.append(result)
            e2e.log(f"  {result['rate']}: written {result['writer']['achieved_per_s']}/s, sustained "
                    f"{result['sustained_per_s']}/s, p50/p95/p99 {result['latency_ms']['p50']}/"
                    f"{result['latency_ms']['p95']}/{result['latency_ms']['p99']} ms, drain {result['drain_s']} s")
            if not result["drained"] or proc.poll() is not None:
                # not drained: drop the backlog, so that the next rate starts from zero as flusso's did
                peak_kb = max(peak_kb, watch.peak_kb)
                _stop(proc)
                watch.done.set()
                proc = None
    finally:
        if proc is not None:
            peak_kb = max(peak_kb, watch.peak_kb)
            _stop(proc)
            watch.done.set()
        _cancel_queries(dsn)
        teardown(bin_dir, schema, env)
        client.indices.delete(index=index, ignore=404)
    return {
        "system": "pgsync", "version": PGSYNC_VERSION, "mode": mode, "rates": results,
        "seeded": seeded, "peak_rss_mb": round(peak_kb / 1024, 1), "elapsed_s": round(time.monotonic() - started, 1),
        "log": str(log_path), "log_tail": log_path.read_text(errors="replace")[-1500:],
        "settings": {k: env[k] for k in ("OPENSEARCH", "REDIS_PORT", "QUERY_CHUNK_SIZE", "ELASTICSEARCH_CHUNK_SIZE")},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--books", type=int, default=10_000)
    parser.add_argument("--database", default="flusso_bench_pgsync")
    parser.add_argument("--dsn", default=e2e.DEFAULT_DSN)
    parser.add_argument("--opensearch", default=e2e.DEFAULT_OPENSEARCH)
    parser.add_argument("--index", default=None, help="default: bench_pgsync_books (--live: bench_pgsync_live)")
    parser.add_argument("--timeout", type=float, default=180.0, help="initial sync: stop after this long")
    parser.add_argument("--live", action="store_true", help="scenario 2 (live) instead of the initial sync")
    parser.add_argument("--mode", choices=LIVE_MODES, default=LIVE_MODE, help="--live: PGSync's mode")
    parser.add_argument("--rates", type=e2e.parse_rates, default=e2e.parse_rates("500,2000,max"))
    parser.add_argument("--seconds", type=float, default=20.0, help="--live: seconds of writes per rate")
    parser.add_argument("--drain-timeout", type=float, default=30.0,
                        help="--live: a rate not drained this long after the writes did not keep up")
    parser.add_argument("--max-writers", type=int, default=2)
    parser.add_argument("--no-seed", action="store_true", help="--live: leave the index empty at the start")
    parser.add_argument("--quiet", type=float, default=0.35)
    parser.add_argument("--quiet-timeout", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    dsn, _ = e2e.ensure_data(args.dsn, args.database, args.books, 42, pristine=not args.live)
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
