"""The pgoutput decoder and the replication framing, on bytes captured from a real PostgreSQL 15.

No server needed: `tests/data/pgoutput/messages.json` was written by `tests/data/pgoutput/capture.py`,
which ran the SQL recorded beside each step and kept what the slot sent.
"""

from __future__ import annotations

import copy
import json
import pickle
import struct
from functools import cache
from pathlib import Path

import pytest

from flusso_engine.capture.wal import pgoutput
from flusso_engine.capture.wal.pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    DecodeError,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    Relation,
    Truncate,
    Type,
    Update,
    decode,
    row,
)
from flusso_engine.capture.wal.replication import (
    XLOG_HEADER,
    keepalive,
    now_pg_micros,
    standby_status,
)
from flusso_engine.error import SourceError

DATA = Path(__file__).parent / "data" / "pgoutput" / "messages.json"


@cache
def _captured() -> dict:
    return json.loads(DATA.read_text())


def step(name: str) -> list[pgoutput.Message]:
    for s in _captured()["steps"]:
        if s["step"] == name:
            return [decode(bytes.fromhex(h)) for h in s["messages"]]
    raise KeyError(name)


def one(messages: list[pgoutput.Message], cls: type) -> pgoutput.Message:
    found = [m for m in messages if isinstance(m, cls)]
    assert len(found) == 1, found
    return found[0]


def item_relation() -> Relation:
    return one(step("insert"), Relation)  # type: ignore[return-value]


def full_relation() -> Relation:
    return one(step("insert_full"), Relation)  # type: ignore[return-value]


def test_every_captured_message_decodes():
    kinds = {type(m) for s in _captured()["steps"] for m in step(s["step"])}
    assert kinds == {Begin, Commit, Relation, Type, Insert, Update, Delete, Truncate, Origin, LogicalMessage}


def test_begin_and_commit_frame_a_transaction_with_its_commit_lsn():
    messages = step("insert")
    begin, commit = messages[0], messages[-1]
    assert isinstance(begin, Begin) and isinstance(commit, Commit)
    assert begin.final_lsn == commit.commit_lsn < commit.end_lsn
    assert begin.commit_time == commit.commit_time
    assert begin.xid > 0 and commit.flags == 0


def test_successive_transactions_have_growing_positions():
    ends = [one(step(s), Commit).end_lsn for s in ("insert", "update", "update_key", "delete_key")]
    assert ends == sorted(ends) and len(set(ends)) == 4


def test_relation_describes_columns_types_and_identity():
    rel = item_relation()
    assert (rel.namespace, rel.name, rel.replica_identity) == ("public", "item", "d")
    assert rel.qualified == "public.item"
    names = " ".join(c.name for c in rel.columns)
    assert names == "id name price in_stock tags mood qty body created ratio big"
    by_name = {c.name: c for c in rel.columns}
    assert [c.name for c in rel.columns if c.is_key] == ["id"]
    assert (by_name["id"].type_oid, by_name["name"].type_oid, by_name["price"].type_oid) == (23, 25, 1700)
    assert by_name["price"].type_modifier == ((10 << 16) | 2) + 4  # numeric(10, 2)
    assert by_name["tags"].type_oid == 1009  # text[]
    assert by_name["name"].type_modifier == -1


def test_full_identity_relation_marks_every_column_as_key():
    rel = full_relation()
    assert rel.replica_identity == "f"
    assert all(c.is_key for c in rel.columns)


def test_type_message_names_custom_types_before_their_relation():
    messages = step("insert")
    types = [m for m in messages if isinstance(m, Type)]
    assert messages.index(types[-1]) < messages.index(item_relation())
    by_oid = {c.type_oid: c.name for c in item_relation().columns}
    enum = next(t for t in types if t.name == "mood")
    assert enum.namespace == "public" and by_oid[enum.oid] == "mood"
    domain = next(t for t in types if by_oid.get(t.oid) == "qty")  # a domain is sent as its base type
    assert (domain.namespace, domain.name) == ("", "int4")


def test_insert_values_are_postgresql_text_and_null_is_none():
    inserts = [m for m in step("insert") if isinstance(m, Insert)]
    assert [i.relation_oid for i in inserts] == [item_relation().oid] * 2
    first = row(item_relation(), inserts[0].new)
    assert first == {
        "id": "1",
        "name": "Ünïcode 'quoted' | pipe",
        "price": "12.50",
        "in_stock": "t",
        "tags": '{a,"b c"}',
        "mood": "happy",
        "qty": "3",
        "body": "x" * 5000,
        "created": "2024-01-02 03:04:05.123456+00",
        "ratio": "0.1",
        "big": "9007199254740993",
    }
    second = row(item_relation(), inserts[1].new)
    assert second["id"] == "2" and all(v is None for k, v in second.items() if k != "id")


def test_update_without_key_change_has_no_old_and_marks_unchanged_toast():
    upd = one(step("update"), Update)
    assert upd.old is None and upd.old_kind is None
    new = row(item_relation(), upd.new)
    assert new["name"] == "renamed" and new["id"] == "1"
    assert new["body"] is UNCHANGED  # 5000 bytes stored EXTERNAL and not touched: not resent


def test_update_of_the_key_carries_the_old_key_only():
    upd = one(step("update_key"), Update)
    assert upd.old_kind == "K"
    assert row(item_relation(), upd.old, "K") == {"id": "2"}  # the NULLs sent for other columns are dropped
    assert row(item_relation(), upd.new)["id"] == "10"


def test_delete_carries_the_old_key():
    delete = one(step("delete_key"), Delete)
    assert delete.old_kind == "K"
    assert row(item_relation(), delete.old, delete.old_kind) == {"id": "10"}


def test_full_identity_update_and_delete_carry_the_whole_old_row():
    upd = one(step("update_full"), Update)
    assert upd.old_kind == "O"
    assert row(full_relation(), upd.old, "O") == {"id": "1", "code": "a", "note": "first"}
    assert row(full_relation(), upd.new) == {"id": "1", "code": "a", "note": "second"}
    delete = one(step("delete_full"), Delete)
    assert delete.old_kind == "O"
    assert row(full_relation(), delete.old, "O") == {"id": "1", "code": "a", "note": "second"}


def test_truncate_lists_every_relation_and_its_options():
    messages = step("truncate")
    trunc = one(messages, Truncate)
    rels = {m.oid: m.qualified for m in messages if isinstance(m, Relation)}
    assert [rels[o] for o in trunc.relation_oids] == ["public.item_full", "public.other"]
    assert trunc.cascade and trunc.restart_identity
    plain = one(step("truncate_plain"), Truncate)
    assert not plain.cascade and not plain.restart_identity and len(plain.relation_oids) == 1


def test_logical_messages_transactional_and_not():
    messages = step("message")
    assert [type(m) for m in messages] == [Begin, LogicalMessage, Commit, LogicalMessage]
    inside, outside = messages[1], messages[3]
    assert isinstance(inside, LogicalMessage) and isinstance(outside, LogicalMessage)
    assert (inside.transactional, inside.prefix, inside.content) == (True, "flusso", b"transactional content")
    assert (outside.transactional, outside.prefix, outside.content) == (False, "flusso", b"\x00\xff")
    assert outside.lsn > inside.lsn


def test_origin_names_the_replication_origin():
    messages = step("origin")
    assert [type(m) for m in messages] == [Begin, Origin, Insert, Commit]
    origin = messages[1]
    assert isinstance(origin, Origin)
    assert origin.origin_lsn == 0xABCDEF  # set with pg_replication_origin_xact_setup('0/ABCDEF', ...)
    assert origin.name.startswith("flusso_capture_origin_")


def test_unchanged_is_one_object_even_after_copy_and_pickle():
    assert copy.deepcopy(UNCHANGED) is UNCHANGED
    assert pickle.loads(pickle.dumps(UNCHANGED)) is UNCHANGED
    assert type(UNCHANGED)() is UNCHANGED and repr(UNCHANGED) == "UNCHANGED"


def test_unknown_or_truncated_messages_are_decode_errors():
    with pytest.raises(DecodeError, match="unknown pgoutput message type 'S'"):
        decode(b"S\x00\x00\x00\x01")  # Stream Start: protocol version 2 only
    begin = bytes.fromhex(_captured()["steps"][0]["messages"][0])
    with pytest.raises(DecodeError, match="malformed"):
        decode(begin[:10])
    assert issubclass(DecodeError, SourceError)


def test_binary_tuple_values_are_refused():
    # Insert into relation 1: one column, 'b' (binary) value: only sent with the binary option.
    data = b"I" + struct.pack("!I", 1) + b"N" + struct.pack("!h", 1) + b"b" + struct.pack("!i", 1) + b"x"
    with pytest.raises(DecodeError, match="binary"):
        decode(data)


def test_decode_accepts_memoryview_and_bytearray():
    raw = bytes.fromhex(_captured()["steps"][0]["messages"][0])
    assert decode(memoryview(raw)) == decode(bytearray(raw)) == decode(raw)


# --- the replication framing -------------------------------------------------------------------


def test_xlogdata_header_then_one_pgoutput_message():
    raw = bytes.fromhex(_captured()["raw_copy_data"]["xlogdata"])
    assert raw[:1] == b"w"
    assert isinstance(decode(raw[XLOG_HEADER:]), Begin)


def test_keepalive_carries_wal_end_and_reply_flag():
    raw = bytes.fromhex(_captured()["raw_copy_data"]["keepalive"])
    ka = keepalive(raw)
    assert raw[:1] == b"k" and ka.wal_end > 0 and ka.reply_requested in (True, False)
    forged = b"k" + struct.pack("!QqB", 0x1_0000_0010, 5, 1)
    assert keepalive(forged).wal_end == 0x1_0000_0010 and keepalive(forged).reply_requested


def test_standby_status_reports_one_position_as_written_flushed_applied():
    msg = standby_status(0x2_0000_0040)
    kind, written, flushed, applied, ts, reply = struct.unpack("!cQQQqB", msg)
    assert (kind, written, flushed, applied, reply) == (b"r", 0x2_0000_0040, 0x2_0000_0040, 0x2_0000_0040, 0)
    assert abs(ts - now_pg_micros()) < 5_000_000
