"""The Kafka message format (queue/kafka/codec.py): every change kind round-trips, compactly, and a
message of another version or shape is refused with what is wrong."""

from __future__ import annotations

import json

import pytest

from flusso_engine.changes import UNCHANGED, Change, commit
from flusso_engine.queue.kafka.codec import VERSION, FormatError, decode, encode, message_key

CHANGES = [
    Change("public.book", "insert", new={"id": "1", "title": "Il nome della rosa", "isbn": None},
           position=23612928, xid=741),
    Change("public.book", "update", new={"id": "1", "title": "The Name", "body": UNCHANGED},
           old={"id": "1", "title": "Il nome", "body": "long"}, position=2**40 + 5, xid=2**32 - 1),
    Change("public.book", "delete", old={"id": "1"}, position=23613000, xid=742),
    Change("public.author", "truncate", position=23614000, xid=743),
    Change("public.author", "resync", position=23615000),
    commit(23616000, xid=743),
    Change("public.book", "insert", new={"id": "2", "title": "Ünïcødé ✓ \"quoted\" | \\ back"}, position=1, xid=1),
    Change("public.book", "update", new={"id": "3", "title": ""}, old=None, position=7, xid=8),
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda c: c.op)
def test_every_change_kind_round_trips(change: Change) -> None:
    back = decode(encode(change))
    assert back == change
    for row, was in ((back.new, change.new), (back.old, change.old)):
        for name, value in (row or {}).items():
            assert (value is UNCHANGED) == (was[name] is UNCHANGED)  # the marker, not a text


def test_the_format_is_one_compact_versioned_array() -> None:
    value = encode(CHANGES[0])
    assert value == b'[1,"i","public.book",23612928,741,{"id":"1","title":"Il nome della rosa","isbn":null}]'
    assert json.loads(value)[0] == VERSION
    # an unchanged TOASTed value is `false`, absent trailing images are left out
    assert encode(CHANGES[1]).endswith(b'"body":false},{"id":"1","title":"Il nome","body":"long"}]')
    assert encode(commit(99, 5)) == b'[1,"c","",99,5]'
    assert encode(Change("public.book", "update", new=None, old={"id": "1"}, position=3, xid=4)) == (
        b'[1,"u","public.book",3,4,null,{"id":"1"}]'
    )
    # non-ASCII text stays UTF-8, not \u escapes
    assert "Ünïcødé".encode() in encode(CHANGES[6])


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"{}", "not a versioned flusso change"),
        (b'[true,"i","t",1,1]', "not a versioned flusso change"),
        (b'[2,"i","public.book",1,1]', "format version 2, and this flusso reads version 1 only: run the capture"),
        (b'[1,"x","public.book",1,1]', "op 'x' is none of i, u, d, t, r, c"),
        (b'[1,"i","public.book",-1,1]', "its position is -1"),
        (b'[1,"i","public.book",1,"7"]', "its xid is '7'"),
        (b'[1,"i","public.book",1]', "5 to 7 items, this one 4"),
        (b'[1,"i",3,1,1]', "its table is 3"),
        (b'[1,"i","public.book",1,1,{"id":1}]', "column 'id' of its new row is 1"),
        (b'[1,"u","public.book",1,1,null,[1]]', "its old row is list"),
    ],
)
def test_a_foreign_or_newer_message_is_refused_saying_why(value: bytes, says: str) -> None:
    with pytest.raises(FormatError) as err:
        decode(value)
    assert says in str(err.value)


def test_message_key_is_table_and_row_key_so_a_row_stays_in_one_partition() -> None:
    keys = {"public.book": ["id"], "public.pair": ["a", "b"]}
    insert = Change("public.book", "insert", new={"id": "7", "title": "x"}, position=1)
    update = Change("public.book", "update", new={"id": "7", "title": "y"}, old={"id": "7"}, position=2)
    delete = Change("public.book", "delete", old={"id": "7"}, position=3)
    assert message_key(insert, keys) == message_key(update, keys) == message_key(delete, keys) == b"public.book\x007"
    assert message_key(Change("public.pair", "insert", new={"a": "x|y", "b": "z"}), keys) == b"public.pair\x00x\\|y|z"
    # without a row key: the table alone
    assert message_key(Change("public.book", "truncate", position=4), keys) == b"public.book"
    assert message_key(Change("public.other", "insert", new={"id": "1"}), keys) == b"public.other"
    assert message_key(Change("public.book", "update", new={"id": UNCHANGED}), keys) == b"public.book"
