"""The OpenSearch sink against the real node: mapping, seeded marker, versioned writes, failures.

A few tests use a stand-in client where the real node cannot be made to fail on cue (item-level
429s, a 503); everything a user would see in OpenSearch is asserted against the real node.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from opensearchpy.exceptions import TransportError

from flusso_engine.config import SinkConfig
from flusso_engine.error import RejectedItem, SinkError
from flusso_engine.policy import FailurePolicies
from flusso_engine.sinks import SeedMarker
from flusso_engine.sinks.opensearch import (
    DEAD_LETTER_SUFFIX,
    OpenSearchSink,
    client_kwargs,
    gc_deletes_s,
    letter_id,
    redact_url,
    retry_window_s,
)
from flusso_engine.sinks.opensearch.index_errors import index_wide

from .conftest import OPENSEARCH_URL

FAST = FailurePolicies(retries=2, backoff_s=0.01, max_backoff_s=0.05)


def mapping(definition_hash: str = "h1", **meta: Any) -> dict:
    return {
        "settings": {"number_of_shards": 1, "number_of_replicas": 0},
        "mappings": {
            "dynamic": False,
            "_meta": {"flusso": {"definition_hash": definition_hash}, **meta},
            "properties": {"title": {"type": "text"}, "pages": {"type": "long"}},
        },
    }


def make_sink(item_rejection: str = "dead_letter", keeps: str = "none", **config: Any) -> OpenSearchSink:
    config = {"type": "opensearch", "hosts": [OPENSEARCH_URL], **config}
    policies = FailurePolicies(item_rejection=item_rejection, item_rejection_keeps=keeps, retries=2,
                               backoff_s=0.01, max_backoff_s=0.05)
    return OpenSearchSink(SinkConfig(**config), policies)


@pytest.fixture
def books(opensearch, index_prefix: str) -> str:
    return f"{index_prefix}books"


def source(opensearch, index: str, doc_id: str) -> dict | None:
    reply = opensearch.get(index=index, id=doc_id, ignore=404)
    return reply["_source"] if reply.get("found") else None


# --- the index and its marker ---------------------------------------------------------------------


def test_ensure_index_creates_the_mapping_once(opensearch, books: str) -> None:
    sink = make_sink()
    sink.ensure_index(books, mapping("h1"))
    sink.ensure_index(books, mapping("h2"))  # an existing index is left as it is
    live = opensearch.indices.get_mapping(index=books)[books]["mappings"]
    assert live["dynamic"] == "false"
    assert live["properties"]["pages"] == {"type": "long"}
    assert live["_meta"]["flusso"] == {"definition_hash": "h1"}
    assert sink.definition_hash(books) == "h1"


def test_a_created_index_never_claims_to_be_seeded(books: str) -> None:
    sink = make_sink()
    claimed = mapping("h1")
    claimed["mappings"]["_meta"]["flusso"]["seeded"] = SeedMarker("h1", "slot", "sys").as_meta()
    sink.ensure_index(books, claimed)
    assert sink.seed_marker(books) is None
    assert not sink.is_seeded(books, SeedMarker("h1", "slot", "sys"))
    assert "seeded" in claimed["mappings"]["_meta"]["flusso"], "the caller's mapping is not changed"


def test_seeded_marker_round_trip(opensearch, books: str) -> None:
    sink = make_sink()
    sink.ensure_index(books, mapping("h1", owner="search-team"))
    marker = SeedMarker("h1", "flusso_slot", "7300000000000000001", 123456)
    assert not sink.is_seeded(books, marker)

    sink.mark_seeded(books, marker)
    assert sink.is_seeded(books, marker)
    assert sink.seed_marker(books) == marker
    meta = opensearch.indices.get_mapping(index=books)[books]["mappings"]["_meta"]
    assert meta["owner"] == "search-team", "the index's other _meta survives"
    assert meta["flusso"]["definition_hash"] == "h1"

    sink.mark_unseeded(books)
    assert not sink.is_seeded(books, marker)
    assert sink.seed_marker(books) is None
    meta = opensearch.indices.get_mapping(index=books)[books]["mappings"]["_meta"]
    assert meta == {"flusso": {"definition_hash": "h1"}, "owner": "search-team"}


@pytest.mark.parametrize(
    "expected",
    [
        SeedMarker("h2", "flusso_slot", "sys-1"),  # the definition changed
        SeedMarker("h1", "other_slot", "sys-1"),  # another slot
        SeedMarker("h1", "flusso_slot", "sys-2"),  # another database
    ],
    ids=["definition", "slot", "database"],
)
def test_a_marker_for_something_else_is_not_seeded(books: str, expected: SeedMarker) -> None:
    sink = make_sink()
    sink.ensure_index(books, mapping("h1"))
    sink.mark_seeded(books, SeedMarker("h1", "flusso_slot", "sys-1", 99))
    assert not sink.is_seeded(books, expected)


def test_an_index_created_with_another_definition_is_not_seeded(books: str) -> None:
    sink = make_sink()
    sink.ensure_index(books, mapping("h1"))
    sink.mark_seeded(books, SeedMarker("h2", "flusso_slot", "sys-1"))
    assert not sink.is_seeded(books, SeedMarker("h2", "flusso_slot", "sys-1"))


def test_the_position_is_not_part_of_is_seeded(books: str) -> None:
    sink = make_sink()
    sink.ensure_index(books, mapping("h1"))
    sink.mark_seeded(books, SeedMarker("h1", "flusso_slot", "sys-1", 99))
    assert sink.is_seeded(books, SeedMarker("h1", "flusso_slot", "sys-1", 0))


def test_a_missing_index_is_not_seeded(books: str) -> None:
    sink = make_sink()
    assert not sink.is_seeded(books, SeedMarker("h1", "slot", "sys"))
    assert sink.seed_marker(books) is None
    assert sink.definition_hash(books) is None
    assert sink.count(books) == 0
    sink.mark_unseeded(books)
    with pytest.raises(SinkError, match="does not exist"):
        sink.mark_seeded(books, SeedMarker("h1", "slot", "sys"))


def test_recreate_empties_the_index_with_the_new_definition(books: str) -> None:
    sink = make_sink()
    sink.ensure_index(books, mapping("h1"))
    sink.write(books, "1", {"title": "Dune"}, 10)
    sink.flush()
    sink.mark_seeded(books, SeedMarker("h1", "slot", "sys"))
    sink.recreate(books, mapping("h2"))
    sink.refresh(books)
    assert sink.count(books) == 0
    assert sink.seed_marker(books) is None
    assert sink.definition_hash(books) == "h2"


# --- writes -----------------------------------------------------------------------------------------


def test_write_and_flush_indexes_and_deletes(opensearch, books: str) -> None:
    sink = make_sink()
    sink.ensure_index(books, mapping())
    sink.write(books, "1", {"title": "Dune", "pages": 412}, 10)
    sink.write(books, "2", {"title": "Emma", "pages": None}, 10)
    assert source(opensearch, books, "1") is None, "write only buffers"
    report = sink.flush()
    assert (report.written, report.deleted, report.conflicts, report.requests) == (2, 0, 0, 1)
    assert report.rejected == []
    assert source(opensearch, books, "1") == {"title": "Dune", "pages": 412}
    assert opensearch.get(index=books, id="1")["_version"] == 10

    sink.write(books, "2", None, 11)
    report = sink.flush()
    assert (report.written, report.deleted) == (0, 1)
    assert source(opensearch, books, "2") is None
    sink.refresh(books)
    assert sink.count(books) == 1


def test_an_older_version_never_overwrites_a_newer_one(opensearch, books: str) -> None:
    sink = make_sink()
    sink.ensure_index(books, mapping())
    sink.write(books, "1", {"title": "new"}, 20)
    sink.flush()
    sink.write(books, "1", {"title": "old"}, 10)
    report = sink.flush()
    assert (report.written, report.conflicts, report.rejected) == (0, 1, [])
    assert source(opensearch, books, "1") == {"title": "new"}

    sink.write(books, "1", {"title": "rebuilt"}, 20)  # the same snapshot again: redelivery
    assert sink.flush().written == 1
    assert source(opensearch, books, "1") == {"title": "rebuilt"}


def test_a_delete_of_a_missing_document_is_fine(books: str) -> None:
    sink = make_sink()
    sink.ensure_index(books, mapping())
    sink.write(books, "nope", None, 5)
    report = sink.flush()
    assert (report.deleted, report.rejected, report.conflicts) == (1, [], 0)


def test_a_document_written_twice_before_a_flush_is_sent_once(opensearch, books: str) -> None:
    sink = make_sink()
    sink.ensure_index(books, mapping())
    sink.write(books, "1", {"title": "first"}, 1)
    sink.write(books, "1", {"title": "second"}, 2)
    sink.write(books, "1", {"title": "stale"}, 1)
    report = sink.flush()
    assert (report.written, report.requests) == (1, 1)
    reply = opensearch.get(index=books, id="1")
    assert (reply["_source"], reply["_version"]) == ({"title": "second"}, 2)


def test_an_empty_flush_sends_nothing(books: str) -> None:
    assert make_sink().flush().requests == 0


def test_a_flush_bigger_than_max_bulk_bytes_is_split(books: str) -> None:
    sink = make_sink(max_bulk_bytes=400)
    sink.ensure_index(books, mapping())
    for i in range(30):
        sink.write(books, str(i), {"title": f"book {i}", "pages": i}, 1)
    report = sink.flush()
    assert report.written == 30
    assert report.requests > 1
    sink.refresh(books)
    assert sink.count(books) == 30


# --- rejected items ---------------------------------------------------------------------------------


def _write_one_poison(sink: OpenSearchSink, index: str) -> None:
    sink.ensure_index(index, mapping())
    sink.write(index, "good", {"title": "fine", "pages": 1}, 1)
    sink.write(index, "bad", {"title": "poison", "pages": "abc"}, 1)


def test_a_rejected_item_under_fail_stops_the_flush(opensearch, books: str) -> None:
    sink = make_sink("fail")
    _write_one_poison(sink, books)
    with pytest.raises(RejectedItem) as caught:
        sink.flush()
    assert (caught.value.index, caught.value.doc_id) == (books, "bad")
    assert "mapper_parsing_exception" in caught.value.reason
    assert source(opensearch, books, "good") is not None, "the rest of the flush was sent"
    with pytest.raises(RejectedItem):
        sink.flush()  # nothing was acknowledged, so the buffer is still there


def test_a_rejected_item_under_skip_is_counted(opensearch, books: str) -> None:
    sink = make_sink("skip")
    _write_one_poison(sink, books)
    report = sink.flush()
    assert report.written == 1
    assert [(r.index, r.doc_id) for r in report.rejected] == [(books, "bad")]
    assert "mapper_parsing_exception" in report.rejected[0].reason
    assert source(opensearch, books, "good") == {"title": "fine", "pages": 1}
    assert not opensearch.indices.exists(index=books + DEAD_LETTER_SUFFIX)
    assert sink.flush().requests == 0, "the buffer was cleared"


def test_a_rejected_item_under_dead_letter_is_kept_with_its_reason(opensearch, books: str) -> None:
    sink = make_sink("dead_letter")
    _write_one_poison(sink, books)
    report = sink.flush()
    assert report.written == 1
    assert [r.doc_id for r in report.rejected] == ["bad"]
    letter = source(opensearch, books + DEAD_LETTER_SUFFIX, "bad")
    assert letter is not None
    assert (letter["index"], letter["doc_id"]) == (books, "bad")
    assert letter["document"] == {"title": "poison", "pages": "abc"}
    assert "mapper_parsing_exception" in letter["reason"]
    assert letter["failed_at"]

    sink.write(books, "bad", {"title": "poison again", "pages": "xyz"}, 2)
    assert len(sink.flush().rejected) == 1, "the dead-letter index takes it again"
    opensearch.indices.refresh(index=books + DEAD_LETTER_SUFFIX)
    hits = opensearch.search(index=books + DEAD_LETTER_SUFFIX, body={"query": {"term": {"doc_id": "bad"}}})
    assert hits["hits"]["total"]["value"] == 1
    assert hits["hits"]["hits"][0]["_source"]["document"]["title"] == "poison again"


def test_a_rejected_document_loses_its_previous_version(opensearch, books: str) -> None:
    sink = make_sink("skip")
    sink.ensure_index(books, mapping())
    sink.write(books, "1", {"title": "indexable", "pages": 1}, 10)
    sink.flush()
    sink.write(books, "1", {"title": "now poison", "pages": "abc"}, 20)
    report = sink.flush()
    assert [r.doc_id for r in report.rejected] == ["1"]
    assert source(opensearch, books, "1") is None, "search no longer shows the stale version"
    sink.write(books, "1", {"title": "fixed", "pages": 2}, 30)
    assert sink.flush().written == 1, "a later good version goes in over the delete"
    assert source(opensearch, books, "1") == {"title": "fixed", "pages": 2}


def test_a_rejected_older_version_leaves_a_newer_document_alone(opensearch, books: str) -> None:
    sink = make_sink("dead_letter")
    sink.ensure_index(books, mapping())
    sink.write(books, "1", {"title": "newer", "pages": 1}, 50)
    sink.flush()
    sink.write(books, "1", {"title": "older poison", "pages": "abc"}, 40)
    assert len(sink.flush().rejected) == 1
    assert source(opensearch, books, "1") == {"title": "newer", "pages": 1}


def test_item_rejection_keeps_previous_keeps_the_previous_version(opensearch, books: str) -> None:
    sink = make_sink("dead_letter", keeps="previous")
    sink.ensure_index(books, mapping())
    sink.write(books, "1", {"title": "indexable", "pages": 1}, 10)
    sink.flush()
    sink.write(books, "1", {"title": "now poison", "pages": "abc"}, 20)
    assert len(sink.flush().rejected) == 1
    assert source(opensearch, books, "1") == {"title": "indexable", "pages": 1}
    assert source(opensearch, books + DEAD_LETTER_SUFFIX, "1")["document"]["title"] == "now poison"


def test_an_id_over_512_bytes_is_rejected_alone_and_dead_lettered_under_a_hash(opensearch, books: str) -> None:
    sink = make_sink("dead_letter")
    sink.ensure_index(books, mapping())
    long_id = "é" * 300  # 600 bytes in UTF-8
    sink.write(books, long_id, {"title": "long", "pages": 1}, 10)
    sink.write(books, "short", {"title": "fine", "pages": 2}, 10)
    sink.write(books, "x" * 513, None, 10)  # a delete of an id that cannot exist
    report = sink.flush()
    assert (report.written, report.deleted) == (1, 1)
    assert [r.doc_id for r in report.rejected] == [long_id]
    assert report.rejected[0].reason.startswith("document id is 600 bytes, OpenSearch's limit is 512")
    assert source(opensearch, books, "short") == {"title": "fine", "pages": 2}
    letter = source(opensearch, books + DEAD_LETTER_SUFFIX, letter_id(long_id))
    assert letter is not None and letter_id(long_id).startswith("sha256:")
    assert (letter["doc_id"], letter["document"]) == (long_id, {"title": "long", "pages": 1})
    assert [d.doc_id for d in sink.dead_letters(books)] == [long_id]


def test_an_id_over_512_bytes_under_fail_stops_after_the_rest_is_sent(opensearch, books: str) -> None:
    sink = make_sink("fail")
    sink.ensure_index(books, mapping())
    sink.write(books, "a" * 600, {"title": "long"}, 10)
    sink.write(books, "short", {"title": "fine"}, 10)
    with pytest.raises(RejectedItem, match="document id is 600 bytes"):
        sink.flush()
    assert source(opensearch, books, "short") == {"title": "fine"}, "the rest of the flush was sent"


def test_dead_letters_are_listed_and_removed(opensearch, books: str) -> None:
    sink = make_sink("dead_letter")
    assert sink.dead_letters(books) == [], "no dead-letter index: no letters"
    _write_one_poison(sink, books)
    sink.flush()
    letters = sink.dead_letters(books)  # written a moment ago, listed at once
    assert [(d.index, d.doc_id, d.letter_id) for d in letters] == [(books, "bad", "bad")]
    assert "mapper_parsing_exception" in letters[0].reason and letters[0].failed_at
    sink.remove_dead_letters(books, letters)
    assert sink.dead_letters(books) == []


# --- index-wide errors --------------------------------------------------------------------------------


BLOCKS = [
    ("index.blocks.write", 'lift the block with PUT /{index}/_settings {{"index.blocks.write": null}}'),
    ("index.blocks.read_only", 'lift the block with PUT /{index}/_settings {{"index.blocks.read_only": null}}'),
    ("index.blocks.read_only_allow_delete",
     "free disk space on the node (its disk usage passed cluster.routing.allocation.disk.watermark.flood_stage), "
     'then lift the block with PUT /{index}/_settings {{"index.blocks.read_only_allow_delete": null}}'),
]


@pytest.mark.parametrize("policy", ["skip", "dead_letter"])
@pytest.mark.parametrize(("block", "fix"), BLOCKS, ids=[b for b, _ in BLOCKS])
def test_a_blocked_index_is_a_flush_error_with_the_fix(opensearch, books: str, block: str, fix: str,
                                                      policy: str) -> None:
    sink = make_sink(policy)
    sink.ensure_index(books, mapping())
    sink.write(books, "1", {"title": "before", "pages": 1}, 10)
    sink.flush()
    opensearch.indices.put_settings(index=books, body={block: True})
    try:
        sink.write(books, "1", {"title": "after", "pages": 2}, 20)
        sink.write(books, "2", None, 20)
        with pytest.raises(SinkError) as caught:
            sink.flush()
    finally:
        opensearch.indices.put_settings(index=books, body={block: None})
    message = str(caught.value)
    assert f"index {books} is blocked for writes by {block}" in message
    assert fix.format(index=books) in message
    assert "3 attempts" in message, "retried like a 5xx first"
    assert not opensearch.indices.exists(index=books + DEAD_LETTER_SUFFIX), "nothing dead-lettered"
    assert source(opensearch, books, "1") == {"title": "before", "pages": 1}


def test_a_closed_index_is_a_flush_error_with_the_fix(opensearch, books: str) -> None:
    sink = make_sink("dead_letter")
    sink.ensure_index(books, mapping())
    opensearch.indices.close(index=books)
    sink.write(books, "1", {"title": "Dune"}, 10)
    with pytest.raises(SinkError) as caught:
        sink.flush()
    assert f"index {books} is closed" in str(caught.value)
    assert f"POST /{books}/_open" in str(caught.value)
    assert not opensearch.indices.exists(index=books + DEAD_LETTER_SUFFIX)


def test_a_block_lifted_while_retrying_lets_the_flush_through(opensearch, books: str) -> None:
    sink = make_sink("dead_letter")
    sink.policies = FailurePolicies(retries=30, backoff_s=0.05, max_backoff_s=0.1)
    sink.ensure_index(books, mapping())
    opensearch.indices.put_settings(index=books, body={"index.blocks.write": True})
    sink.write(books, "1", {"title": "Dune"}, 10)
    lift = threading.Timer(0.3, lambda: opensearch.indices.put_settings(
        index=books, body={"index.blocks.write": None}))
    lift.start()
    try:
        report = sink.flush()
    finally:
        lift.join()
    assert (report.written, report.rejected) == (1, [])
    assert source(opensearch, books, "1") == {"title": "Dune"}


@pytest.mark.parametrize(
    ("status", "error", "cause", "fix"),
    [
        (404, {"type": "index_not_found_exception", "reason": "no such index [books]", "index": "books"},
         "index books does not exist", "start flusso again: it creates the index"),
        (403, {"type": "security_exception",
               "reason": "no permissions for [indices:data/write/bulk[s]] and User [name=flusso]"},
         "may not write to index books", "grant it the write permissions on books"),
        (400, {"type": "illegal_argument_exception",
               "reason": "no write index is defined for alias [books]. The write index may be explicitly "
                         "disabled using is_write_index=false or the alias points to multiple indices "
                         "without one being designated as a write index"},
         "is an alias without a write index", "is_write_index: true"),
        (403, {"type": "cluster_block_exception",
               "reason": "blocked by: [FORBIDDEN/6/cluster read-only (api)];"},
         "blocked for writes by cluster.blocks.read_only",
         'PUT /_cluster/settings {"persistent": {"cluster.blocks.read_only": null}}'),
    ],
    ids=["missing-index", "no-permission", "alias-without-write-index", "cluster-read-only"],
)
def test_index_wide_errors_the_node_cannot_be_made_to_give(status: int, error: dict, cause: str, fix: str) -> None:
    found = index_wide("books", status, error)
    assert found is not None and cause in found.cause and fix in found.fix
    refused = {"errors": True, "items": [{"index": {"status": status, "error": error}}]}
    client = StandIn(refused, refused, refused)
    sink = _stand_in_sink(client)
    sink.write("books", "1", {"n": 1}, 1)
    with pytest.raises(SinkError, match="3 attempts") as caught:
        sink.flush()
    assert fix in str(caught.value)
    assert len(client.bodies) == 3 and all(b'"index"' in b for b in client.bodies), "no dead letter written"


def test_every_block_on_an_index_is_named_at_once() -> None:
    found = index_wide("books", 403, {
        "type": "cluster_block_exception",
        "reason": "index [books] blocked by: [FORBIDDEN/8/index write (api), TOO_MANY_REQUESTS/12/disk usage "
                  "exceeded flood-stage watermark, index has read-only-allow-delete block];"})
    assert found is not None
    assert found.cause == (
        "index books is blocked for writes by index.blocks.write (index write (api)) and "
        "index.blocks.read_only_allow_delete (disk usage exceeded flood-stage watermark, index has "
        "read-only-allow-delete block)")
    assert '{"index.blocks.write": null}' in found.fix and '{"index.blocks.read_only_allow_delete": null}' in found.fix


@pytest.mark.parametrize(
    "error",
    [
        {"type": "mapper_parsing_exception", "reason": "failed to parse field [pages] of type [long]"},
        {"type": "illegal_argument_exception", "reason": "Document contains at least one immense term"},
        {"type": "strict_dynamic_mapping_exception", "reason": "mapping set to strict"},
    ],
    ids=lambda e: e["type"],
)
def test_errors_about_one_document_are_not_index_wide(error: dict) -> None:
    assert index_wide("books", 400, error) is None


def test_a_whole_request_refused_for_permissions_is_retried_with_the_fix() -> None:
    denied = TransportError(403, "security_exception", {"error": {
        "type": "security_exception", "reason": "no permissions for [indices:data/write/bulk]"}})
    client = StandIn(denied, {"errors": False})
    sink = _stand_in_sink(client)
    sink.write("books", "1", {"n": 1}, 1)
    assert sink.flush().requests == 2


# --- gc_deletes ---------------------------------------------------------------------------------------


def test_gc_deletes_outlives_the_longest_retry_window() -> None:
    defaults = FailurePolicies()  # 5 retries, 0.2 s doubling up to 10 s
    assert retry_window_s(defaults, 30.0) == pytest.approx(6 * 30 + (0.2 + 0.4 + 0.8 + 1.6 + 3.2))
    assert gc_deletes_s(defaults, 30.0) == 433
    patient = FailurePolicies(retries=20, backoff_s=1.0, max_backoff_s=60.0)
    assert gc_deletes_s(patient, 30.0) > retry_window_s(patient, 30.0) * 2
    assert gc_deletes_s(FailurePolicies(retries=0), 1.0) == 62
    assert gc_deletes_s(FailurePolicies(retries=0, backoff_s=0), 0.001) == 61


def test_created_indexes_carry_gc_deletes_unless_the_settings_set_it(opensearch, books: str) -> None:
    sink = make_sink(timeout_s=10)
    sink.ensure_index(books, mapping())
    live = opensearch.indices.get_settings(index=books)[books]["settings"]["index"]
    assert live["gc_deletes"] == f"{gc_deletes_s(sink.policies, 10)}s"

    own = mapping()
    own["settings"]["index"] = {"gc_deletes": "2h"}
    sink.ensure_index(books + "-own", own)
    live = opensearch.indices.get_settings(index=books + "-own")[books + "-own"]["settings"]["index"]
    assert live["gc_deletes"] == "2h"
    assert "gc_deletes" not in own["settings"], "the caller's mapping is not changed"


# --- a failing node ---------------------------------------------------------------------------------


def test_connection_refused_raises_after_the_retries_without_the_password(caplog) -> None:
    sink = make_sink(
        hosts=["http://elastic:hunter2-pw@127.0.0.1:9"], username="elastic", password="hunter2-pw"
    )
    sink.write("books", "1", {"title": "Dune"}, 1)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SinkError) as caught:
        sink.flush()
    message = str(caught.value)
    assert "3 attempts" in message and "127.0.0.1:9" in message
    assert "hunter2-pw" not in message
    assert "hunter2-pw" not in caplog.text


def test_stop_ends_the_backoff_at_once() -> None:
    stop = threading.Event()
    policies = FailurePolicies(retries=5, backoff_s=30.0, max_backoff_s=30.0)
    sink = OpenSearchSink(SinkConfig(type="opensearch", hosts=["http://127.0.0.1:9"]), policies, stop=stop)
    sink.write("books", "1", {}, 1)
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(SinkError, match="stopped"):
        sink.flush()
    assert time.monotonic() - started < 5


class StandIn:
    """A client whose bulk replies (or raises) what the test lines up."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.bodies: list[bytes] = []

    def bulk(self, body: bytes, params: dict) -> dict:
        self.bodies.append(body)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def _stand_in_sink(client: StandIn) -> OpenSearchSink:
    return OpenSearchSink(SinkConfig(type="opensearch", hosts=["http://x:9200"]), FAST, client=client)


def test_items_refused_with_429_are_resent_alone() -> None:
    busy = {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}
    first = {"errors": True, "items": [{"index": {"status": 201}}, {"index": busy}]}
    client = StandIn(first, {"errors": False})
    sink = _stand_in_sink(client)
    sink.write("books", "1", {"n": 1}, 1)
    sink.write("books", "2", {"n": 2}, 1)
    report = sink.flush()
    assert (report.written, report.requests) == (2, 2)
    assert b'"_id":"2"' in client.bodies[1] and b'"_id":"1"' not in client.bodies[1]


def test_a_503_is_retried_and_a_400_is_not() -> None:
    client = StandIn(TransportError(503, "unavailable", {}), {"errors": False})
    sink = _stand_in_sink(client)
    sink.write("books", "1", {"n": 1}, 1)
    assert sink.flush().requests == 2

    client = StandIn(TransportError(400, "illegal_argument_exception", {}))
    sink = _stand_in_sink(client)
    sink.write("books", "1", {"n": 1}, 1)
    with pytest.raises(SinkError, match="illegal_argument_exception"):
        sink.flush()
    assert len(client.bodies) == 1


# --- the client ---------------------------------------------------------------------------------------


def test_client_kwargs_carry_tls_and_basic_auth() -> None:
    config = SinkConfig(
        type="opensearch", hosts=["https://search.example:9200"], username="flusso", password="s3cret",
        verify_certs=False, ca_certs="/etc/ca.pem", timeout_s=12,
    )
    kwargs = client_kwargs(config)
    assert kwargs["http_auth"] == ("flusso", "s3cret")
    assert kwargs["use_ssl"] is True
    assert (kwargs["verify_certs"], kwargs["ca_certs"], kwargs["timeout"]) == (False, "/etc/ca.pem", 12)
    assert kwargs["max_retries"] == 0, "FailurePolicies alone retries"


def test_client_kwargs_without_credentials() -> None:
    kwargs = client_kwargs(SinkConfig(type="opensearch", hosts=["http://127.0.0.1:9200"]))
    assert "http_auth" not in kwargs and "ca_certs" not in kwargs
    assert kwargs["use_ssl"] is False and kwargs["verify_certs"] is True


def test_redact_url_hides_userinfo() -> None:
    assert redact_url("https://admin:pw@search.example:9200/x") == "https://***@search.example:9200/x"
    assert redact_url("http://127.0.0.1:9200") == "http://127.0.0.1:9200"
    assert redact_url("admin:pw@host:9200") == "***@host:9200"
