"""Generations' pure parts: names, the state document, the lock's liveness, the worker's replay when
a generation joins the write set. Against the real services: tests/test_reseed.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from flusso_engine.config import parse_config
from flusso_engine.error import ConfigError
from flusso_engine.generations import HOST, LEASE_S, Building, IndexState, generation_of, physical
from flusso_engine.sinks import FlushReport, alias_of

from .test_pipeline import Builder, Recorder, batch


def test_physical_names_and_back() -> None:
    assert physical("books", 3) == "books__g3"
    assert generation_of("books", "books__g12") == 12
    assert generation_of("books", "books") is None
    assert generation_of("books", "books__gx") is None
    assert generation_of("books", "bookshelf__g1") is None
    assert alias_of("books__g7") == "books"
    assert alias_of("books") == "books"
    assert alias_of("my__gadgets") == "my__gadgets"


def test_the_state_document_round_trips() -> None:
    state = IndexState(alias="books", serving="books__g2", serving_hash="h2", previous="books__g1",
                       building=Building(name="books__g3", generation=3, definition_hash="h3", owner="o",
                                         dual_from=42, documents=10, rows=20, frozen=True),
                       next_generation=4)
    again = IndexState.from_doc("books", state.as_doc())
    assert again == state
    assert again.names() == {"books__g1", "books__g2", "books__g3"}
    assert IndexState.from_doc("books", {"serving": "books"}).names() == set(), "a concrete index is no generation"


def test_a_rebuild_is_alive_while_its_process_runs_and_its_heartbeat_is_fresh() -> None:
    assert Building(name="b", generation=1, definition_hash="h", owner="o").alive()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = Building(name="b", generation=1, definition_hash="h", owner="o", pid=int(gone.stdout))
    assert not dead.alive(), "a pid that is gone on this host is dead at once"
    stale = Building(name="b", generation=1, definition_hash="h", owner="o", heartbeat=time.time() - LEASE_S - 1)
    assert not stale.alive()
    elsewhere = Building(name="b", generation=1, definition_hash="h", owner="o", host=HOST + "-other", pid=1)
    assert elsewhere.alive(), "another host's rebuild is judged by its heartbeat alone"
    assert os.getpid() == Building(name="b", generation=1, definition_hash="h", owner="o").pid


def test_an_index_named_like_a_generation_is_refused(tmp_path) -> None:
    raw = {"source": {"dsn": "postgresql://x@localhost/db"}, "sink": {"type": "stdout"},
           "indexes": {"books__g1": {"table": "book", "key": ["id"], "fields": {"id": "id"}}}}
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert "ends like one of flusso's physical generations" in str(err.value)
    assert '"books_g1"' in str(err.value)


class Routing:
    """The worker's view of routing.Routing: targets per index, and an epoch that grows."""

    def __init__(self) -> None:
        self.epoch = 0
        self.names = ("books__g1",)
        self.refreshed = 0
        self.on_refresh = None

    def targets(self, index: str) -> tuple[str, ...]:
        return self.names

    def refresh(self) -> None:
        self.refreshed += 1
        if self.on_refresh is not None:
            self.on_refresh()
            self.on_refresh = None


class Sink:
    def __init__(self) -> None:
        self.writes: list[tuple[str, str]] = []

    def write(self, index: str, doc_id: str, doc: object, version: int) -> None:
        self.writes.append((index, doc_id))

    def flush(self) -> FlushReport:
        return FlushReport(requests=1)


def test_a_batch_built_before_a_generation_joined_is_built_again_before_its_ack() -> None:
    from flusso_engine.pipeline import Worker

    routing, sink = Routing(), Sink()
    w = Worker(Builder(), sink, max_changes=10, observer=Recorder(), routing=routing)
    w.handle(batch(0, 3, position=100))
    assert sink.writes == [("books__g1", "0"), ("books__g1", "1"), ("books__g1", "2")]

    def joined() -> None:  # a rebuild registered g2 after the batch was built
        routing.names = ("books__g1", "books__g2")
        routing.epoch += 1

    routing.on_refresh = joined
    done = w.done(wait=True)
    assert [s.ack for s in done] == [100], "acknowledged once, after the replay"
    assert ("books__g2", "0") in sink.writes and ("books__g2", "2") in sink.writes
    assert routing.refreshed >= 1
    w.close()


def test_a_batch_is_not_built_again_when_the_write_set_did_not_grow() -> None:
    from flusso_engine.pipeline import Worker

    routing, sink = Routing(), Sink()
    w = Worker(Builder(), sink, max_changes=10, observer=Recorder(), routing=routing)
    w.handle(batch(0, 2, position=100))
    assert [s.ack for s in w.done(wait=True)] == [100]
    assert len(sink.writes) == 2
    w.close()
