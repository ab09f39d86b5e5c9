"""Helpers for end-to-end tests: a bookstore config of a test's own, the `flusso` process, and the
comparison of an index with a fresh build of every document."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import yaml
from opensearchpy import OpenSearch, helpers
from psycopg import sql as pgsql

from flusso_engine import keys
from flusso_engine.catalog import read_catalog
from flusso_engine.changes import doc_id
from flusso_engine.config import FlussoConfig, load_config, read_yaml, split_table
from flusso_engine.documents.mapping import FINGERPRINT
from flusso_engine.documents.sql import SqlDocumentBuilder

ROOT = Path(__file__).resolve().parents[1]
BOOKSTORE = ROOT / "examples" / "bookstore"
FLUSSO = [sys.executable, "-m", "flusso_engine.cli"]
STARTED: list[Flusso] = []  # the runs the current test started: conftest shows their logs when it fails


def write_config(
    path: Path,
    dsn: str,
    index_prefix: str,
    *,
    hosts: list[str] | None = None,
    batch: dict[str, Any] | None = None,
    failures: dict[str, Any] | None = None,
    sink: dict[str, Any] | None = None,
    indexes: dict[str, Any] | None = None,
    capture: str = "wal",
) -> Path:
    """The bookstore's flusso.yaml pointed at a test's database, with its own slot and index names,
    capturing with `capture` (wal, or polling: triggers and a change log)."""
    raw = read_yaml((BOOKSTORE / "flusso.yaml").read_text())
    name = f"t_{uuid.uuid4().hex[:10]}"
    raw["source"].update(dsn=dsn, slot=name, publication=name, capture=capture)
    if capture == "polling":
        del raw["source"]["publication"]
        raw["source"]["poll_interval_ms"] = 100
    raw["sink"]["hosts"] = hosts or [os.environ.get("FLUSSO_TEST_OPENSEARCH_URL", "http://127.0.0.1:9200")]
    raw["sink"].update(sink or {})
    if batch:
        raw["batch"].update(batch)
    if failures:
        raw["failures"].update(failures)
    raw["indexes"] = {f"{index_prefix}{k}": v for k, v in (indexes or raw["indexes"]).items()}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def generate(dsn: str, books: int, seed: int = 7) -> None:
    sys.path.insert(0, str(BOOKSTORE))
    try:
        import generate as gen  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    with psycopg.connect(dsn) as conn:
        gen.generate(conn, books, seed)


def flusso(*args: str, config: Path, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run([*FLUSSO, *args, "-c", str(config)], capture_output=True, text=True,
                          timeout=kw.pop("timeout", 300), cwd=ROOT, **kw)


class Flusso:
    """`flusso run` as a child process of its own, as a user starts it."""

    def __init__(self, config: Path, *args: str, log: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.log = log or config.with_suffix(f".{uuid.uuid4().hex[:6]}.log")
        self._out = self.log.open("w")
        STARTED.append(self)
        self.proc = subprocess.Popen(
            [*FLUSSO, "--log-level", "DEBUG", "run", "-c", str(config), *args],
            stdout=self._out, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **(env or {})},
        )

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text()

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"flusso exited {self.proc.returncode}:\n{self.output()[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"no {text!r} in flusso's output after {timeout}s:\n{self.output()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        self._out.close()


def unfingerprinted(docs: dict[str, Any]) -> dict[str, Any]:
    """The documents without their fingerprint field (tests compare content with literals)."""
    return {i: ({k: v for k, v in d.items() if k != FINGERPRINT} if isinstance(d, dict) else d)
            for i, d in docs.items()}


def fresh_build(config: FlussoConfig, index: str, fingerprints: bool = False) -> dict[str, Any]:
    """Every document of `index` as the builder makes it now from the database's rows (without the
    fingerprint field unless `fingerprints`)."""
    spec = config.indexes[index]
    dsn = config.source.dsn.get_secret_value()
    # the ids as flusso renders them: the key's output-function text, in a pinned session
    with psycopg.connect(keys.conninfo(dsn), autocommit=True) as conn:
        catalog = read_catalog(conn, config.tables())
        columns = [pgsql.Identifier(k) for k in spec.key]
        query = pgsql.SQL("SELECT {} FROM {}").format(
            keys.key_text(columns), pgsql.Identifier(*split_table(spec.table))
        )
        ids = conn.execute(query).fetchall()

    with SqlDocumentBuilder(config, catalog, dsn) as builder:
        docs = builder.build(index, [doc_id(row) for row in ids]).docs if ids else {}
    # a root its `where` leaves out builds as None: no document
    docs = json.loads(json.dumps({i: d for i, d in docs.items() if d is not None}, default=str))
    return docs if fingerprints else unfingerprinted(docs)


def index_docs(client: OpenSearch, index: str, fingerprints: bool = False) -> dict[str, Any]:
    """Every document's source (without the fingerprint field unless `fingerprints`)."""
    client.indices.refresh(index=index)
    docs = {h["_id"]: h["_source"] for h in helpers.scan(client, index=index, query={"query": {"match_all": {}}})}
    return docs if fingerprints else unfingerprinted(docs)


def wait_converged(client: OpenSearch, config_path: Path, index: str | None = None,
                   timeout: float = 60) -> dict[str, Any]:
    """Poll until the index equals a fresh build of every document; fail with the differences."""
    config = load_config(config_path)
    index = index or next(iter(config.indexes))
    deadline = time.monotonic() + timeout
    while True:
        expected = fresh_build(config, index, fingerprints=True)
        try:
            actual = index_docs(client, index, fingerprints=True)
        except Exception:  # noqa: BLE001 - the index may not exist yet
            actual = {}
        if actual == expected:
            return actual
        if time.monotonic() > deadline:
            missing = sorted(set(expected) - set(actual))[:5]
            extra = sorted(set(actual) - set(expected))[:5]
            differ = [i for i in expected if i in actual and actual[i] != expected[i]][:3]
            detail = [(i, expected[i], actual[i]) for i in differ]
            raise AssertionError(
                f"{index} did not converge in {timeout}s: {len(expected)} expected, {len(actual)} indexed; "
                f"missing {missing}, extra {extra}, differing {detail}"
            )
        time.sleep(0.5)


def sql(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


def slot_confirmed(dsn: str, slot: str) -> int | None:
    from flusso_engine.changes import lsn_to_int

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                           (slot,)).fetchone()
    return lsn_to_int(row[0]) if row and row[0] else None


def confirmed(config_path: Path) -> int | None:
    """The position capture confirmed last: the slot's `confirmed_flush_lsn` (wal), the cursor's
    position (polling); None when there is no slot or cursor."""
    source = load_config(config_path).source
    dsn = source.dsn.get_secret_value()
    if source.capture == "wal":
        return slot_confirmed(dsn, source.slot)
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(format('%%I.cursors', %s::text)) IS NOT NULL",
                              (source.polling_schema,)).fetchone()[0]
        if not exists:
            return None
        row = conn.execute(pgsql.SQL("SELECT position FROM {} WHERE slot = %s").format(
            pgsql.Identifier(source.polling_schema, "cursors")), (source.slot,)).fetchone()
    return int(row[0]) if row else None


def current_lsn(dsn: str) -> int:
    from flusso_engine.changes import lsn_to_int

    with psycopg.connect(dsn, autocommit=True) as conn:
        return lsn_to_int(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])
