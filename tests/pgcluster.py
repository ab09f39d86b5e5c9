"""A private PostgreSQL 15 cluster for a test that needs server settings the shared one must keep
(a tiny max_slot_wal_keep_size): initdb into a temporary directory, start on a free port, stop and
remove at the end. As root, initdb and the server run as the postgres user (they refuse root)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

BINDIR = Path(os.environ.get("PG_BINDIR") or "/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateCluster:
    """`start()` it with extra postgresql.conf settings; `dsn(db)` connects as postgres (trust, loopback)."""

    def __init__(self, settings: dict[str, str], wal_segsize_mb: int = 1) -> None:
        self.settings = settings
        self.wal_segsize_mb = wal_segsize_mb
        self.dir = Path(tempfile.mkdtemp(prefix="flusso-pg-", dir="/var/tmp"))
        self.data = self.dir / "data"
        self.port = _free_port()

    def _as_pg(self, *cmd: str) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *cmd], cwd="/", capture_output=True, text=True, timeout=120)

    def start(self) -> PrivateCluster:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        done = self._as_pg(str(BINDIR / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                           f"--wal-segsize={self.wal_segsize_mb}", "--encoding=UTF8", "--locale=C.UTF-8")
        assert done.returncode == 0, done.stdout + done.stderr
        conf = {
            "listen_addresses": "'127.0.0.1'", "port": str(self.port), "unix_socket_directories": f"'{self.dir}'",
            "wal_level": "logical", "max_replication_slots": "10", "max_wal_senders": "10", "fsync": "off",
            "shared_buffers": "32MB", **self.settings,
        }
        with (self.data / "postgresql.conf").open("a") as f:
            f.write("\n# tests/pgcluster.py\n" + "".join(f"{k} = {v}\n" for k, v in conf.items()))
        done = self._as_pg(str(BINDIR / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w",
                           "-t", "60", "start")
        assert done.returncode == 0, done.stdout + done.stderr + self.log()
        return self

    def log(self) -> str:
        path = self.dir / "log"
        return path.read_text()[-3000:] if path.exists() else ""

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def restart(self, mode: str = "fast") -> None:
        """Stop (`immediate`: as a crash does, every connection cut) and start again on the same port."""
        self._as_pg(str(BINDIR / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        done = self._as_pg(str(BINDIR / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w",
                           "-t", "60", "start")
        assert done.returncode == 0, done.stdout + done.stderr + self.log()

    def stop(self) -> None:
        self._as_pg(str(BINDIR / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
