"""At-least-once under faults, against the real services: a crash anywhere loses nothing, the slot
never moves past a change whose document is not in OpenSearch, and a restart converges exactly."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql as pgsql

from flusso_engine.config import load_config

from .e2e import Flusso, flusso, generate, index_docs, sql, wait_converged, write_config


def slot_of(config: Path) -> tuple[str, str]:
    src = load_config(config).source
    return src.slot, src.publication


def wait_slot_released(dsn: str, slot: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
            if row is not None and not row[0]:
                return
            time.sleep(0.1)
    raise AssertionError(f"slot {slot} still active after {timeout}s")


def pending_in_slot(dsn: str, config: Path) -> bytes:
    """Everything the slot would deliver again (peeked, not consumed)."""
    slot, publication = slot_of(config)
    wait_slot_released(dsn, slot)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, 'proto_version', '1', "
            "'publication_names', %s)", (slot, publication),
        ).fetchall()
    return b"".join(bytes(r[0]) for r in rows)


def pending(dsn: str, config: Path, text: bytes, table: str, key: int) -> bool:
    """Whether capture would deliver the change again: `text` in what the slot holds (wal), or a
    change-log row of `table` whose `id` is `key` that the cursor has not passed (polling)."""
    source = load_config(config).source
    if source.capture == "wal":
        return text in pending_in_slot(dsn, config)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            pgsql.SQL("SELECT count(*) FROM {c} AS c JOIN {k} AS k ON k.slot = c.slot WHERE c.slot = %s "
                      "AND c.tbl = %s AND coalesce(c.new, c.old) ->> 'id' = %s "
                      "AND NOT pg_visible_in_snapshot(c.xid, k.snapshot)").format(
                c=pgsql.Identifier(source.polling_schema, "changes"),
                k=pgsql.Identifier(source.polling_schema, "cursors")),
            (source.slot, f"public.{table}", str(key))).fetchone()
    return bool(row[0])


@pytest.fixture(params=["wal", "polling"])
def bookstore(request, bookstore_db: str, index_prefix: str, tmp_path: Path) -> tuple[str, Path]:
    """The bookstore, captured by each backend in turn."""
    generate(bookstore_db, books=300)
    return bookstore_db, write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix,
                                      batch={"max_changes": 100, "max_delay_ms": 100}, capture=request.param)


def test_kill_after_flush_before_ack_redelivers(bookstore, opensearch) -> None:
    dsn, config = bookstore
    run = Flusso(config, env={"FLUSSO_FAILPOINT": "live_flush:1"})
    run.wait_for("live capture started")
    sql(dsn, "UPDATE book SET title = 'crash-after-flush' WHERE id BETWEEN 1 AND 20")
    assert run.wait(60) == -signal.SIGKILL
    # the documents were flushed, but the slot still holds the transaction: it was never acked
    assert pending(dsn, config, b"crash-after-flush", "book", 20)
    restarted = Flusso(config)
    try:
        restarted.wait_for("flushed 20 changes")  # the redelivered transaction, applied again
        docs = wait_converged(opensearch, config)
        assert docs["1"]["title"] == "crash-after-flush"
    finally:
        restarted.stop()
    assert not pending(dsn, config, b"crash-after-flush", "book", 20)


def test_kill_in_the_middle_of_a_backfill(bookstore, opensearch) -> None:
    dsn, config = bookstore
    run = Flusso(config, env={"FLUSSO_FAILPOINT": "backfill_flush:2"})
    assert run.wait(60) == -signal.SIGKILL
    status = flusso("status", "--json", config=config)
    assert '"seeded": false' in status.stdout, status.stdout + status.stderr
    sql(dsn, "DELETE FROM book WHERE id = 1")  # a row gone while nothing runs: its document must go too
    restarted = Flusso(config)
    try:
        restarted.wait_for("live capture started")
        docs = wait_converged(opensearch, config)
        assert len(docs) == 299
    finally:
        restarted.stop()


def test_kill_while_changes_arrive_then_restart_without_a_manual_step(bookstore, opensearch) -> None:
    dsn, config = bookstore
    run = Flusso(config)
    run.wait_for("live capture started")
    done = threading.Event()

    def writer() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(400):
                conn.execute("UPDATE book SET pages = %s WHERE id = %s", (i, 1 + i % 300))
                if i % 7 == 0:
                    conn.execute("UPDATE review SET helpful = helpful + 1 WHERE id = %s", (1 + i,))
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(1.0)
    run.kill()
    # restarted at once: the old walsender may still hold the slot, and the new run waits for it
    restarted = Flusso(config)
    try:
        t.join()
        restarted.wait_for("live capture started")
        wait_converged(opensearch, config)
    finally:
        restarted.stop()
    assert restarted.proc.returncode == 0


def test_transaction_larger_than_a_batch_is_not_acked_before_its_end(bookstore, opensearch) -> None:
    dsn, config = bookstore
    cfg = write_config(config, dsn, next(iter(load_config(config).indexes)).removesuffix("books"),
                       batch={"max_changes": 1000, "max_delay_ms": 200}, capture=load_config(config).source.capture)
    run = Flusso(cfg, env={"FLUSSO_FAILPOINT": "live_flush:1"})
    run.wait_for("live capture started")
    wait_converged(opensearch, cfg)
    sql(dsn, "INSERT INTO book (id, isbn, title) SELECT g, 'big-' || g, 'big transaction' "
             "FROM generate_series(10001, 15000) g")
    assert run.wait(60) == -signal.SIGKILL
    # killed after the first chunk's flush: the whole transaction is still in the slot
    assert pending(dsn, cfg, b"big-15000", "book", 15000)
    assert pending(dsn, cfg, b"big-10001", "book", 10001)
    restarted = Flusso(cfg)
    try:
        assert len(wait_converged(opensearch, cfg, timeout=120)) == 5300
    finally:
        restarted.stop()


@pytest.mark.parametrize("policy,capture", [("fail", "wal"), ("skip", "wal"), ("dead_letter", "wal"),
                                            ("fail", "polling")])
def test_poison_document(policy: str, capture: str, bookstore_db: str, index_prefix: str, tmp_path: Path,
                         opensearch) -> None:
    generate(bookstore_db, books=50)
    sql(bookstore_db, "UPDATE book SET subtitle = NULL")
    config = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix, failures={"item_rejection": policy},
                          capture=capture)
    # subtitle mapped as a number: a text value in it is a document OpenSearch rejects
    config.write_text(config.read_text().replace("      genres:\n        type: keyword\n",
                                                 "      genres:\n        type: keyword\n      subtitle:\n"
                                                 "        type: long\n"))
    index = next(iter(load_config(config).indexes))
    run = Flusso(config)
    run.wait_for("live capture started")
    sql(bookstore_db, "UPDATE book SET subtitle = 'not a number', title = 'poisoned' WHERE id = 7",
        "UPDATE book SET title = 'fine' WHERE id = 8")
    if policy == "fail":
        assert run.wait(60) == 2
        assert "was rejected" in run.output()
        assert pending(bookstore_db, config, b"not a number", "book", 7)
        return
    try:
        deadline = time.monotonic() + 30
        # the poisoned document's stale version leaves search (failures.item_rejection_keeps: none)
        while (docs := index_docs(opensearch, index)).get("8", {}).get("title") != "fine" or "7" in docs:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        if policy == "dead_letter":
            letters = index_docs(opensearch, f"{index}-deadletter")
            assert letters["7"]["document"]["title"] == "poisoned"
            assert "mapper_parsing_exception" in letters["7"]["reason"]
        else:
            assert "skipped" in run.output()
    finally:
        run.stop()
    assert run.proc.returncode == 0


def test_two_writers_on_one_index_converge(bookstore, opensearch) -> None:
    dsn, config = bookstore
    run = Flusso(config)
    run.wait_for("live capture started")
    stop = threading.Event()

    def writer() -> None:
        i = 0
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                i += 1
                conn.execute("UPDATE book SET title = %s WHERE id = %s", (f"v{i}", 1 + i % 300))

    t = threading.Thread(target=writer)
    t.start()
    try:
        forced = flusso("backfill", "--force", config=config)
        assert forced.returncode == 0, forced.stderr[-2000:]
    finally:
        stop.set()
        t.join()
    try:
        wait_converged(opensearch, config)
    finally:
        run.stop()
