"""`flusso run` end to end on the bookstore, against the real PostgreSQL and OpenSearch: backfill,
then every kind of change on every table, and the index equals a fresh build of every document."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from flusso_engine.changes import lsn_to_int
from flusso_engine.config import load_config, read_yaml

from .e2e import (
    BOOKSTORE,
    Flusso,
    confirmed,
    current_lsn,
    flusso,
    generate,
    index_docs,
    slot_confirmed,
    sql,
    wait_converged,
    write_config,
)


@pytest.fixture(params=["wal", "polling"])
def bookstore(request, bookstore_db: str, index_prefix: str, tmp_path: Path) -> tuple[str, Path]:
    """The bookstore, captured by each backend in turn."""
    generate(bookstore_db, books=200)
    return bookstore_db, write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix, capture=request.param)


def test_backfill_then_every_kind_of_change_converges(bookstore, opensearch) -> None:
    dsn, config = bookstore
    index = next(iter(load_config(config).indexes))
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        wait_converged(opensearch, config)
        sql(
            dsn,
            # root: insert, update, delete, key change
            "INSERT INTO book (id, isbn, title, publisher_id, genres) VALUES (100001, 'x-1', 'New book', 1, '{a,b}')",
            "UPDATE book SET title = 'Renamed', price = 9.99 WHERE id = 2",
            "DELETE FROM book WHERE id = 3",
            "UPDATE book SET id = 100002 WHERE id = 4",
            # many_to_one: rename a publisher, move a book to another publisher
            "UPDATE publisher SET name = 'Renamed publisher' WHERE id = 1",
            "UPDATE book SET publisher_id = 2 WHERE id = 5",
            # one_to_one: insert, update, delete
            "INSERT INTO book_detail (book_id, summary) VALUES (100001, 'a summary') ON CONFLICT DO NOTHING",
            "UPDATE book_detail SET summary = 'changed' WHERE book_id = (SELECT min(book_id) FROM book_detail)",
            "DELETE FROM book_detail WHERE book_id = (SELECT max(book_id) FROM book_detail WHERE book_id < 100000)",
            # many_to_many: link, unlink, rename an author
            "INSERT INTO book_author (book_id, author_id) VALUES (100001, 1)",
            "DELETE FROM book_author WHERE book_id = 6",
            "UPDATE author SET name = 'Renamed author' WHERE id = 2",
            # one_to_many: insert, update, move between books, delete
            "INSERT INTO review (book_id, reader_id, rating, body) VALUES (100001, 1, 5, 'great')",
            "UPDATE review SET body = 'edited' WHERE id = (SELECT min(id) FROM review)",
            "UPDATE review SET book_id = 7 WHERE id = (SELECT max(id) FROM review WHERE book_id NOT IN (7, 100001))",
            "DELETE FROM review WHERE id = (SELECT min(id) FROM review WHERE book_id = 8)",
            # two levels down: a reviewer renamed, a tag renamed, a tag link moved
            "UPDATE reader SET name = 'Renamed reader' WHERE id = (SELECT reader_id FROM review LIMIT 1)",
            "UPDATE tag SET name = 'renamed-tag' WHERE id = (SELECT tag_id FROM review_tag LIMIT 1)",
            "DELETE FROM review_tag WHERE review_id = (SELECT min(review_id) FROM review_tag)",
        )
        docs = wait_converged(opensearch, config)
        assert "3" not in docs and "4" not in docs and "100002" in docs
        assert docs["2"]["title"] == "Renamed"
        assert docs["100001"]["reviews"][0]["body"] == "great"
        assert docs["100001"]["authors"][0]["name"]
        assert docs["1"]["publisher"] is None or "publisher" in docs["1"]
        # truncate of a child table: the index is rebuilt; of the root: it is emptied
        sql(dsn, "TRUNCATE review_tag")
        wait_converged(opensearch, config)
        sql(dsn, "TRUNCATE book CASCADE")
        assert wait_converged(opensearch, config) == {}
        sql(dsn, "INSERT INTO book (id, isbn, title) VALUES (1, 'y-1', 'After truncate')")
        assert wait_converged(opensearch, config)["1"]["title"] == "After truncate"
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.output()[-3000:]
    assert index_docs(opensearch, index)["1"]["title"] == "After truncate"


def test_sigterm_flushes_and_acks_everything_read(bookstore, opensearch) -> None:
    dsn, config = bookstore
    run = Flusso(config)
    run.wait_for("live capture started")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(1, 30):
            conn.execute("UPDATE book SET title = %s WHERE id = %s", (f"sigterm {i}", i))
        with conn.transaction():  # the last write, and a WAL position its commit record comes after
            conn.execute("UPDATE book SET title = 'sigterm last' WHERE id = 30")
            # inside the transaction: other databases' WAL after the commit must not count (the server
            # is shared), and a poll that ran just after the commit must count
            after_writes = lsn_to_int(conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])
    wait_converged(opensearch, config)
    run.signal(signal.SIGTERM)
    assert run.wait(60) == 0, run.output()[-3000:]
    assert confirmed(config) >= after_writes


def test_validate_exit_codes(bookstore, tmp_path: Path) -> None:
    _, config = bookstore
    ok = flusso("validate", config=config)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace("title: title", "title: titel"))
    res = flusso("validate", config=bad)
    assert res.returncode == 1
    assert 'column "titel" does not exist' in res.stderr
    assert "postgres:postgres@" not in res.stdout + res.stderr


def test_status_then_teardown(bookstore, opensearch) -> None:
    dsn, config = bookstore
    source = load_config(config).source
    index = next(iter(load_config(config).indexes))
    assert flusso("run", "--no-live", config=config).returncode == 0
    status = json.loads(flusso("status", "--json", config=config).stdout)
    assert status["slot_exists"] and status["lag_bytes"] is not None
    shown = status["indexes"][index]
    assert {k: shown[k] for k in ("seeded", "documents", "rows", "definition_current")} == {
        "seeded": True, "documents": 200, "rows": 200, "definition_current": True}
    # the name is an alias over the first generation; nothing is being rebuilt
    assert (shown["alias"], shown["serving"], shown["building"]) == (index, f"{index}__g1", None)
    refused = flusso("teardown", config=config, stdin=subprocess.DEVNULL)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert confirmed(config) is not None
    done = flusso("teardown", "--yes", config=config)
    assert done.returncode == 0, done.stderr
    assert confirmed(config) is None
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_publication").fetchone()[0] == 0
        # polling's triggers and schema are gone too
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'flusso%'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                            (source.polling_schema,)).fetchone()[0] == 0


def test_refresh_wait_for_makes_what_is_acknowledged_searchable(bookstore_db, index_prefix, tmp_path,
                                                                opensearch) -> None:
    """With `refresh: wait_for` a flush returns once its documents are searchable, so the slot is
    never acknowledged past a change a search cannot see yet; the index refreshes only every 5 s, so
    without it a search right after the ack would miss the change most of the time."""
    generate(bookstore_db, books=50)
    books = read_yaml((BOOKSTORE / "flusso.yaml").read_text())["indexes"]["books"]
    books.update(refresh="wait_for", settings={**books.get("settings", {}), "refresh_interval": "5s"})
    config = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix, indexes={"books": books})
    loaded = load_config(config)
    index, slot = next(iter(loaded.indexes)), loaded.source.slot
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        wait_converged(opensearch, config)
        for title, statement in (("Searchable one", "UPDATE book SET title = 'Searchable one' WHERE id = 2"),
                                 ("Searchable two", "UPDATE book SET title = 'Searchable two' WHERE id = 2")):
            sql(bookstore_db, statement)
            commit = current_lsn(bookstore_db)
            deadline = time.monotonic() + 30
            while (slot_confirmed(bookstore_db, slot) or 0) < commit:
                assert time.monotonic() < deadline, "the change was never acknowledged"
                time.sleep(0.02)
            hits = opensearch.search(index=index, body={"query": {"ids": {"values": ["2"]}}})["hits"]["hits"]
            assert [h["_source"]["title"] for h in hits] == [title], "acknowledged, not searchable"
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.output()[-3000:]


def test_backfill_builds_key_ranges_on_several_connections_from_one_snapshot(bookstore_db, index_prefix, tmp_path,
                                                                            opensearch) -> None:
    """Three connections build ranges of 20 keys at once; every document is there, equal to a fresh
    build, and carries the one snapshot's position as its version."""
    generate(bookstore_db, books=200)
    config = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix,
                          batch={"max_changes": 20, "backfill_connections": 3})
    index = next(iter(load_config(config).indexes))
    done = flusso("backfill", "--force", config=config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "built on 3 connections from 1 shared snapshot(s)" in done.stdout + done.stderr
    wait_converged(opensearch, config)
    opensearch.indices.refresh(index=index)
    hits = opensearch.search(index=index, body={"size": 1000, "version": True, "_source": False})["hits"]["hits"]
    with psycopg.connect(bookstore_db) as conn:
        books = conn.execute("SELECT count(*) FROM book").fetchone()[0]
    assert len(hits) == books
    assert len({h["_version"] for h in hits}) == 1, "one snapshot, one version"
