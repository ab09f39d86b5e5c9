"""How the engine behaves as an operator sees it: bulk requests per change, memory under fan-out,
the slot moving while the publication is idle, a slot held by someone else, services going away."""

from __future__ import annotations

import math
import os
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from flusso_engine.config import load_config
from flusso_engine.engine import Engine
from flusso_engine.observer import BatchStats, LoggingObserver

from .e2e import ROOT, Flusso, generate, index_docs, slot_confirmed, sql, wait_converged, write_config
from .test_engine_faults import pending


class Recorder(LoggingObserver):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[BatchStats] = []

    def batch_flushed(self, stats: BatchStats) -> None:
        self.batches.append(stats)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_n_changes_cost_about_n_over_m_bulk_requests(bookstore_db: str, index_prefix: str, tmp_path: Path,
                                                      opensearch) -> None:
    generate(bookstore_db, books=400)
    max_changes = 150
    config = load_config(write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix,
                                      batch={"max_changes": max_changes, "max_delay_ms": 500}))
    stop = threading.Event()
    recorder = Recorder()
    engine = Engine(config, stop=stop, observer=recorder).open()
    engine.run(live=False)
    recorder.batches.clear()
    # the changes wait in the slot before live capture starts: a backlog, which batches fill (changes
    # that trickle in while the pipeline is idle go at once, by design: pipeline/batching.py)
    n = 1000
    with psycopg.connect(bookstore_db, autocommit=True) as conn:
        conn.execute("UPDATE book SET pages = pages + 1")  # one transaction of 400 changes
        for i in range(n - 400):  # and 600 of one change each
            conn.execute("UPDATE book SET pages = pages + 1 WHERE id = %s", (1 + i % 400,))
    thread = threading.Thread(target=engine.live)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while sum(b.changes for b in recorder.batches) < n:
            assert time.monotonic() < deadline, recorder.batches
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(60)
        engine.close()
    requests = sum(b.requests for b in recorder.batches)
    # the first batch goes with what the queue held when the pipeline was idle, and a few may be cut
    # by max_delay: they add a few
    assert math.ceil(n / max_changes) <= requests <= math.ceil(n / max_changes) + 6, recorder.batches


def test_publisher_with_20000_books_renamed_in_bounded_memory(bookstore_db: str, index_prefix: str,
                                                              tmp_path: Path, opensearch) -> None:
    generate(bookstore_db, books=20000)
    sql(bookstore_db, "UPDATE book SET publisher_id = 1")
    config = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix)
    index = next(iter(load_config(config).indexes))
    run = Flusso(config)
    try:
        run.wait_for("live capture started", timeout=180)
        time.sleep(1)
        idle = rss_kb(run.proc.pid)
        sql(bookstore_db, "UPDATE publisher SET name = 'Renamed at scale' WHERE id = 1")
        peak = idle
        deadline = time.monotonic() + 180
        while True:
            peak = max(peak, rss_kb(run.proc.pid))
            if "-> 20000 documents" in run.output() or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        docs = index_docs(opensearch, index)
        assert len(docs) == 20000
        assert all(d["publisher"]["name"] == "Renamed at scale" for d in docs.values())
    finally:
        run.stop()
    # built and flushed in chunks of max_changes: memory does not grow with the fan-out
    assert peak - idle < 40_000, f"RSS grew from {idle} kB to {peak} kB"


def test_idle_publication_with_a_busy_database_moves_the_slot(bookstore_db: str, index_prefix: str,
                                                              tmp_path: Path, opensearch) -> None:
    generate(bookstore_db, books=20)
    sql(bookstore_db, "CREATE TABLE unrelated (id serial PRIMARY KEY, v text)")
    # a short sender timeout makes the server ask for replies (keepalives) every second
    dsn = bookstore_db + " options='-c wal_sender_timeout=2s'"
    config = write_config(tmp_path / "flusso.yaml", dsn, index_prefix)
    slot = load_config(config).source.slot
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        time.sleep(2)
        before = slot_confirmed(bookstore_db, slot)
        for _ in range(10):
            sql(bookstore_db, "INSERT INTO unrelated (v) SELECT repeat('x', 1000) FROM generate_series(1, 500)")
            time.sleep(0.3)
        deadline = time.monotonic() + 20
        while slot_confirmed(bookstore_db, slot) <= before:
            assert time.monotonic() < deadline, "the slot did not move while only other tables were written"
            time.sleep(0.5)
    finally:
        run.stop()
    assert run.proc.returncode == 0


def test_slot_held_by_another_process_exits_2_after_the_wait(bookstore_db: str, index_prefix: str,
                                                             tmp_path: Path, opensearch) -> None:
    generate(bookstore_db, books=20)
    config = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix)
    config.write_text(config.read_text().replace("  publication:", "  slot_wait_s: 3\n  publication:", 1))
    first = Flusso(config, "--no-live")
    assert first.wait(120) == 0, first.output()
    slot, publication = load_config(config).source.slot, load_config(config).source.publication
    holder = subprocess.Popen(
        ["/usr/lib/postgresql/15/bin/pg_recvlogical", "-d", bookstore_db, "--slot", slot, "--start",
         "-o", "proto_version=1", "-o", f"publication_names={publication}", "-f", "/dev/null"],
    )
    try:
        time.sleep(1)
        run = Flusso(config)
        assert run.wait(60) == 2
        assert "is in use" in run.output() or "active" in run.output()
    finally:
        holder.terminate()
        holder.wait(10)


@pytest.mark.slow
@pytest.mark.parametrize("capture", ["wal", "polling"])
def test_postgres_restart_while_running_converges(capture: str, bookstore_db: str, index_prefix: str, tmp_path: Path,
                                                  opensearch) -> None:
    generate(bookstore_db, books=100)
    config = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix, capture=capture)
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        sql(bookstore_db, "UPDATE book SET title = 'before restart' WHERE id <= 10")
        # a crash and restart of the server: every connection is lost at once
        subprocess.run(["bash", "services/postgres.sh", "down"], cwd=ROOT, check=True,
                       env={**os.environ, "FLUSSO_PG_STOP_MODE": "immediate"})
        subprocess.run(["bash", "services/postgres.sh", "up"], cwd=ROOT, check=True)
        sql(bookstore_db, "UPDATE book SET title = 'after restart' WHERE id <= 5")
        try:
            wait_converged(opensearch, config, timeout=60)
        except AssertionError:
            # it may have given up instead: exit 2, nothing acked past its last flush
            assert run.wait(60) == 2, run.output()[-3000:]
            run = Flusso(config)
            wait_converged(opensearch, config, timeout=60)
    finally:
        run.stop()


@pytest.mark.slow
@pytest.mark.parametrize("capture", ["wal", "polling"])
def test_opensearch_outage_exits_2_unacked_then_restart_converges(capture: str, bookstore_db: str, index_prefix: str,
                                                                  tmp_path: Path, opensearch) -> None:
    generate(bookstore_db, books=100)
    config = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix, capture=capture,
                          failures={"flush_error": {"retries": 2, "backoff_ms": 100, "max_backoff_ms": 500}})
    run = Flusso(config)
    run.wait_for("live capture started")
    wait_converged(opensearch, config)
    subprocess.run(["bash", "services/opensearch.sh", "down"], cwd=ROOT, check=True)
    try:
        sql(bookstore_db, "UPDATE book SET title = 'during the outage' WHERE id <= 10")
        assert run.wait(120) == 2, run.output()[-3000:]
        # the flush (or the slot-bound write just before its bulk request) gave up: nothing acked
        assert "failed after 3 attempts" in run.output() and "OpenSearch is up and reachable" in run.output()
        assert pending(bookstore_db, config, b"during the outage", "book", 10)
    finally:
        subprocess.run(["bash", "services/opensearch.sh", "up"], cwd=ROOT, check=True)
    restarted = Flusso(config)
    try:
        docs = wait_converged(opensearch, config, timeout=120)
        assert docs["1"]["title"] == "during the outage"
    finally:
        restarted.stop()
