"""What counts as a schema change the running engine cannot follow (`capture/schema.py`), as pure logic."""

from __future__ import annotations

from flusso_engine.capture.wal.pgoutput import Column, Relation
from flusso_engine.capture.wal.schema import (
    Expected,
    Part,
    State,
    TableState,
    partition_changes,
    relation_problem,
    state_problems,
)

PART = Expected(table="public.part", columns={"id": 23, "item_id": 23, "qty": 23},
                type_names={"id": "integer", "item_id": "integer", "qty": "integer"},
                old_columns=frozenset({"item_id"}), full=True)
ITEM = Expected(table="public.item", columns={"id": 23, "name": 25}, type_names={"id": "integer", "name": "text"},
                old_columns=frozenset({"id"}), full=False)
EXPECTED = {"public.part": PART, "public.item": ITEM}
P1 = Part(301, "public.part_1", "f", 501)
STATE = State.of(True, {
    "public.part": TableState("public.part", 100, "f", True, (P1,)),
    "public.item": TableState("public.item", 200, "d", True),
})


def rel(oid: int, table: str, identity: str = "f", **types: int) -> Relation:
    types = types or {"id": 23, "item_id": 23, "qty": 23}
    keys = set(types) if identity == "f" else {"id"}
    return Relation(oid, "public", table, identity, tuple(Column(c, t, -1, c in keys) for c, t in types.items()))


def test_an_unchanged_relation_or_a_table_outside_the_config_is_fine() -> None:
    assert relation_problem(rel(100, "part"), EXPECTED, STATE) is None
    assert relation_problem(rel(200, "item", "d", **{"id": 23, "name": 25, "extra": 16}), EXPECTED, STATE) is None
    assert relation_problem(rel(999, "audit"), EXPECTED, STATE) is None


def test_a_needed_column_gone_or_retyped_is_named_with_the_fix() -> None:
    gone = relation_problem(rel(100, "part", id=23, item_id=23), EXPECTED, STATE)
    assert gone is not None and gone.table == "public.part"
    assert 'column "qty" of public.part is gone (dropped or renamed)' in gone.what
    assert "flusso validate" in gone.fix
    retyped = relation_problem(rel(100, "part", id=23, item_id=23, qty=25), EXPECTED, STATE,
                               lambda oid, _: {25: "text"}[oid])
    assert retyped is not None and 'changed type from integer to text' in retyped.what


def test_identity_no_longer_full_where_old_rows_are_needed_stops() -> None:
    default = relation_problem(rel(100, "part", "d"), EXPECTED, STATE)
    assert default is not None and "REPLICA IDENTITY of public.part is DEFAULT, but flusso needs FULL" in default.what
    assert "sets REPLICA IDENTITY FULL again" in default.fix
    partition = relation_problem(rel(301, "part_1", "d"), EXPECTED, STATE)
    assert partition is not None and partition.table == "public.part"
    assert "partition public.part_1 of public.part" in partition.what


def test_an_identity_that_drops_a_column_old_rows_must_carry_stops() -> None:
    moved_key = Relation(200, "public", "item", "i", (Column("id", 23, -1, False), Column("name", 25, -1, True)))
    drift = relation_problem(moved_key, EXPECTED, STATE)
    assert drift is not None and "no longer covers column id" in drift.what


def test_a_table_replaced_or_renamed_under_the_same_name_stops() -> None:
    replaced = relation_problem(rel(777, "part"), EXPECTED, STATE)
    assert replaced is not None and "replaced under the same name (OID 100, now 777)" in replaced.what
    renamed = relation_problem(rel(100, "part_old"), EXPECTED, STATE)
    assert renamed is not None and "public.part was renamed to public.part_old" in renamed.what


def test_the_catalog_re_read_finds_what_sends_no_message() -> None:
    swapped = State.of(True, {"public.part": TableState("public.part", 101, "d", False), "public.item":
                              STATE.tables["public.item"]})
    problems = [p.what for p in state_problems(swapped, EXPECTED, STATE)]
    assert any("replaced under the same name (OID 100, now 101)" in p for p in problems)
    assert any("REPLICA IDENTITY of public.part is DEFAULT" in p for p in problems)
    unpublished = State.of(True, {**STATE.tables, "public.item": TableState("public.item", 200, "d", False)})
    assert ["table public.item is no longer in the publication: its changes are not captured"] == [
        p.what for p in state_problems(unpublished, EXPECTED, STATE)]
    assert "publication no longer exists" in state_problems(State.of(False, {}), EXPECTED, STATE)[0].what
    assert state_problems(STATE, EXPECTED, STATE) == []


def test_partitions_attached_detached_or_truncated_are_told_apart() -> None:
    before = STATE.tables["public.part"]
    p2 = Part(302, "public.part_2", "f", 502)
    attached = TableState("public.part", 100, "f", True, (P1, p2))
    assert partition_changes(before, attached) == ([p2], [], [])
    assert partition_changes(attached, before) == ([], [p2], [])
    truncated = TableState("public.part", 100, "f", True, (Part(301, "public.part_1", "f", 999),))
    assert partition_changes(before, truncated)[2][0].name == "public.part_1"
    assert partition_changes(before, before) == ([], [], [])
