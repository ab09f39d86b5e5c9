"""`flusso verify` (issue #13) against the real services: drift injected behind flusso's back is found
exactly, printed, written to the report and repaired; live writers never read as drift; a repair
beside live capture never leaves an older document over a newer one."""

from __future__ import annotations

import csv
import json
import re
import threading
import time
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from flusso_engine.config import load_config
from flusso_engine.documents.mapping import FINGERPRINT
from flusso_engine.engine import Engine

from .e2e import Flusso, flusso, generate, index_docs, sql, wait_converged, write_config


@pytest.fixture
def bookstore(bookstore_db: str, index_prefix: str, tmp_path: Path) -> tuple[str, Path]:
    generate(bookstore_db, books=300)
    return bookstore_db, write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix)


def _inject_drift(opensearch, dsn: str, index: str, slot: str) -> dict[str, str]:
    """A deleted document; one rewritten by someone else with a wrong nested child (and so without
    flusso's fingerprint); an extra document; and, while flusso was stopped with its slot dropped, a
    row inserted and a child row changed (a change that never reached its document). Returns the
    expected kind of each id."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        reviewed = [str(r[0]) for r in conn.execute(
            "SELECT DISTINCT book_id FROM review ORDER BY book_id LIMIT 2").fetchall()]
    deleted = next(i for i in ("1", "2", "3") if i not in reviewed)
    opensearch.delete(index=index, id=deleted, refresh=True)
    doc = opensearch.get(index=index, id=reviewed[0])["_source"]
    doc.pop(FINGERPRINT)
    doc["reviews"][0]["rating"] = 0 if doc["reviews"][0]["rating"] != 0 else 1
    opensearch.index(index=index, id=reviewed[0], body=doc, refresh=True)  # internal version: one above
    opensearch.index(index=index, id="999999", body={"title": "nobody's row"}, refresh=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
        conn.execute("INSERT INTO book (id, isbn, title, publisher_id) VALUES (100001, 'x-100001', 'while stopped', 1)")
        conn.execute("UPDATE review SET body = 'missed' WHERE id = (SELECT min(id) FROM review WHERE book_id = %s)",
                     [int(reviewed[1])])
    return {deleted: "missing", reviewed[0]: "stale", reviewed[1]: "stale", "999999": "extra",
            "100001": "missing"}


def test_injected_drift_is_found_exactly_reported_and_repaired(bookstore, opensearch, tmp_path) -> None:
    dsn, config = bookstore
    loaded = load_config(config)
    index = next(iter(loaded.indexes))
    assert flusso("run", "--no-live", config=config).returncode == 0
    assert flusso("verify", config=config).returncode == 0, "a fresh backfill has no drift"
    expected = _inject_drift(opensearch, dsn, index, loaded.source.slot)

    report = tmp_path / "drift.csv"
    found = flusso("verify", "--report", str(report), config=config)
    assert found.returncode == 3, found.stdout + found.stderr
    with report.open() as f:
        rows = list(csv.DictReader(f))
    assert {r["id"]: r["kind"] for r in rows} == expected
    fields = {r["id"]: r["fields"] for r in rows if r["kind"] == "stale"}
    stale = [i for i, k in expected.items() if k == "stale"]
    assert fields[stale[0]] == "reviews[0].rating"
    assert re.fullmatch(r"reviews\[\d+\]\.body", fields[stale[1]])
    for doc_id, kind in expected.items():
        assert f"{kind} {doc_id}" in found.stdout
    assert "reviews[0].rating" in found.stdout

    for suffix in (".parquet", ".html"):
        other = tmp_path / f"drift{suffix}"
        assert flusso("verify", "--report", str(other), config=config).returncode == 3
        if suffix == ".parquet":
            assert dict(zip(*pd.read_parquet(other)[["id", "kind"]].T.values, strict=True)) == expected
        else:
            assert all(i in other.read_text() for i in expected)
    sampled = flusso("verify", "--sample", "50", config=config)
    assert sampled.returncode in (0, 3) and "sample 50" in sampled.stdout

    repaired = flusso("verify", "--repair", config=config)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "repaired: 4 written, 1 deleted" in repaired.stdout
    again = flusso("verify", "--report", str(report), config=config)
    assert again.returncode == 0, again.stdout
    assert list(csv.DictReader(report.open())) == []
    docs = index_docs(opensearch, index, fingerprints=True)
    assert "999999" not in docs and docs["100001"]["title"] == "while stopped"
    assert all(len(d[FINGERPRINT]) == 32 for d in docs.values())


def test_verify_refuses_an_index_without_fingerprints_and_an_unknown_report(bookstore, opensearch) -> None:
    dsn, config = bookstore
    missing = flusso("verify", config=config)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    bad = flusso("verify", "--report", "drift.xlsx", config=config)
    assert bad.returncode == 1 and ".csv, .parquet, .html" in bad.stderr
    # an index built before fingerprints existed (another definition hash): refused, and a reseed adds them
    index = next(iter(load_config(config).indexes))
    assert flusso("run", "--no-live", config=config).returncode == 0
    (physical,) = opensearch.indices.get_alias(name=index)
    meta = opensearch.indices.get_mapping(index=physical)[physical]["mappings"]["_meta"]
    meta["flusso"]["definition_hash"] = "0" * 64
    opensearch.indices.put_mapping(index=physical, body={"_meta": meta})
    older = flusso("verify", config=config)
    assert older.returncode == 1 and "another definition" in older.stderr
    assert flusso("run", "--no-live", config=config).returncode == 0
    assert flusso("verify", config=config).returncode == 0
    docs = index_docs(opensearch, index, fingerprints=True)
    assert len(docs) == 300 and all(len(d[FINGERPRINT]) == 32 for d in docs.values())


def _writers(dsn: str, stop: threading.Event, errors: list[BaseException], done: list[int]) -> None:
    """Random DML on the root and on children two levels down until `stop`."""
    import random

    rng = random.Random(3)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            n = 200000
            while not stop.is_set():
                book = rng.randint(1, 300)
                choice = rng.random()
                if choice < 0.3:
                    conn.execute("UPDATE book SET title = title || '.' WHERE id = %s", [book])
                elif choice < 0.5:
                    conn.execute("UPDATE review SET rating = 1 + (rating %% 5) WHERE book_id = %s", [book])
                elif choice < 0.6:
                    conn.execute("UPDATE reader SET name = name || '.' WHERE id = (SELECT reader_id FROM "
                                 "review WHERE book_id = %s LIMIT 1)", [book])
                elif choice < 0.8:
                    n += 1
                    conn.execute("INSERT INTO book (id, isbn, title, publisher_id) VALUES (%s, %s, 'w', 1)",
                                 [n, f"w-{n}"])
                else:
                    conn.execute("DELETE FROM book WHERE id = (SELECT max(id) FROM book WHERE id > 200000)")
                done[0] += 1
                time.sleep(0.002)
    except BaseException as err:  # noqa: BLE001 - reported by the test
        errors.append(err)


def test_no_drift_reported_while_live_writers_run(bookstore, opensearch) -> None:
    dsn, config = bookstore
    loaded = load_config(config)
    run = Flusso(config)
    stop, errors, done = threading.Event(), [], [0]
    writer = threading.Thread(target=_writers, args=(dsn, stop, errors, done))
    try:
        run.wait_for("live capture started")
        writer.start()
        time.sleep(1)
        with Engine(loaded).open() as engine:
            for _ in range(3):
                before = done[0]
                checks = engine.verify()
                assert done[0] - before > 20, "writers ran during the verify"
                assert [(f.id, f.kind, f.fields) for c in checks for f in c.findings] == []
                assert checks[0].documents > 300 - 50 and checks[0].rows > 300 - 50
            sampled = engine.verify(sample=40)
            assert [f.id for c in sampled for f in c.findings] == []
    finally:
        stop.set()
        if writer.is_alive():
            writer.join()
        assert not errors, errors
    try:
        wait_converged(opensearch, config)
    finally:
        run.stop()


def test_repair_beside_live_capture_never_writes_older_over_newer(bookstore, opensearch) -> None:
    dsn, config = bookstore
    loaded = load_config(config)
    index = next(iter(loaded.indexes))
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        opensearch.delete(index=index, id="5", refresh=True)
        with Engine(loaded).open() as engine:
            checks = engine.verify()
            assert [(f.id, f.kind) for f in checks[0].findings] == [("5", "missing")]
            position = checks[0].findings[0].built_position
            # a newer write by live capture lands before the repair: the repair must not replace it
            sql(dsn, "UPDATE book SET title = 'newer than the verify' WHERE id = 5")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                got = opensearch.get(index=index, id="5", ignore=[404])
                if got.get("found"):
                    break
                time.sleep(0.1)
            assert got["_source"]["title"] == "newer than the verify" and got["_version"] > position
            done = engine.repair(checks)
            assert [f.id for c in done.remaining for f in c.findings] == []
        after = opensearch.get(index=index, id="5")
        assert after["_source"]["title"] == "newer than the verify"
        assert after["_version"] >= got["_version"]
        wait_converged(opensearch, config)
    finally:
        run.stop()
    assert json.dumps(after["_source"])  # still a document
