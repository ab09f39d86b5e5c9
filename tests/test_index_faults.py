"""Index-level faults and unindexable documents, end to end against the real services: an index that
cannot take writes stops the acks (never a rejection), a document OpenSearch cannot take is refused
alone and leaves no stale copy, and `flusso dead-letters --replay` re-drives it once fixed."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from flusso_engine.config import load_config
from flusso_engine.sinks.opensearch import letter_id

from .e2e import Flusso, flusso, fresh_build, generate, index_docs, sql, wait_converged, write_config
from .test_engine_faults import pending_in_slot

FAST_RETRIES = {"retries": 2, "backoff_ms": 50, "max_backoff_ms": 100}
WIDE = {**os.environ, "COLUMNS": "400"}  # rich tables unwrapped, so that the test can read them


def wait_until(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.3)


@pytest.mark.parametrize("policy", ["skip", "dead_letter"])
def test_a_write_blocked_index_stops_the_run_unacked_then_converges(
    policy: str, bookstore_db: str, index_prefix: str, tmp_path: Path, opensearch
) -> None:
    generate(bookstore_db, books=30)
    config = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix,
                          failures={"item_rejection": policy, "flush_error": FAST_RETRIES},
                          batch={"max_changes": 100, "max_delay_ms": 50})
    index = next(iter(load_config(config).indexes))
    run = Flusso(config)
    run.wait_for("live capture started")
    opensearch.indices.put_settings(index=index, body={"index.blocks.write": True})
    try:
        sql(bookstore_db, "UPDATE book SET title = 'while blocked' WHERE id = 3")
        assert run.wait(60) == 2
        out = run.output()
        # the name is an alias: the message names it, and the generation behind it that is blocked
        assert f"index {index} (its generation {index}__g1) is blocked for writes by index.blocks.write" in out
        assert f'PUT /{index}__g1/_settings {{"index.blocks.write": null}}' in out
        assert "dead-lettered" not in out and "skipped" not in out
        assert not opensearch.indices.exists(index=f"{index}-deadletter")
        assert b"while blocked" in pending_in_slot(bookstore_db, config), "the change was not acknowledged"
    finally:
        opensearch.indices.put_settings(index=index, body={"index.blocks.write": None})
    restarted = Flusso(config)
    try:
        restarted.wait_for("live capture started")
        assert wait_converged(opensearch, config)["3"]["title"] == "while blocked"
    finally:
        restarted.stop()
    assert restarted.proc.returncode == 0


ITEMS = {
    "items": {
        "table": "public.item",
        "key": ["id"],
        "fields": {"name": "name"},
        "relations": {
            "parts": {"table": "public.part", "type": "one_to_many", "on": {"id": "item_id"},
                      "order_by": ["id"], "fields": {"label": "label"}},
        },
    }
}


def test_a_key_too_long_for_an_id_is_refused_alone_in_backfill_and_live(
    fresh_db: str, index_prefix: str, tmp_path: Path, opensearch
) -> None:
    long_a, long_b = "L" * 600, "M" * 600  # repeat('L', 600) and repeat('M', 600) in SQL
    sql(fresh_db,
        "CREATE TABLE item (id text PRIMARY KEY, name text)",
        "CREATE TABLE part (id serial PRIMARY KEY, item_id text REFERENCES item (id) ON DELETE CASCADE, label text)",
        "INSERT INTO item VALUES ('a', 'first'), ('b', 'second'), (repeat('L', 600), 'long')",
        "INSERT INTO part (item_id, label) VALUES ('a', 'a1'), (repeat('L', 600), 'l1')")
    config = write_config(tmp_path / "flusso.yaml", fresh_db, index_prefix, indexes=ITEMS,
                          batch={"max_changes": 100, "max_delay_ms": 50})
    loaded = load_config(config)
    index = next(iter(loaded.indexes))

    def indexable() -> dict[str, Any]:
        return {k: v for k, v in fresh_build(loaded, index).items() if len(k.encode()) <= 512}

    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        assert index_docs(opensearch, index) == indexable(), "the backfill wrote every other document"
        letters = index_docs(opensearch, f"{index}-deadletter")
        assert letters[letter_id(long_a)]["doc_id"] == long_a
        assert letters[letter_id(long_a)]["reason"].startswith(
            "document id is 600 bytes, OpenSearch's limit is 512")
        assert letters[letter_id(long_a)]["document"]["parts"] == [{"label": "l1"}]

        sql(fresh_db, "INSERT INTO item VALUES ('c', 'third'), (repeat('M', 600), 'long too')",
            "UPDATE item SET name = 'renamed' WHERE id IN ('a', repeat('L', 600))")
        wait_until(lambda: index_docs(opensearch, index) == indexable(), "live changes beside long ids")
        wait_until(lambda: letter_id(long_b) in index_docs(opensearch, f"{index}-deadletter"),
                   "the new long id dead-lettered")
        sql(fresh_db, "DELETE FROM item WHERE id = repeat('L', 600)", "INSERT INTO item VALUES ('d', 'after')")
        wait_until(lambda: "d" in index_docs(opensearch, index), "a change after the delete of a long id")
        assert index_docs(opensearch, index) == indexable()
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.output()[-3000:]


def test_a_row_made_unindexable_leaves_search_and_is_replayed_once_fixed(
    bookstore_db: str, index_prefix: str, tmp_path: Path, opensearch
) -> None:
    generate(bookstore_db, books=30)
    config = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix,
                          failures={"item_rejection": "dead_letter"}, batch={"max_changes": 100, "max_delay_ms": 50})
    index = next(iter(load_config(config).indexes))
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        assert "5" in index_docs(opensearch, index)
        # a BC date: PostgreSQL's text for it ("0044-03-15 BC") is no date OpenSearch can parse
        sql(bookstore_db, "UPDATE book SET published_on = '0044-03-15 BC', title = 'unindexable' WHERE id = 5")
        wait_until(lambda: "5" not in index_docs(opensearch, index), "the stale document leaving search")
        letter = index_docs(opensearch, f"{index}-deadletter")["5"]
        assert (letter["document"]["title"], letter["document"]["published"]) == ("unindexable", "0044-03-15 BC")
        assert "mapper_parsing_exception" in letter["reason"]
    finally:
        run.stop()
    assert run.proc.returncode == 0

    listed = flusso("dead-letters", config=config, env=WIDE)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "mapper_parsing_exception" in listed.stdout and f"1 dead letter in {index}" in listed.stdout

    sql(bookstore_db, "UPDATE book SET published_on = '2001-02-03' WHERE id = 5")  # the cause, fixed
    replayed = flusso("dead-letters", "--replay", config=config, env=WIDE)
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert "replayed 1: 1 went in" in replayed.stdout and f"0 dead letters in {index}" in replayed.stdout
    doc = index_docs(opensearch, index)["5"]  # written by the replay: nothing else runs
    assert (doc["title"], doc["published"]) == ("unindexable", "2001-02-03")
    assert index_docs(opensearch, f"{index}-deadletter") == {}

    restarted = Flusso(config)
    try:
        restarted.wait_for("live capture started")
        wait_converged(opensearch, config)
    finally:
        restarted.stop()


def test_a_replay_keeps_the_letter_of_a_document_still_refused(
    bookstore_db: str, index_prefix: str, tmp_path: Path, opensearch
) -> None:
    generate(bookstore_db, books=10)
    sql(bookstore_db, "UPDATE book SET price = 'NaN' WHERE id = 2")  # NaN: no double OpenSearch takes
    config = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix,
                          failures={"item_rejection": "dead_letter"})
    index = next(iter(load_config(config).indexes))
    backfill = flusso("run", "--no-live", config=config)
    assert backfill.returncode == 0, backfill.stderr[-2000:]
    before = index_docs(opensearch, f"{index}-deadletter")["2"]
    assert "2" not in index_docs(opensearch, index)

    replayed = flusso("dead-letters", "--replay", "--index", index, config=config, env=WIDE)
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert "replayed 1: 0 went in, 1 still rejected" in replayed.stdout
    after = index_docs(opensearch, f"{index}-deadletter")["2"]
    assert "supports only finite values" in after["reason"]
    assert after["failed_at"] > before["failed_at"], "kept with the new attempt"
    assert "2" not in index_docs(opensearch, index)

    unknown = flusso("dead-letters", "--index", "nope", config=config)
    assert unknown.returncode == 1 and 'no index named "nope"' in unknown.stderr
