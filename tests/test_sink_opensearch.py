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
from flusso_engine.sinks.opensearch import DEAD_LETTER_SUFFIX, OpenSearchSink, client_kwargs, redact_url

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


def make_sink(item_rejection: str = "dead_letter", **config: Any) -> OpenSearchSink:
    config = {"type": "opensearch", "hosts": [OPENSEARCH_URL], **config}
    policies = FailurePolicies(item_rejection=item_rejection, retries=2, backoff_s=0.01, max_backoff_s=0.05)
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
