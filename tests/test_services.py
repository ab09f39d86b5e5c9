"""The real services that every other test relies on: logical decoding and an OpenSearch 2.19 node."""

from __future__ import annotations

import psycopg
from opensearchpy import helpers


def test_logical_slot_with_pgoutput_sees_committed_rows(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("CREATE PUBLICATION p FOR TABLE t")
        conn.execute("SELECT pg_create_logical_replication_slot('s_services', 'pgoutput')")
        conn.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        rows = conn.execute(
            "SELECT lsn, data FROM pg_logical_slot_peek_binary_changes("
            "'s_services', NULL, NULL, 'proto_version', '1', 'publication_names', 'p')"
        ).fetchall()
    kinds = [bytes(data)[:1] for _, data in rows]
    # Begin, Relation, two Inserts, Commit: the binary protocol that flusso decodes
    assert kinds == [b"B", b"R", b"I", b"I", b"C"]
    assert b"one" in bytes(rows[2][1]) and b"two" in bytes(rows[3][1])


def test_wal_level_is_logical(admin_dsn: str) -> None:
    with psycopg.connect(admin_dsn) as conn:
        assert conn.execute("SHOW wal_level").fetchone()[0] == "logical"


def test_opensearch_is_version_2_19(opensearch) -> None:
    info = opensearch.info()
    assert info["version"]["number"].startswith("2.19.")
    assert opensearch.cluster.health()["status"] in ("green", "yellow")


def test_explicit_mapping_bulk_and_search(opensearch, index_prefix: str) -> None:
    index = f"{index_prefix}books"
    opensearch.indices.create(
        index=index,
        body={
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": {
                "dynamic": False,
                "properties": {
                    "title": {"type": "search_as_you_type"},
                    "isbn": {"type": "keyword"},
                    "pages": {"type": "long"},
                },
            },
        },
    )
    docs = [
        {"title": "The Name of the Rose", "isbn": "978-0151446476", "pages": 512},
        {"title": "Foucault's Pendulum", "isbn": "978-0151322305", "pages": 623},
        {"title": "Baudolino", "isbn": "978-0151006854", "pages": 521},
    ]
    ok, errors = helpers.bulk(
        opensearch, ({"_index": index, "_id": str(i), **d} for i, d in enumerate(docs)), refresh=True
    )
    assert (ok, errors) == (3, [])
    hits = opensearch.search(
        index=index,
        body={"query": {"multi_match": {"query": "name of th", "type": "bool_prefix",
                                        "fields": ["title", "title._2gram", "title._3gram"]}}},
    )["hits"]["hits"]
    assert hits[0]["_source"]["isbn"] == "978-0151446476"
    mapping = opensearch.indices.get_mapping(index=index)[index]["mappings"]
    assert mapping["properties"]["title"]["type"] == "search_as_you_type"
