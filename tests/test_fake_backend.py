"""A capture backend added here, registered under a name of its own, runs through the Engine with no
edit outside this module: the loop reaches its backends through their protocols and the registry.

The fake yields scripted changes (as a slot would: row changes, each transaction closed by a commit
marker) over the real bookstore rows; the real SQL builder builds the documents and the real
OpenSearch sink writes them, so the index shows what the script did.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from flusso_engine import registry
from flusso_engine.capture import Repairs
from flusso_engine.changes import Change, Position, commit
from flusso_engine.config import load_config, split_table
from flusso_engine.engine import Engine

from .e2e import generate, index_docs, wait_converged, write_config


class ScriptedCapture:
    """A ChangeCapture over a script: each item is one transaction's row changes."""

    def __init__(self, dsn: str, script: Sequence[Sequence[Change]], stop: threading.Event) -> None:
        self._dsn = dsn
        self._script = script
        self._stop = stop
        self._position: Position = 1000
        self.repairs = Repairs()
        self.verify_slot = None
        self.acked: list[Position] = []
        self.commits: list[Position] = []  # the end positions of the transactions handed out
        self.streamed = threading.Event()

    def prepare(self, tables: Sequence[str]) -> bool:
        return True  # a new source every time: every index is backfilled

    def snapshot(self, table: str, key: Sequence[str]) -> Iterator[Change]:
        schema, name = split_table(table)
        query = sql.SQL("SELECT {} FROM {} ORDER BY 1").format(
            sql.SQL(", ").join(sql.SQL("concat({})").format(sql.Identifier(k)) for k in key),
            sql.Identifier(schema, name))
        with psycopg.connect(self._dsn) as conn:
            for row in conn.execute(query):
                yield Change(table, "insert", new=dict(zip(key, row, strict=True)))

    def stream(self) -> Iterator[Change]:
        for changes in self._script:
            self._position += 100
            for change in changes:
                yield Change(change.table, change.op, new=change.new, old=change.old, position=self._position)
            self.commits.append(self._position + 10)
            yield commit(self._position + 10)
        self.streamed.set()
        while not self._stop.wait(0.05):
            pass

    def ack(self, position: Position) -> None:
        self.acked.append(position)

    def set_limit(self, position: Position) -> None:
        pass

    @property
    def idle(self) -> Position:
        return 0

    def current_position(self) -> Position:
        self._position += 1
        return self._position

    def timeline(self) -> int:
        return 1

    def slot_info(self) -> None:
        return None

    def health(self, warn_lag: int) -> None:
        return None

    def table_fingerprints(self, tables: Sequence[str]) -> dict:
        return {t: [0] for t in tables}

    def drop_slot(self) -> None:
        pass

    def teardown(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[dict]:
    made: dict = {}

    def create(context: registry.Context) -> ScriptedCapture:
        made["capture"] = ScriptedCapture(context.dsn, made["script"], context.capture_stop)
        return made["capture"]

    registry.register("capture", "scripted", create)
    try:
        yield made
    finally:
        registry.unregister("capture", "scripted")


def test_a_backend_registered_in_a_test_runs_through_the_engine(scripted: dict, bookstore_db: str,
                                                                index_prefix: str, tmp_path: Path,
                                                                opensearch) -> None:
    generate(bookstore_db, books=30)
    path = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix,
                        batch={"max_changes": 50, "max_delay_ms": 50})
    path.write_text(path.read_text().replace("capture: wal", "capture: scripted"))
    config = load_config(path)
    assert config.source.capture == "scripted"
    with psycopg.connect(bookstore_db, autocommit=True) as conn:
        conn.execute("UPDATE book SET title = 'scripted' WHERE id IN (1, 2)")
        conn.execute("DELETE FROM book_author WHERE book_id = 3")
        conn.execute("DELETE FROM review WHERE book_id = 3")
        conn.execute("DELETE FROM book WHERE id = 3")
    # what a slot would have sent for those two transactions
    scripted["script"] = [
        [Change("public.book", "update", new={"id": "1"}), Change("public.book", "update", new={"id": "2"})],
        [Change("public.book", "delete", old={"id": "3"})],
    ]
    stop = threading.Event()
    engine = Engine(config, stop=stop).open()
    worker = threading.Thread(target=engine.run, daemon=True)
    try:
        worker.start()
        deadline = time.monotonic() + 60
        while "capture" not in scripted or not scripted["capture"].streamed.is_set():
            assert time.monotonic() < deadline, "the scripted capture was never streamed"
            time.sleep(0.1)
        index = next(iter(config.indexes))
        docs = wait_converged(opensearch, path, index)
        assert docs["1"]["title"] == "scripted" and "3" not in docs
    finally:
        stop.set()
        worker.join(30)
        engine.close()
    capture = scripted["capture"]
    assert capture.acked[-1] == capture.commits[-1]  # the last transaction, acknowledged once flushed
    assert len(index_docs(opensearch, index)) == 29
