"""Custom routing and ingest pipelines (issue #16 item 6): `routing: <root column>` on every write
and delete, kept right when the routing value changes; `pipeline:` as the index's default ingest
pipeline, by name or created from its body; what validate says; what `import-pgsync` makes of
PGSync's `routing` and `pipeline`. Real PostgreSQL and OpenSearch, wal and polling capture."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from flusso_engine.cli import main
from flusso_engine.documents import Built

from .e2e import Flusso, flusso, sql, write_config

SCHEMA = """
CREATE TABLE book (id bigint PRIMARY KEY, shop text NOT NULL, title text NOT NULL);
CREATE TABLE review (id bigint PRIMARY KEY, book_id bigint NOT NULL, rating int NOT NULL);
INSERT INTO book VALUES (1, 'north', 'Il Nome della Rosa'), (2, 'south', 'Se una Notte'), (3, 'north', 'Gomorra');
INSERT INTO review VALUES (1, 1, 5), (2, 2, 4);
"""

# OpenSearch picks a shard by the routing value's hash: with many shards, the two values used for the
# moves below land in different shards (checked by `_shards_differ`), where a stale copy would survive
SHARDS = 8


def books(**extra: Any) -> dict[str, Any]:
    return {
        "table": "public.book", "key": ["id"], "routing": "shop",
        "settings": {"number_of_shards": SHARDS, "number_of_replicas": 0},
        "fields": {"title": "title", "shop": "shop"},
        "relations": {"reviews": {"table": "public.review", "type": "one_to_many", "on": {"id": "book_id"},
                                  "fields": {"rating": "rating"}}},
        **extra,
    }


def copies(opensearch, index: str) -> dict[str, list[tuple[str | None, dict]]]:
    """Every copy of every document, across all shards: id -> [(its _routing, its source)]."""
    opensearch.indices.refresh(index=index)
    found = opensearch.search(index=index, body={"size": 1000, "query": {"match_all": {}}})
    out: dict[str, list[tuple[str | None, dict]]] = {}
    for hit in found["hits"]["hits"]:
        source = {k: v for k, v in hit["_source"].items() if k != "_flusso_hash"}
        out.setdefault(hit["_id"], []).append((hit.get("_routing"), source))
    return out


def wait_copies(opensearch, index: str, expected: dict[str, list[tuple[str | None, dict]]],
                timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            actual = copies(opensearch, index)
        except Exception:  # noqa: BLE001 - the index may not exist yet
            actual = {}
        if actual == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{index}: expected {expected}, found {actual}")
        time.sleep(0.3)


def _shards_differ(opensearch, index: str, a: str, b: str) -> bool:
    def shard(routing: str) -> int:
        return opensearch.search_shards(index=index, routing=routing)["shards"][0][0]["shard"]
    return shard(a) != shard(b)


def test_a_build_writes_under_the_rows_routing_and_deletes_under_every_other_it_may_have_been_under() -> None:
    built = Built({"1": "{}", "2": None, "3": None, "4": "{}"}, 100,
                  routing={"1": "b", "3": "c", "4": "x"})  # 2's row is gone; 3's a plugin dropped
    before = {"1": {"a", "b"}, "2": {"a"}}  # 1 moved a -> b; 2 was deleted under a
    assert list(built.writes(before)) == [
        ("1", None, "a"), ("1", "{}", "b"),  # never two copies: the old one goes in the same flush
        ("2", None, "a"),
        ("3", None, "c"),
        ("4", "{}", "x"),
    ]
    unrouted = Built({"1": "{}", "2": None}, 100)
    assert list(unrouted.writes(before)) == [("1", "{}", None), ("2", None, None)]


@pytest.fixture(params=["wal", "polling"])
def routed(request, fresh_db: str, index_prefix: str, tmp_path: Path) -> tuple[str, Path, str]:
    sql(fresh_db, SCHEMA)
    config = write_config(tmp_path / "flusso.yaml", fresh_db, index_prefix, capture=request.param,
                          indexes={"books": books()})
    return fresh_db, config, f"{index_prefix}books"


def test_routed_documents_are_written_moved_and_deleted_under_their_routing(routed, opensearch) -> None:
    dsn, config, index = routed
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        wait_copies(opensearch, index, {
            "1": [("north", {"title": "Il Nome della Rosa", "shop": "north", "reviews": [{"rating": 5}]})],
            "2": [("south", {"title": "Se una Notte", "shop": "south", "reviews": [{"rating": 4}]})],
            "3": [("north", {"title": "Gomorra", "shop": "north", "reviews": []})],
        })
        mapping = opensearch.indices.get_mapping(index=index)
        assert next(iter(mapping.values()))["mappings"]["_routing"] == {"required": True}
        # a read by id needs the routing: found under its own, the index refuses it without
        assert opensearch.get(index=index, id="2", routing="south")["_source"]["title"] == "Se una Notte"
        moved_to = next(s for s in ("east", "west", "centre", "island", "coast", "hills")
                        if _shards_differ(opensearch, index, "north", s))
        sql(dsn,
            "INSERT INTO book VALUES (4, 'west', 'Il Gattopardo')",  # a live insert, under its routing
            "INSERT INTO review VALUES (3, 3, 2)",  # a child's change rebuilds the routed document
            f"UPDATE book SET shop = '{moved_to}' WHERE id = 1",  # noqa: S608 - moves: deleted under north
            "DELETE FROM book WHERE id = 2")  # a root delete: under south, from its old row
        wait_copies(opensearch, index, {
            "1": [(moved_to, {"title": "Il Nome della Rosa", "shop": moved_to, "reviews": [{"rating": 5}]})],
            "3": [("north", {"title": "Gomorra", "shop": "north", "reviews": [{"rating": 2}]})],
            "4": [("west", {"title": "Il Gattopardo", "shop": "west", "reviews": []})],
        })
        # moved back and forth in one transaction, and a routing change with another column's
        sql(dsn, "BEGIN; UPDATE book SET shop = 'north' WHERE id = 4; UPDATE book SET shop = 'west' WHERE id = 4; "
                 "UPDATE book SET shop = 'south', title = 'Gomorra!' WHERE id = 3; COMMIT")
        wait_copies(opensearch, index, {
            "1": [(moved_to, {"title": "Il Nome della Rosa", "shop": moved_to, "reviews": [{"rating": 5}]})],
            "3": [("south", {"title": "Gomorra!", "shop": "south", "reviews": [{"rating": 2}]})],
            "4": [("west", {"title": "Il Gattopardo", "shop": "west", "reviews": []})],
        })
    finally:
        run.stop()


def test_the_root_gets_the_replica_identity_that_sends_the_old_routing(fresh_db, index_prefix, tmp_path) -> None:
    """`shop` is not in book's primary key: only REPLICA IDENTITY FULL sends its old value (polling's
    triggers record it: the move test above passes under both)."""
    sql(fresh_db, SCHEMA)
    config = write_config(tmp_path / "flusso.yaml", fresh_db, index_prefix, indexes={"books": books()})
    done = flusso("validate", config=config)
    assert done.returncode == 0, done.stderr
    assert "public.book needs REPLICA IDENTITY FULL (old rows must carry id, shop)" in done.stdout
    assert flusso("backfill", config=config).returncode == 0
    with psycopg.connect(fresh_db) as conn:
        identity = conn.execute("SELECT relreplident FROM pg_class WHERE oid = 'public.book'::regclass").fetchone()
    assert identity == ("f",)


def test_verify_finds_a_copy_under_a_stale_routing_and_repair_removes_it(fresh_db, index_prefix, tmp_path,
                                                                         opensearch) -> None:
    sql(fresh_db, SCHEMA)
    config = write_config(tmp_path / "flusso.yaml", fresh_db, index_prefix, indexes={"books": books()})
    index = f"{index_prefix}books"
    assert flusso("backfill", config=config).returncode == 0
    assert flusso("verify", config=config).returncode == 0
    stale = next(s for s in ("east", "west", "centre", "island") if _shards_differ(opensearch, index, "north", s))
    target = next(iter(opensearch.indices.get_alias(index=index)))
    source = opensearch.get(index=index, id="1", routing="north")["_source"]
    opensearch.index(index=target, id="1", routing=stale, body=source, refresh=True)  # a copy left behind
    assert len(copies(opensearch, index)["1"]) == 2
    found = flusso("verify", config=config)
    assert found.returncode == 3, found.stdout + found.stderr
    assert "_routing" in found.stdout
    repaired = flusso("verify", "--repair", config=config)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert [r for r, _ in copies(opensearch, index)["1"]] == ["north"]


# --- ingest pipelines ---------------------------------------------------------------------------


def _processors(opensearch) -> set[str]:
    found = opensearch.nodes.info(metric="ingest")
    return {p["type"] for node in found["nodes"].values() for p in node["ingest"]["processors"]}


def _pipeline(opensearch, index_prefix: str) -> tuple[str, dict[str, Any], bool]:
    """A pipeline that lowercases the title and marks the document, when the node has those processors
    (the ingest-common module, which services/opensearch builds in); else one without processors
    (OpenSearch skips it: documents arrive as built, and only the pipeline and the index setting are
    checked). The flag says which."""
    name = f"{index_prefix}shelve"
    if {"lowercase", "set"} <= _processors(opensearch):
        return name, {"description": "flusso test", "processors": [
            {"lowercase": {"field": "title"}}, {"set": {"field": "via", "value": "pipeline"}}]}, True
    return name, {"description": "flusso test", "processors": []}, False


def _ingested(opensearch, name: str) -> int:
    """How many documents went through the pipeline `name` (every node's ingest stats)."""
    stats = opensearch.nodes.stats(metric="ingest")
    return sum(node["ingest"]["pipelines"].get(name, {}).get("count", 0) for node in stats["nodes"].values())


def _through(docs: dict[str, list[tuple[str | None, dict]]], transforms: bool) -> dict[str, Any]:
    """`docs` as the pipeline leaves them."""
    if not transforms:
        return docs
    return {i: [(r, {**d, "title": d["title"].lower(), "via": "pipeline"}) for r, d in found]
            for i, found in docs.items()}


def wait_ingested(opensearch, name: str, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _ingested(opensearch, name) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"{_ingested(opensearch, name)} documents went through {name}, expected {n}")
        time.sleep(0.2)


def test_a_pipeline_from_the_config_runs_in_backfill_and_live(fresh_db, index_prefix, tmp_path, opensearch) -> None:
    name, body, transforms = _pipeline(opensearch, index_prefix)
    sql(fresh_db, SCHEMA)
    config = write_config(tmp_path / "flusso.yaml", fresh_db, index_prefix, capture="polling",
                          indexes={"books": books(pipeline={"name": name, "body": body})})
    index = f"{index_prefix}books"
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        assert opensearch.ingest.get_pipeline(id=name)[name] == body
        settings = next(iter(opensearch.indices.get_settings(index=index).values()))["settings"]["index"]
        assert settings["default_pipeline"] == name
        wait_copies(opensearch, index, _through({
            "1": [("north", {"title": "Il Nome della Rosa", "shop": "north", "reviews": [{"rating": 5}]})],
            "2": [("south", {"title": "Se una Notte", "shop": "south", "reviews": [{"rating": 4}]})],
            "3": [("north", {"title": "Gomorra", "shop": "north", "reviews": []})],
        }, transforms))
        if transforms:
            assert _ingested(opensearch, name) == 3  # the backfill's three documents, through the pipeline
        sql(fresh_db, "UPDATE book SET title = 'GOMORRA Live' WHERE id = 3", "DELETE FROM book WHERE id IN (1, 2)")
        wait_copies(opensearch, index, _through({
            "3": [("north", {"title": "GOMORRA Live", "shop": "north", "reviews": []})],
        }, transforms))
        if transforms:
            wait_ingested(opensearch, name, 4)  # the live write too (deletes take no pipeline)
    finally:
        run.stop()
        opensearch.ingest.delete_pipeline(id=name, ignore=[404])


def test_a_named_pipeline_is_used_as_it_is_and_an_unrouted_index_still_works(fresh_db, index_prefix, tmp_path,
                                                                            opensearch) -> None:
    name, body, transforms = _pipeline(opensearch, index_prefix)
    opensearch.ingest.put_pipeline(id=name, body=body)
    try:
        sql(fresh_db, SCHEMA)
        spec = books(pipeline=name)
        del spec["routing"]
        config = write_config(tmp_path / "flusso.yaml", fresh_db, index_prefix, indexes={"books": spec})
        index = f"{index_prefix}books"
        run = Flusso(config)
        try:
            run.wait_for("live capture started")
            sql(fresh_db, "INSERT INTO book VALUES (9, 'east', 'La Storia')")
            wait_copies(opensearch, index, _through({
                "1": [(None, {"title": "Il Nome della Rosa", "shop": "north", "reviews": [{"rating": 5}]})],
                "2": [(None, {"title": "Se una Notte", "shop": "south", "reviews": [{"rating": 4}]})],
                "3": [(None, {"title": "Gomorra", "shop": "north", "reviews": []})],
                "9": [(None, {"title": "La Storia", "shop": "east", "reviews": []})],
            }, transforms))
            if transforms:
                wait_ingested(opensearch, name, 4)
        finally:
            run.stop()
        assert opensearch.ingest.get_pipeline(id=name)[name] == body  # flusso never changes a named one
    finally:
        opensearch.ingest.delete_pipeline(id=name, ignore=[404])


# --- validation ---------------------------------------------------------------------------------


def test_validate_reports_a_missing_routing_column_and_a_missing_pipeline(fresh_db, index_prefix, tmp_path) -> None:
    sql(fresh_db, SCHEMA)
    config = write_config(tmp_path / "flusso.yaml", fresh_db, index_prefix, indexes={"books": books(routing="shopp")})
    done = flusso("validate", config=config)
    assert done.returncode == 1
    assert (f'indexes.{index_prefix}books.routing: column "shopp" does not exist in public.book '
            '(did you mean "shop"?)') in done.stderr
    config = write_config(tmp_path / "flusso.yaml", fresh_db, index_prefix, indexes={"books": books(routing="title")})
    sql(fresh_db, "ALTER TABLE book ALTER COLUMN title DROP NOT NULL")
    done = flusso("validate", config=config)
    assert done.returncode == 1
    assert (f'indexes.{index_prefix}books.routing: column "title" of public.book may be NULL, and every document '
            "needs a routing value: make it NOT NULL (ALTER TABLE public.book ALTER COLUMN title SET NOT NULL)"
            ) in done.stderr
    missing = f"{index_prefix}nowhere"
    config = write_config(tmp_path / "flusso.yaml", fresh_db, index_prefix, indexes={"books": books(pipeline=missing)})
    done = flusso("validate", config=config)
    assert done.returncode == 1
    assert f'indexes.{index_prefix}books.pipeline: ingest pipeline "{missing}" does not exist in OpenSearch' \
        in done.stderr
    assert f"PUT _ingest/pipeline/{missing}" in done.stderr
    done = flusso("backfill", config=config)  # and nothing runs: no index is created to fail every write
    assert done.returncode == 1 and f'ingest pipeline "{missing}" does not exist' in done.stderr


def test_the_config_refuses_routing_on_a_view_and_a_pipeline_set_twice_or_without_processors(
        fresh_db, index_prefix, tmp_path) -> None:
    view = books(depends_on=[{"table": "public.book", "key": {"id": "id"}}], pipeline="shelve")
    view["settings"]["default_pipeline"] = "other"
    config = write_config(tmp_path / "flusso.yaml", fresh_db, index_prefix, indexes={"books": view})
    done = flusso("validate", config=config)
    assert done.returncode == 1
    assert f"indexes.{index_prefix}books.routing: routing is not supported on a view root" in done.stderr
    assert f"indexes.{index_prefix}books.pipeline: settings sets default_pipeline too" in done.stderr
    config = write_config(tmp_path / "flusso.yaml", fresh_db, index_prefix,
                          indexes={"books": books(pipeline={"name": "shelve", "body": {}})})
    done = flusso("validate", config=config)
    assert done.returncode == 1
    assert f"indexes.{index_prefix}books.pipeline.body: has no processors list" in done.stderr


# --- import-pgsync ------------------------------------------------------------------------------


def test_import_pgsync_maps_routing_and_pipeline(fresh_db, index_prefix, tmp_path, monkeypatch, capsys,
                                                 opensearch) -> None:
    sql(fresh_db, SCHEMA)
    name, body, _ = _pipeline(opensearch, index_prefix)
    database = psycopg.conninfo.conninfo_to_dict(fresh_db)["dbname"]
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps([{
        "database": database, "index": f"{index_prefix}books", "routing": "shop", "pipeline": name,
        "nodes": {"table": "book", "columns": ["title", "shop"]},
    }]))
    info = psycopg.conninfo.conninfo_to_dict(fresh_db)
    monkeypatch.delenv("PG_URL", raising=False)
    for var, value in (("PG_HOST", info.get("host", "127.0.0.1")), ("PG_PORT", info.get("port", 5432)),
                       ("PG_USER", info.get("user", "postgres")), ("PG_PASSWORD", info.get("password", "")),
                       ("ELASTICSEARCH_URL", os.environ.get("FLUSSO_TEST_OPENSEARCH_URL", "http://127.0.0.1:9200"))):
        monkeypatch.setenv(var, str(value))
    out = tmp_path / "flusso.yaml"
    assert main(["import-pgsync", str(schema), "-o", str(out)]) == 0
    capsys.readouterr()
    spec = yaml.safe_load(out.read_text())["indexes"][f"{index_prefix}books"]
    assert spec["routing"] == "shop" and spec["pipeline"] == name
    assert main(["validate", "-c", str(out)]) == 1  # PGSync's pipeline must exist, as PGSync needs it to
    assert f'ingest pipeline "{name}" does not exist' in capsys.readouterr().err
    opensearch.ingest.put_pipeline(id=name, body=body)
    try:
        assert main(["validate", "-c", str(out)]) == 0, capsys.readouterr()
    finally:
        opensearch.ingest.delete_pipeline(id=name, ignore=[404])
