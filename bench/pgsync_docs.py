"""The bookstore's documents on PGSync's side: an index seeded as after its initial sync (with the
`_meta` its change handlers search), and its documents checked against flusso's fresh build."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from opensearchpy import OpenSearch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import built_documents, check_documents, write_config  # noqa: E402


def build_meta(dsn: str, ids: list[int]) -> dict[int, dict]:
    """PGSync's private `_meta` of each book (the keys of every row its document is made of, per table, as
    its own documents carry them): its change handlers search it to find the documents a child row is in."""
    query = """
        SELECT b.id, b.publisher_id,
               (SELECT array_agg(d.book_id) FROM book_detail d WHERE d.book_id = b.id),
               (SELECT array_agg(DISTINCT ba.author_id) FROM book_author ba WHERE ba.book_id = b.id),
               (SELECT array_agg(r.id ORDER BY r.id) FROM review r WHERE r.book_id = b.id),
               (SELECT array_agg(DISTINCT r.reader_id) FROM review r
                 WHERE r.book_id = b.id AND r.reader_id IS NOT NULL),
               (SELECT array_agg(DISTINCT rt.review_id) FROM review r JOIN review_tag rt ON rt.review_id = r.id
                 WHERE r.book_id = b.id),
               (SELECT array_agg(DISTINCT rt.tag_id) FROM review r JOIN review_tag rt ON rt.review_id = r.id
                 WHERE r.book_id = b.id)
          FROM book b WHERE b.id = ANY(%s)"""
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for book, publisher, detail, authors, reviews, readers, rt_reviews, tags in conn.execute(query, (ids,)):
            meta: dict[str, dict[str, list]] = {}
            if publisher is not None:
                meta["publisher"] = {"id": [publisher]}
            if detail:
                meta["book_detail"] = {"book_id": detail}
            if authors:
                meta["author"] = {"id": authors}
                meta["book_author"] = {"author_id": authors, "book_id": [book]}
            if reviews:
                meta["review"] = {"id": reviews}
            if readers:
                meta["reader"] = {"id": readers}
            if tags:
                meta["tag"] = {"id": tags}
                meta["review_tag"] = {"review_id": rt_reviews, "tag_id": tags}
            meta["book"] = {"id": [str(book)]}
            out[book] = meta
    return out


def seed_documents(dsn: str, opensearch: str, index: str, client: OpenSearch, batch: int = 1000) -> dict[str, Any]:
    """Every book's document, as after an initial sync, without PGSync's quadratic initial-sync query:
    flusso's SQL builder output (the same fields and nesting as PGSync's documents) plus PGSync's
    `_meta`, bulk-indexed into the index PGSync created (its mapping). PGSync rebuilds a document
    whole from the rows whenever a change touches it."""
    import raw  # flusso's builder: imported here so that the backfill side does not need it
    from opensearchpy import helpers

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="flusso-bench-pgsync-seed-"))
    config, flusso_index = write_config(workdir / "flusso.yaml", dsn, opensearch, "bench_pgsync_seed")
    docs, _, _ = raw.precompute(config, flusso_index, batch)
    metas = build_meta(dsn, [int(k) for k in docs])

    def actions():
        for key, text in docs.items():
            doc = json.loads(text)
            doc["_meta"] = metas[int(key)]
            yield {"_index": index, "_id": key, "_source": doc}

    errors = [info for ok, info in helpers.streaming_bulk(client, actions(), chunk_size=1000, raise_on_error=False)
              if not ok]
    client.indices.refresh(index=index)
    count = client.count(index=index)["count"]
    shutil.rmtree(workdir, ignore_errors=True)
    if errors:
        raise RuntimeError(f"seeding {index}: {len(errors)} errors, first {errors[0]}")
    return {"documents": count, "seconds": round(time.monotonic() - started, 2)}


def normalized(doc: Any) -> Any:
    """A document compared across the two builders: no `_meta`, `null` and `[]` the same, lists sorted."""
    if isinstance(doc, dict):
        return {k: normalized(v) for k, v in doc.items() if k != "_meta" and v is not None and v != []}
    if isinstance(doc, list):
        return sorted((normalized(v) for v in doc), key=lambda v: json.dumps(v, sort_keys=True, default=str))
    return doc


def check_sample(dsn: str, opensearch: str, index: str, client: OpenSearch, ids: list[int]) -> dict[str, Any]:
    """Documents touched by the run, as PGSync indexed them, against a fresh build from the database
    (flusso's builder, compared with `normalized`)."""
    if not ids:
        return {"checked": 0, "differing": 0, "first_differing": []}
    workdir = Path(tempfile.mkdtemp(prefix="flusso-bench-pgsync-check-"))
    config_path, flusso_index = write_config(workdir / "flusso.yaml", dsn, opensearch, "bench_pgsync_check")
    expected = built_documents(config_path, flusso_index, ids)
    shutil.rmtree(workdir, ignore_errors=True)
    return check_documents(expected, client, index, ids, normalized)
