"""`WalCapture` against the real PostgreSQL: set-up, streaming, acks, keepalives, stop, snapshot.

Every test gets its own database (`fresh_db`), whose slots the fixture drops. The shared server is
never reconfigured: the short `wal_sender_timeout` some tests need is set on their own replication
connection (it is a per-connection setting since PostgreSQL 12).
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from flusso_engine.capture.wal import WalCapture
from flusso_engine.capture.wal.pgoutput import UNCHANGED
from flusso_engine.changes import Change
from flusso_engine.error import SourceError

SCHEMA = """
CREATE TABLE book (id int PRIMARY KEY, title text, publisher_id int);
CREATE TABLE review (book_id int, n int, body text, PRIMARY KEY (book_id, n));
CREATE TABLE audit (id serial PRIMARY KEY, note text);
"""
TABLES = ["public.book", "review"]  # audit is never published: the "rest of the database"


@pytest.fixture
def db(fresh_db: str) -> str:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(SCHEMA)
    return fresh_db


def sql(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


def write_elsewhere(dsn: str, times: int) -> None:
    """Commit `times` writes to a table the publication does not cover."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(times):
            conn.execute("INSERT INTO audit (note) VALUES (%s)", (str(i),))


def hold_slot(dsn: str) -> psycopg.Connection:
    """Another consumer streaming from the test slot, so that it is active."""
    holder = psycopg.connect(dsn, autocommit=True, replication="database")
    holder.pgconn.send_query(
        b"START_REPLICATION SLOT flusso_test LOGICAL 0/0 "
        b"(proto_version '1', publication_names 'flusso_test')"
    )
    holder.pgconn.get_result()
    return holder


def with_options(dsn: str, options: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, options=options)


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Consumer:
    """Drives `stream()` on a thread into a queue, as the pipeline's capture task does."""

    def __init__(self, capture: WalCapture, stop: threading.Event, maxsize: int = 0) -> None:
        self.capture = capture
        self.stop = stop
        self.changes: queue.Queue[Change] = queue.Queue(maxsize)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for change in self.capture.stream():
                self.changes.put(change)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            self.error = err

    def take(self, n: int, timeout: float = 10.0) -> list[Change]:
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            try:
                out.append(self.changes.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"got {len(out)} of {n} changes: {out} ({self.error!r})") from None
        return out

    def transactions(self, n: int, timeout: float = 10.0) -> list[list[Change]]:
        """The next n transactions, each a list ending with its commit marker."""
        txns: list[list[Change]] = [[]]
        while len(txns) <= n:
            change = self.take(1, timeout)[0]
            txns[-1].append(change)
            if change.is_commit:
                txns.append([])
        return txns[:-1]

    def finish(self, timeout: float = 5.0) -> None:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "stream() did not return after stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def capture_for(dsn: str, stop: threading.Event, **kwargs) -> WalCapture:
    kwargs.setdefault("full_identity", {"public.review"})
    return WalCapture(dsn, "flusso_test", "flusso_test", stop, **kwargs)


def confirmed(capture: WalCapture) -> int:
    info = capture.slot_info()
    assert info is not None and info.confirmed_flush_lsn is not None
    return info.confirmed_flush_lsn


# --- prepare -----------------------------------------------------------------------------------


def test_prepare_is_idempotent_and_true_only_when_it_creates_the_slot(db, stop, caplog):
    capture = capture_for(db, stop)
    caplog.set_level(logging.INFO, logger="flusso_engine.capture.wal")
    assert capture.prepare(TABLES) is True
    assert "set REPLICA IDENTITY FULL on public.review" in caplog.text
    caplog.clear()
    assert capture.prepare(TABLES) is False
    assert caplog.text == ""  # nothing left to change, nothing logged
    with psycopg.connect(db) as conn:
        published = conn.execute(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = 'flusso_test'"
        ).fetchall()
        idents = dict(
            conn.execute("SELECT relname, relreplident FROM pg_class WHERE relname IN ('book', 'review')")
        )
        slot = conn.execute(
            "SELECT plugin FROM pg_replication_slots WHERE slot_name = 'flusso_test'"
        ).fetchone()
    assert sorted(p for (p,) in published) == ["public.book", "public.review"]
    assert idents == {"book": "d", "review": "f"}
    assert slot == ("pgoutput",)


def test_prepare_sets_the_publication_to_exactly_the_configs_tables(db, stop):
    sql(db, "CREATE PUBLICATION flusso_test FOR TABLE audit WITH (publish = 'insert')")
    capture = capture_for(db, stop, full_identity=set())
    assert capture.prepare(["book"]) is True
    with psycopg.connect(db) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = 'flusso_test'"
        ).fetchall()
        actions = conn.execute(
            "SELECT pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot FROM pg_publication "
            "WHERE pubname = 'flusso_test'"
        ).fetchone()
    assert tables == [("book",)]
    assert actions == (True, True, True, True, True)


def test_prepare_refuses_a_missing_table_with_a_source_error(db, stop):
    with pytest.raises(SourceError, match="nope"):
        capture_for(db, stop, full_identity=set()).prepare(["public.nope"])


def test_positions_system_identifier_and_teardown(db, stop):
    capture = capture_for(db, stop)
    capture.prepare(TABLES)
    assert capture.system_identifier() != 0
    before = capture.current_position()
    sql(db, "INSERT INTO audit (note) VALUES ('x')")
    assert capture.current_position() > before
    info = capture.slot_info()
    assert info is not None and info.plugin == "pgoutput" and not info.active and info.lag_bytes >= 0
    capture.teardown()
    capture.teardown()  # idempotent
    assert capture.slot_info() is None
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM pg_publication").fetchone() == (0,)


# --- stream ------------------------------------------------------------------------------------


def test_stream_yields_changes_and_commit_markers_in_commit_order(db, stop):
    capture = capture_for(db, stop)
    capture.prepare(TABLES)
    consumer = Consumer(capture, stop)
    with psycopg.connect(db) as first, psycopg.connect(db) as second:
        first.execute("INSERT INTO book VALUES (1, 'first begun', 10)")  # begun first, committed second
        second.execute("INSERT INTO book VALUES (2, 'second begun', 20)")
        second.execute("INSERT INTO review VALUES (2, 1, 'good')")
        second.commit()
        first.commit()
    sql(
        db,
        "UPDATE book SET title = 'renamed' WHERE id = 1",
        "UPDATE book SET id = 3 WHERE id = 2",
        "UPDATE review SET book_id = 1 WHERE book_id = 2",
        "DELETE FROM book WHERE id = 3",
        "DELETE FROM review",
        "TRUNCATE book, review",
    )
    txns = consumer.transactions(8)
    consumer.finish()

    def shape(c: Change) -> tuple:
        return (c.table, c.op, c.new, c.old)

    assert [[shape(c) for c in t[:-1]] for t in txns] == [
        [
            ("public.book", "insert", {"id": "2", "title": "second begun", "publisher_id": "20"}, None),
            ("public.review", "insert", {"book_id": "2", "n": "1", "body": "good"}, None),
        ],
        [("public.book", "insert", {"id": "1", "title": "first begun", "publisher_id": "10"}, None)],
        [("public.book", "update", {"id": "1", "title": "renamed", "publisher_id": "10"}, None)],
        [("public.book", "update", {"id": "3", "title": "second begun", "publisher_id": "20"}, {"id": "2"})],
        [
            (
                "public.review",
                "update",
                {"book_id": "1", "n": "1", "body": "good"},
                {"book_id": "2", "n": "1", "body": "good"},  # REPLICA IDENTITY FULL: the whole old row
            )
        ],
        [("public.book", "delete", None, {"id": "3"})],
        [("public.review", "delete", None, {"book_id": "1", "n": "1", "body": "good"})],
        [("public.book", "truncate", None, None), ("public.review", "truncate", None, None)],
    ]
    ends = []
    for t in txns:
        marker = t[-1]
        assert marker.is_commit and marker.table == ""
        assert len({c.position for c in t[:-1]}) == 1 and t[0].position < marker.position
        ends.append(marker.position)
    assert ends == sorted(ends) and len(set(ends)) == len(ends)


def test_update_fills_unchanged_toast_from_the_full_old_row(db, stop):
    sql(
        db,
        "ALTER TABLE review ALTER body SET STORAGE EXTERNAL",  # out of line, uncompressed: a TOAST pointer
        "ALTER TABLE book ALTER title SET STORAGE EXTERNAL",
    )
    capture = capture_for(db, stop)
    capture.prepare(TABLES)
    consumer = Consumer(capture, stop)
    sql(
        db,
        "INSERT INTO review VALUES (1, 1, repeat(md5(random()::text), 400))",  # 12.8 kB
        "INSERT INTO book VALUES (1, repeat(md5(random()::text), 400), 1)",
        "UPDATE review SET n = 2",
        "UPDATE book SET publisher_id = 2",
    )
    txns = consumer.transactions(4)
    consumer.finish()
    inserted_body = txns[0][0].new["body"]
    review_update, book_update = txns[2][0], txns[3][0]
    assert review_update.new["body"] == inserted_body and len(inserted_body) == 12800
    assert book_update.new["title"] is UNCHANGED and book_update.old is None  # default identity: not known


def test_ack_moves_confirmed_flush_but_never_past_what_was_acked(db, stop):
    capture = capture_for(db, stop, status_interval_s=0.1)
    capture.prepare(TABLES)
    consumer = Consumer(capture, stop)
    sql(db, "INSERT INTO book VALUES (1, 'a', 1)", "INSERT INTO book VALUES (2, 'b', 2)")
    first, second = consumer.transactions(2)
    start = confirmed(capture)
    assert start < first[-1].position
    capture.ack(first[-1].position)
    wait_for(lambda: confirmed(capture) == first[-1].position, what="confirmed_flush to reach the ack")
    # The second transaction is yielded but unacked: however busy the rest of the database, the
    # status updates and keepalive replies must not move the slot past the first.
    write_elsewhere(db, 20)
    time.sleep(0.5)
    assert confirmed(capture) == first[-1].position
    capture.ack(second[-1].position)
    wait_for(lambda: confirmed(capture) >= second[-1].position, what="confirmed_flush to reach ack 2")
    consumer.finish()


def test_idle_publication_and_busy_database_keep_the_slot_moving(db, stop):
    capture = capture_for(db, stop)
    capture.prepare(TABLES)
    consumer = Consumer(capture, stop)
    wait_for(lambda: capture.slot_info().active, what="the stream to start")
    start = confirmed(capture)
    write_elsewhere(db, 10)
    target = capture.current_position()
    wait_for(lambda: confirmed(capture) >= target, what="the slot to follow unpublished writes")
    assert confirmed(capture) > start and consumer.changes.empty()
    consumer.finish()


def test_keepalives_answered_while_the_consumer_is_blocked(db, stop):
    """The consumer blocks (a full queue) for 3x wal_sender_timeout; the feedback thread keeps the
    replication connection alive, so there is no reconnect and nothing is lost."""
    dsn = with_options(db, "-c wal_sender_timeout=1s")
    capture = capture_for(dsn, stop, status_interval_s=0.2)
    capture.prepare(TABLES)
    consumer = Consumer(capture, stop, maxsize=1)  # back-pressure: put() blocks
    wait_for(lambda: capture.slot_info().active, what="the stream to start")
    pid = capture.slot_info().active_pid
    sql(db, "INSERT INTO book SELECT g, repeat('t', 200), g FROM generate_series(1, 20000) g")
    consumer.take(1)
    time.sleep(3)  # the consumer "is busy": capture is stuck in put()
    rest = consumer.take(20000)  # 19999 inserts + the commit marker
    assert rest[-1].is_commit and rest[-2].new["id"] == "20000"
    assert capture.reconnects == 0 and capture.slot_info().active_pid == pid
    consumer.finish()


def test_without_feedback_a_blocked_consumer_loses_the_connection(db, stop):
    """The control for the test above: the same stall with no periodic status update times out."""
    dsn = with_options(db, "-c wal_sender_timeout=1s")
    capture = capture_for(dsn, stop, status_interval_s=60, reconnect_backoff_s=0.05)
    capture.prepare(TABLES)
    consumer = Consumer(capture, stop, maxsize=1)
    wait_for(lambda: capture.slot_info().active, what="the stream to start")
    sql(db, "INSERT INTO book SELECT g, repeat('t', 200), g FROM generate_series(1, 20000) g")
    consumer.take(1)
    time.sleep(3)
    deadline = time.monotonic() + 20
    while capture.reconnects == 0:  # the loss shows once what was buffered before it is read
        assert time.monotonic() < deadline, "the stalled connection was never lost"
        consumer.take(1)
    consumer.finish()


def test_stop_returns_promptly_and_releases_the_slot_at_the_acked_position(db, stop):
    capture = capture_for(db, stop, status_interval_s=3600)
    capture.prepare(TABLES)
    consumer = Consumer(capture, stop)
    sql(db, "INSERT INTO book VALUES (1, 'a', 1)", "INSERT INTO book VALUES (2, 'b', 2)")
    first, _ = consumer.transactions(2)
    capture.ack(first[-1].position)
    started = time.monotonic()
    consumer.finish(timeout=2)
    assert time.monotonic() - started < 1.0
    wait_for(lambda: not capture.slot_info().active, timeout=1.0, what="the slot to be released")
    assert confirmed(capture) == first[-1].position  # the unacked second transaction stays in the slot


def test_ack_after_stream_returned_still_advances_the_slot(db, stop):
    capture = capture_for(db, stop)
    capture.prepare(TABLES)
    consumer = Consumer(capture, stop)
    sql(db, "INSERT INTO book VALUES (1, 'a', 1)")
    (txn,) = consumer.transactions(1)
    consumer.finish()  # the pipeline stops capture first, then flushes and acks
    capture.ack(txn[-1].position)
    assert confirmed(capture) == txn[-1].position


def test_reconnects_after_a_dropped_connection_and_skips_what_was_acked(db, stop, caplog):
    capture = capture_for(db, stop, reconnect_backoff_s=0.05)
    capture.prepare(TABLES)
    consumer = Consumer(capture, stop)
    sql(db, "INSERT INTO book VALUES (1, 'a', 1)", "INSERT INTO book VALUES (2, 'b', 2)")
    first, second = consumer.transactions(2)
    capture.ack(first[-1].position)
    pid = capture.slot_info().active_pid
    sql(db, f"SELECT pg_terminate_backend({pid})")
    sql(db, "INSERT INTO book VALUES (3, 'c', 3)")
    again, third = consumer.transactions(2)
    assert [c.new["id"] for c in again[:-1]] == ["2"] and again[-1].position == second[-1].position
    assert [c.new["id"] for c in third[:-1]] == ["3"]
    assert capture.reconnects == 1 and "replication connection lost" in caplog.text
    consumer.finish()


def test_an_unreachable_database_is_a_source_error_after_the_retry_bound(stop):
    capture = WalCapture(
        "postgresql://postgres:postgres@127.0.0.1:1/postgres", "s", "p", stop,
        reconnect_attempts=2, reconnect_backoff_s=0.05,
    )
    with pytest.raises(SourceError, match="after 2 attempts") as info:
        next(capture.stream())
    assert "postgres:postgres" not in str(info.value)


def test_a_wrong_password_is_a_source_error_at_once(db, stop):
    dsn = psycopg.conninfo.make_conninfo(db, password="wrong-secret")
    capture = capture_for(dsn, stop, reconnect_backoff_s=5)
    with pytest.raises(SourceError, match="authentication failed") as info:
        next(capture.stream())
    assert capture.reconnects == 0 and "wrong-secret" not in str(info.value)


def test_a_missing_slot_or_publication_is_a_source_error_not_a_retry(db, stop):
    capture = capture_for(db, stop)
    with pytest.raises(SourceError, match='slot "flusso_test" does not exist.*prepare'):
        next(capture.stream())
    capture.prepare(TABLES)
    sql(db, "DROP PUBLICATION flusso_test", "INSERT INTO book VALUES (1, 'a', 1)")
    with pytest.raises(SourceError, match='publication "flusso_test" does not exist'):
        next(capture.stream())
    assert capture.reconnects == 0


def test_a_held_slot_is_waited_for_then_a_source_error(db, stop, caplog):
    capture = capture_for(db, stop, slot_wait_s=1.0)
    capture.prepare(TABLES)
    holder = hold_slot(db)
    try:
        started = time.monotonic()
        with pytest.raises(SourceError, match="still in use after waiting 1s"):
            next(capture.stream())
        assert time.monotonic() - started >= 1.0
        assert "is in use" in caplog.text and "waiting up to" in caplog.text
    finally:
        holder.close()


def test_a_held_slot_released_within_the_wait_is_taken_over(db, stop):
    capture = capture_for(db, stop, slot_wait_s=10.0)
    capture.prepare(TABLES)
    holder = hold_slot(db)
    consumer = Consumer(capture, stop)
    time.sleep(0.7)
    holder.close()
    sql(db, "INSERT INTO book VALUES (1, 'a', 1)")
    (txn,) = consumer.transactions(1)
    assert txn[0].new["id"] == "1"
    consumer.finish()


def test_stop_while_waiting_for_a_held_slot_returns(db, stop):
    capture = capture_for(db, stop, slot_wait_s=30.0)
    capture.prepare(TABLES)
    holder = hold_slot(db)
    try:
        consumer = Consumer(capture, stop)
        time.sleep(0.3)
        started = time.monotonic()
        consumer.finish(timeout=2)
        assert time.monotonic() - started < 1.0
    finally:
        holder.close()


# --- snapshot ----------------------------------------------------------------------------------


def test_snapshot_pages_in_key_order_with_a_composite_key(db, stop):
    sql(
        db,
        "INSERT INTO review SELECT b, n, 'body' FROM generate_series(1, 4) b, generate_series(1, 6) n",
        "INSERT INTO review VALUES (10, 1, 'x'), (9, 100, 'y')",
    )
    capture = capture_for(db, stop, snapshot_page=5)
    rows = list(capture.snapshot("review", ["book_id", "n"]))
    keys = [(int(c.new["book_id"]), int(c.new["n"])) for c in rows]
    assert keys == sorted(keys) and len(keys) == 26  # numeric order: the text is compared as int
    assert all(c.table == "public.review" and c.op == "insert" and c.position == 0 for c in rows)
    assert rows[0].new == {"book_id": "1", "n": "1"}  # key columns only, as text


def test_snapshot_of_a_text_key_and_an_exact_multiple_of_the_page(db, stop):
    sql(
        db,
        "CREATE TABLE tag (name text PRIMARY KEY)",
        "INSERT INTO tag VALUES ('b|c'), ('a'), ('Z'), ('a b'), ('ü'), ('')",
    )
    capture = capture_for(db, stop, snapshot_page=3)
    names = [c.new["name"] for c in capture.snapshot("public.tag", ["name"])]
    with psycopg.connect(db) as conn:
        expected = [r[0] for r in conn.execute("SELECT name FROM tag ORDER BY name")]
    assert names == expected and len(names) == 6
    assert list(capture.snapshot("audit", ["id"])) == []


# --- a real server restart: opt-in only --------------------------------------------------------


@pytest.mark.skipif(
    os.environ.get("FLUSSO_TEST_RESTART_PG") != "1",
    reason="restarts the PostgreSQL server: opt in with FLUSSO_TEST_RESTART_PG=1, never on a shared one",
)
def test_stream_survives_a_server_restart(db, stop):
    """RESTARTS POSTGRESQL (services/postgres.sh down && up). Not run by default."""
    capture = capture_for(db, stop, reconnect_attempts=20, reconnect_backoff_s=0.2, max_backoff_s=1.0)
    capture.prepare(TABLES)
    consumer = Consumer(capture, stop)
    sql(db, "INSERT INTO book VALUES (1, 'a', 1)")
    (first,) = consumer.transactions(1)
    capture.ack(first[-1].position)
    script = Path(__file__).resolve().parents[1] / "services" / "postgres.sh"
    subprocess.run(["bash", str(script), "down"], check=True)
    subprocess.run(["bash", str(script), "up"], check=True)
    sql(db, "INSERT INTO book VALUES (2, 'b', 2)")
    (second,) = consumer.transactions(1, timeout=60)
    assert [c.new["id"] for c in second[:-1]] == ["2"] and capture.reconnects >= 1
    consumer.finish()


def test_two_starts_at_once_both_prepare_without_an_error(db: str) -> None:
    """Two Dagster partitions starting together race to create the publication and the slot: the
    loser of each race finds it there, and exactly one of them created the slot."""
    import uuid

    for _ in range(5):
        name = f"t_{uuid.uuid4().hex[:10]}"
        stop = threading.Event()
        captures = [WalCapture(db, name, name, stop, full_identity={"public.review"}) for _ in range(2)]
        outcomes: list[object] = [None, None]
        barrier = threading.Barrier(2)

        def start(i: int, captures: list = captures, outcomes: list = outcomes,
                  barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                outcomes[i] = captures[i].prepare(["public.book", "public.review"])
            except Exception as err:  # noqa: BLE001 - the assertion below shows it
                outcomes[i] = err

        threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(outcomes, key=str) == [False, True], outcomes
        captures[0].teardown()
