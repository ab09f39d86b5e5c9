"""PGSync's side of its benchmark: its installation, its processes, and what its logs and Redis say.

PGSync lives in a virtualenv of its own, `.flusso/pgsync-venv` (created here: its pins, e.g.
opensearch-py and SQLAlchemy, must not touch flusso's .venv). Its daemon needs Redis: Debian's
redis-server (apt-get installed when missing) runs on 127.0.0.1:6390 with its files under
`.flusso/redis`. Its working files (schemas, checkpoints, logs) are under `.flusso/pgsync`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, cpu_seconds, cpu_snapshot, log  # noqa: E402

PGSYNC_VERSION = "7.3.0"  # the latest on PyPI that installs on Python 3.11 (2026-11)
STATE = ROOT / ".flusso"
VENV = STATE / "pgsync-venv"
REDIS_DIR = STATE / "redis"
REDIS_PORT = 6390
WORK = STATE / "pgsync"
SCHEMA = ROOT / "bench" / "pgsync" / "schema.json"
_STATUS = re.compile(r"Xlog: \[([\d,]+)\] => Db: \[([\d,]+)\] => Redis: \[([\d,]+)\] => \w+: \[([\d,]+)\]")
_WAL_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3}):INFO:pgsync\.sync: "
                       r"(flushing buffer|sending bulk) (?:with|of) (\d+) docs", re.MULTILINE)
_WAL_READY = "Starting logical replication stream"


def ensure_venv() -> Path:
    if not (VENV / "bin" / "pgsync").exists():
        log(f"installing pgsync=={PGSYNC_VERSION} into {VENV}")
        py = shutil.which("python3.11") or shutil.which("python3") or sys.executable
        subprocess.run([py, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        f"pgsync=={PGSYNC_VERSION}"], check=True)
    return VENV / "bin"


def ensure_redis() -> None:
    if shutil.which("redis-server") is None:
        log("installing redis-server (apt-get)")
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


def stop(proc: subprocess.Popen) -> None:
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


def cancel_queries(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                     "AND pid <> pg_backend_pid() AND state = 'active'")


def teardown(bin_dir: Path, schema: Path, env: dict[str, str]) -> None:
    subprocess.run([str(bin_dir / "bootstrap"), "--teardown", "-c", str(schema)], cwd=WORK, env=env,
                   capture_output=True, timeout=120)


def bootstrap(bin_dir: Path, schema: Path, env: dict[str, str]) -> None:
    """`bootstrap -c SCHEMA`: PGSync's triggers and slot (and a cleared Redis queue and checkpoint)."""
    done = subprocess.run([str(bin_dir / "bootstrap"), "-c", str(schema)], cwd=WORK, env=env,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"pgsync bootstrap failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def slot_name(database: str, index: str) -> str:
    """PGSync's name for the slot, the checkpoint file (`.NAME`) and the Redis queue (`queue:NAME`)."""
    return re.sub("[^0-9a-zA-Z_]+", "", f"{database.lower()}_{index}")


def redis_llen(key: str) -> int:
    """LLEN over RESP (flusso's venv has no redis client)."""
    with socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=5) as sock:
        sock.sendall(f"*2\r\n$4\r\nLLEN\r\n${len(key)}\r\n{key}\r\n".encode())
        reply = sock.recv(64)
    return int(reply[1:].split(b"\r\n")[0])


def redis_pid() -> int | None:
    try:
        return int((REDIS_DIR / "redis.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def cpu_groups(pid: int) -> dict[str, float]:
    """`cpu_snapshot`'s groups, PGSync's process as `flusso` (`cpu_delta` renames it) and redis-server apart."""
    snap = cpu_snapshot(pid)
    redis = redis_pid()
    snap["redis"] = cpu_seconds(redis) if redis else 0.0
    return snap


def wal_processed(log_path: Path, since: float, until: float) -> tuple[int, int]:
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


def daemon_processed(log_path: Path) -> tuple[int, int]:
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


def start_live(bin_dir: Path, schema: Path, env: dict[str, str], mode: str, dsn: str, slot: str,
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
        bootstrap(bin_dir, schema, env)
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
            stop(proc)
            raise RuntimeError(f"pgsync ({mode}) did not go live:\n{text[-3000:]}")
        time.sleep(0.1)


def prepare(dsn: str, index: str) -> tuple[Path, str, Path]:
    """PGSync installed and Redis up; the database's name and the schema of `index` over it."""
    bin_dir = ensure_venv()
    ensure_redis()
    database = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    return bin_dir, database, write_schema(database, index)


def settings(env: dict[str, str]) -> dict[str, str]:
    """The settings a report records of PGSync's environment."""
    return {k: env[k] for k in ("OPENSEARCH", "REDIS_PORT", "QUERY_CHUNK_SIZE", "ELASTICSEARCH_CHUNK_SIZE")}
