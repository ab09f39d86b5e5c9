"""Schema changes under capture, a dropped publication and partitioned tables, against the real services
(issue #10 items 3, 5 and 7).

Each case ends with the index equal to a fresh build and the slot acknowledged, or with a clear error
(exit 2) and the slot not acknowledged past the first change not applied, and then, after the
documented fix and a restart, the index equal to a fresh build. An `item` root with a one_to_many
`parts` child: `part.item_id` is not in part's key, so part needs REPLICA IDENTITY FULL.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from flusso_engine.config import load_config

from .e2e import Flusso, flusso, sql, wait_converged, write_config
from .test_engine_faults import pending_in_slot

PLAIN = """
CREATE TABLE item (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE part (id int PRIMARY KEY, item_id int NOT NULL, qty int, note text);
"""
PARTITIONED = """
CREATE TABLE item (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE part (id int PRIMARY KEY, item_id int NOT NULL, qty int, note text) PARTITION BY RANGE (id);
CREATE TABLE part_a PARTITION OF part FOR VALUES FROM (1) TO (100);
CREATE TABLE part_b PARTITION OF part FOR VALUES FROM (100) TO (200);
"""
ROWS = """
INSERT INTO item SELECT g, 'item ' || g FROM generate_series(1, 5) g;
INSERT INTO part SELECT g, 1 + g % 5, g, 'note ' || g FROM generate_series(1, 40) g;
INSERT INTO part SELECT 100 + g, 1 + g % 5, g, 'late ' || g FROM generate_series(1, 10) g;
"""
INDEX = {
    "items": {
        "table": "public.item",
        "key": ["id"],
        "fields": {"name": "name"},
        "settings": {"number_of_shards": 1, "number_of_replicas": 0},
        "relations": {
            "parts": {"table": "public.part", "type": "one_to_many", "on": {"id": "item_id"},
                      "fields": {"qty": "qty", "note": "note"}},
        },
    }
}


def setup(dsn: str, index_prefix: str, tmp_path: Path, schema: str = PLAIN) -> Path:
    sql(dsn, schema, ROWS)
    return write_config(tmp_path / "flusso.yaml", dsn, index_prefix, indexes=INDEX,
                        batch={"max_changes": 100, "max_delay_ms": 100})


def live(config: Path) -> Flusso:
    run = Flusso(config)
    run.wait_for("live capture started")
    return run


def wait_seeded(config: Path, timeout: float = 60) -> None:
    """The index is marked seeded (a rebuild in the live loop has finished)."""
    from opensearchpy import OpenSearch

    client = OpenSearch(load_config(config).sink.hosts)
    index = next(iter(load_config(config).indexes))
    deadline = time.monotonic() + timeout
    def meta() -> dict:  # the index is an alias: its serving generation's mapping
        return next(iter(client.indices.get_mapping(index=index).values()))["mappings"]["_meta"]["flusso"]

    while "seeded" not in meta():
        assert time.monotonic() < deadline, f"{index} not seeded after {timeout}s"
        time.sleep(0.2)


def stop_and_check_acked(run: Flusso, dsn: str, config: Path, marker: bytes) -> None:
    """A clean stop acknowledges what was applied: the slot holds nothing with `marker` any more, and
    the index is seeded."""
    if run.proc.poll() is None:
        wait_seeded(config)
    run.stop()
    assert run.proc.returncode == 0, run.output()[-3000:]
    assert marker not in pending_in_slot(dsn, config)


def identity(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT relname::text, relreplident::text FROM pg_class "
                                 "WHERE relname LIKE 'part%' AND relkind IN ('r', 'p')").fetchall())


def test_replica_identity_set_to_default_under_capture_stops_before_a_moved_child(
        fresh_db: str, index_prefix: str, tmp_path: Path, opensearch) -> None:
    config = setup(fresh_db, index_prefix, tmp_path)
    run = live(config)
    wait_converged(opensearch, config)
    sql(fresh_db, "ALTER TABLE part REPLICA IDENTITY DEFAULT",
        "UPDATE part SET item_id = 2, note = 'moved-away' WHERE id = 1")
    assert run.wait(60) == 2
    out = run.output()
    assert "REPLICA IDENTITY of public.part is DEFAULT, but flusso needs FULL" in out
    assert "start flusso again: it sets REPLICA IDENTITY FULL again" in out
    assert b"moved-away" in pending_in_slot(fresh_db, config)  # not acknowledged
    restarted = live(config)
    try:
        assert "REPLICA IDENTITY FULL had to be set again on public.part" in restarted.output()
        docs = wait_converged(opensearch, config)
        assert all(p["note"] != "moved-away" for p in docs["1"]["parts"])  # no ghost in the old parent
        sql(fresh_db, "UPDATE part SET item_id = 3, note = 'moved-again' WHERE id = 2")
        wait_converged(opensearch, config)
    finally:
        stop_and_check_acked(restarted, fresh_db, config, b"moved-")


def test_child_table_swapped_under_capture_stops_then_restart_republishes_and_rebuilds(
        fresh_db: str, index_prefix: str, tmp_path: Path, opensearch) -> None:
    config = setup(fresh_db, index_prefix, tmp_path)
    run = live(config)
    wait_converged(opensearch, config)
    sql(fresh_db, "CREATE TABLE part2 (LIKE part INCLUDING ALL)", "INSERT INTO part2 SELECT * FROM part",
        "DROP TABLE part", "ALTER TABLE part2 RENAME TO part",
        "UPDATE part SET note = 'after-swap' WHERE id = 3")  # never reaches the slot
    assert run.wait(60) == 2
    assert "table public.part was replaced under the same name" in run.output()
    assert "it publishes the table now under that name and rebuilds" in run.output()
    restarted = live(config)
    try:
        out = restarted.output()
        assert "lacked table public.part" in out or "public.part was replaced" in out
        docs = wait_converged(opensearch, config)
        assert any(p["note"] == "after-swap" for d in docs.values() for p in d["parts"])
        sql(fresh_db, "UPDATE part SET note = 'captured-again' WHERE id = 4")
        wait_converged(opensearch, config)
    finally:
        stop_and_check_acked(restarted, fresh_db, config, b"captured-again")


def test_publication_dropped_under_capture_is_recovered_on_restart_without_a_slot_drop(
        fresh_db: str, index_prefix: str, tmp_path: Path, opensearch) -> None:
    config = setup(fresh_db, index_prefix, tmp_path)
    publication = load_config(config).source.publication
    run = live(config)
    wait_converged(opensearch, config)
    sql(fresh_db, f"DROP PUBLICATION {publication}", "UPDATE item SET name = 'while-unpublished' WHERE id = 1")
    assert run.wait(60) == 2
    assert "Start flusso again: it recreates the publication" in run.output() or (
        "start flusso again: it recreates the publication" in run.output())
    restarted = live(config)
    try:
        out = restarted.output()
        assert "moved slot" in out and "created logical replication slot" not in out
        assert f"publication {publication} had to be created again for the existing slot" in out
        docs = wait_converged(opensearch, config)
        assert docs["1"]["name"] == "while-unpublished"
        sql(fresh_db, "UPDATE item SET name = 'published-again' WHERE id = 2")
        wait_converged(opensearch, config)
    finally:
        stop_and_check_acked(restarted, fresh_db, config, b"published-again")


def test_publication_recreated_by_hand_says_how_to_recover_and_recreate_slot_does_it(
        fresh_db: str, index_prefix: str, tmp_path: Path, opensearch) -> None:
    config = setup(fresh_db, index_prefix, tmp_path)
    publication = load_config(config).source.publication
    run = live(config)
    wait_converged(opensearch, config)
    sql(fresh_db, f"DROP PUBLICATION {publication}", "UPDATE item SET name = 'in-the-gap' WHERE id = 1")
    assert run.wait(60) == 2
    sql(fresh_db, f"CREATE PUBLICATION {publication} FOR TABLE item, part "
                  "WITH (publish_via_partition_root = true)")
    stuck = Flusso(config)
    assert stuck.wait(60) == 2
    assert "run `flusso run --recreate-slot`" in stuck.output()
    assert stuck.output().count("--recreate-slot") == 1  # said once
    fixed = Flusso(config, "--recreate-slot")
    try:
        fixed.wait_for("live capture started")
        assert wait_converged(opensearch, config)["1"]["name"] == "in-the-gap"
        sql(fresh_db, "UPDATE item SET name = 'after-recreate' WHERE id = 2")
        wait_converged(opensearch, config)
    finally:
        stop_and_check_acked(fixed, fresh_db, config, b"after-recreate")


@pytest.mark.parametrize("fix", ["add the column back", "drop the field from the config"])
def test_needed_column_dropped_under_capture_stops_then_the_fix_converges(
        fix: str, fresh_db: str, index_prefix: str, tmp_path: Path, opensearch) -> None:
    config = setup(fresh_db, index_prefix, tmp_path)
    run = live(config)
    wait_converged(opensearch, config)
    sql(fresh_db, "ALTER TABLE part DROP COLUMN note", "UPDATE part SET qty = 4242 WHERE id = 1")
    assert run.wait(60) == 2
    assert 'column "note" of public.part is gone (dropped or renamed)' in run.output()
    assert b"4242" in pending_in_slot(fresh_db, config)
    checked = flusso("validate", config=config)
    assert checked.returncode == 1 and "note" in checked.stderr
    if fix == "add the column back":
        sql(fresh_db, "ALTER TABLE part ADD COLUMN note text")
    else:
        config.write_text(config.read_text().replace("          note: note\n", ""))
        assert "note: note" not in config.read_text()
    restarted = live(config)
    try:
        docs = wait_converged(opensearch, config)
        assert any(p["qty"] == 4242 for p in docs["2"]["parts"])
    finally:
        stop_and_check_acked(restarted, fresh_db, config, b"4242")


def test_needed_column_retyped_under_capture_stops_then_restart_rebuilds(
        fresh_db: str, index_prefix: str, tmp_path: Path, opensearch) -> None:
    config = setup(fresh_db, index_prefix, tmp_path)
    run = live(config)
    wait_converged(opensearch, config)
    sql(fresh_db, "ALTER TABLE part ALTER COLUMN qty TYPE text", "UPDATE part SET qty = 'many' WHERE id = 1")
    assert run.wait(60) == 2
    assert 'column "qty" of public.part changed type from integer to text' in run.output()
    assert b"many" in pending_in_slot(fresh_db, config)
    restarted = live(config)
    try:
        docs = wait_converged(opensearch, config)
        assert any(p["qty"] == "many" for p in docs["2"]["parts"])
    finally:
        stop_and_check_acked(restarted, fresh_db, config, b"many")


def test_partitions_get_replica_identity_full_and_a_moved_child_leaves_its_old_parent(
        fresh_db: str, index_prefix: str, tmp_path: Path, opensearch) -> None:
    config = setup(fresh_db, index_prefix, tmp_path, PARTITIONED)
    run = live(config)
    try:
        assert identity(fresh_db) == {"part": "f", "part_a": "f", "part_b": "f"}
        wait_converged(opensearch, config)
        sql(fresh_db, "UPDATE part SET item_id = 3, note = 'moved' WHERE id = 5",
            "UPDATE part SET item_id = 4, note = 'moved-late' WHERE id = 105",
            "DELETE FROM part WHERE id = 6")
        docs = wait_converged(opensearch, config)
        assert [p["note"] for p in docs["3"]["parts"]].count("moved") == 1
    finally:
        stop_and_check_acked(run, fresh_db, config, b"moved-late")


def test_truncate_of_a_partition_rebuilds_the_index(fresh_db: str, index_prefix: str, tmp_path: Path,
                                                     opensearch) -> None:
    config = setup(fresh_db, index_prefix, tmp_path, PARTITIONED)
    run = live(config)
    try:
        wait_converged(opensearch, config)
        sql(fresh_db, "TRUNCATE part_b")  # sends nothing through a root publication
        docs = wait_converged(opensearch, config)
        assert not any(p["note"].startswith("late") for d in docs.values() for p in d["parts"])
        assert "truncated or rewritten public.part_b" in run.output()
        sql(fresh_db, "UPDATE part SET note = 'after-truncate' WHERE id = 7")
        wait_converged(opensearch, config)
    finally:
        stop_and_check_acked(run, fresh_db, config, b"after-truncate")


def test_detach_and_attach_of_a_partition_rebuild_the_index(fresh_db: str, index_prefix: str, tmp_path: Path,
                                                            opensearch) -> None:
    config = setup(fresh_db, index_prefix, tmp_path, PARTITIONED)
    run = live(config)
    try:
        wait_converged(opensearch, config)
        sql(fresh_db, "ALTER TABLE part DETACH PARTITION part_b")
        docs = wait_converged(opensearch, config)
        assert not any(p["note"].startswith("late") for d in docs.values() for p in d["parts"])
        sql(fresh_db, "UPDATE part_b SET note = 'late, changed while detached' WHERE id = 101",
            "ALTER TABLE part ATTACH PARTITION part_b FOR VALUES FROM (100) TO (200)")
        docs = wait_converged(opensearch, config)
        assert any(p["note"] == "late, changed while detached" for d in docs.values() for p in d["parts"])
        assert "detached or dropped public.part_b" in run.output() and "attached public.part_b" in run.output()
    finally:
        stop_and_check_acked(run, fresh_db, config, b"changed while detached")


def test_a_partition_attached_without_full_identity_stops_then_restart_sets_it_and_rebuilds(
        fresh_db: str, index_prefix: str, tmp_path: Path, opensearch) -> None:
    config = setup(fresh_db, index_prefix, tmp_path, PARTITIONED)
    run = live(config)
    wait_converged(opensearch, config)
    sql(fresh_db, "CREATE TABLE part_c (LIKE part INCLUDING ALL)",
        "INSERT INTO part_c VALUES (200, 1, 1, 'attached-with-rows')",
        "ALTER TABLE part ATTACH PARTITION part_c FOR VALUES FROM (200) TO (300)")
    assert run.wait(60) == 2
    assert "REPLICA IDENTITY of partition public.part_c of public.part is DEFAULT" in run.output()
    restarted = live(config)
    try:
        assert identity(fresh_db)["part_c"] == "f"
        docs = wait_converged(opensearch, config)
        assert any(p["note"] == "attached-with-rows" for p in docs["1"]["parts"])
    finally:
        stop_and_check_acked(restarted, fresh_db, config, b"attached-with-rows")


def test_column_renamed_under_capture_stops_validate_names_it_and_renaming_back_converges(
        fresh_db: str, index_prefix: str, tmp_path: Path, opensearch) -> None:
    config = setup(fresh_db, index_prefix, tmp_path)
    run = live(config)
    wait_converged(opensearch, config)
    sql(fresh_db, "ALTER TABLE part RENAME COLUMN note TO remark", "UPDATE part SET remark = 'renamed' WHERE id = 1")
    assert run.wait(60) == 2
    assert 'column "note" of public.part is gone (dropped or renamed)' in run.output()
    assert b"renamed" in pending_in_slot(fresh_db, config)
    checked = flusso("validate", config=config)
    assert checked.returncode == 1 and '"note"' in checked.stderr and "remark" in checked.stderr
    sql(fresh_db, "ALTER TABLE part RENAME COLUMN remark TO note")
    restarted = live(config)
    try:
        docs = wait_converged(opensearch, config)
        assert any(p["note"] == "renamed" for p in docs["2"]["parts"])
    finally:
        stop_and_check_acked(restarted, fresh_db, config, b"renamed")
