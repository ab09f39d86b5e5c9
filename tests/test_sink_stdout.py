"""The stdout sink: JSON lines on flush, seeded only within the process."""

from __future__ import annotations

import io
import json

from flusso_engine.sinks import SeedMarker
from flusso_engine.sinks.stdout import StdoutSink

MAPPING = {"mappings": {"dynamic": False, "_meta": {"flusso": {"definition_hash": "h1"}}, "properties": {}}}


def test_flush_writes_one_json_line_per_action() -> None:
    out = io.StringIO()
    sink = StdoutSink(out)
    sink.ensure_index("books", MAPPING)
    sink.write("books", "1", {"title": "Dune"}, 10)
    sink.write("books", "2", None, 11)
    assert out.getvalue() == "", "write only buffers"
    report = sink.flush()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [
        {"index": "books", "id": "1", "op": "index", "version": 10, "doc": {"title": "Dune"}},
        {"index": "books", "id": "2", "op": "delete", "version": 11, "doc": None},
    ]
    assert (report.written, report.deleted, report.requests) == (1, 1, 1)
    assert sink.flush().requests == 0, "an empty buffer sends nothing"


def test_a_document_written_twice_before_a_flush_is_written_once_at_its_highest_version() -> None:
    out = io.StringIO()
    sink = StdoutSink(out)
    sink.write("books", "1", {"title": "old"}, 1)
    sink.write("books", "1", {"title": "new"}, 3)
    sink.write("books", "1", {"title": "older"}, 2)
    sink.flush()
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["doc"] == {"title": "new"}


def test_count_follows_writes_and_deletes() -> None:
    sink = StdoutSink(io.StringIO())
    sink.write("books", "1", {}, 1)
    sink.write("books", "2", {}, 1)
    sink.flush()
    sink.write("books", "1", None, 2)
    sink.flush()
    assert sink.count("books") == 1
    assert sink.count("authors") == 0


def test_seeded_only_once_marked_in_this_process() -> None:
    sink = StdoutSink(io.StringIO())
    marker = SeedMarker("h1", "slot", "sys", 42)
    sink.ensure_index("books", MAPPING)
    assert not sink.is_seeded("books", marker)
    sink.mark_seeded("books", marker)
    assert sink.is_seeded("books", marker)
    assert not sink.is_seeded("books", SeedMarker("h2", "slot", "sys"))
    assert sink.seed_marker("books") == marker
    assert sink.definition_hash("books") == "h1"
    sink.mark_unseeded("books")
    assert not sink.is_seeded("books", marker)
    assert not StdoutSink(io.StringIO()).seed_marker("books"), "nothing survives the process"


def test_recreate_forgets_documents_and_marker() -> None:
    sink = StdoutSink(io.StringIO())
    sink.ensure_index("books", MAPPING)
    sink.write("books", "1", {}, 1)
    sink.flush()
    sink.mark_seeded("books", SeedMarker("h1", "slot", "sys"))
    sink.recreate("books", MAPPING)
    assert sink.count("books") == 0
    assert sink.seed_marker("books") is None
