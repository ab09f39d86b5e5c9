"""PGSync (PyPI) on the same bookstore: its initial sync, timed, into the same OpenSearch node.

    python bench/pgsync_bench.py [--books 10000] [--timeout 180]

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
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
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
            # its progress; PGSync's bulk stays parallel (4 threads)
            "QUERY_CHUNK_SIZE": "1000", "ELASTICSEARCH_CHUNK_SIZE": "1000"}


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--books", type=int, default=10_000)
    parser.add_argument("--database", default="flusso_bench_pgsync")
    parser.add_argument("--dsn", default=e2e.DEFAULT_DSN)
    parser.add_argument("--opensearch", default=e2e.DEFAULT_OPENSEARCH)
    parser.add_argument("--index", default="bench_pgsync_books")
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()
    dsn, _ = e2e.ensure_data(args.dsn, args.database, args.books, 42)
    print(json.dumps(run_backfill(dsn, args.opensearch, args.index, args.timeout), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
