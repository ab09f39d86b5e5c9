"""The `raw` baseline: the sink's limit on this node for the bookstore's final documents.

    python bench/raw.py [--books 10000] [--chunks 500,1000,2000] [--threads 1,2]

Precomputes every book's final document into memory with flusso's own SQL builder (raw JSON text,
exactly what flusso writes), then for each (chunk size, thread count) recreates the index with
flusso's mapping and bulk-loads it with opensearch-py's `parallel_bulk` (threads > 1) or
`streaming_bulk` (1 thread); wall time from the index's creation until a refreshed count shows every
document. The best combination is the `raw` figure. Importable: `run_raw(dsn, opensearch, index, ...)`.

The index is built the way a reseed builds a generation (issue #12): created with
`refresh_interval: -1` and `number_of_replicas: 0` (`BUILD_SETTINGS`), bulk-loaded, then given
back the settings the index configures (a setting it leaves out goes back to OpenSearch's default)
and refreshed before the count. Both sides of the reseed/raw ratio pay for the same final refresh
and neither refreshes while loading, so the ratio measures flusso, not a settings difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from opensearchpy import OpenSearch, helpers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import harness  # noqa: E402

from flusso_engine.documents.mapping import index_mapping  # noqa: E402
from flusso_engine.documents.sql import SqlDocumentBuilder  # noqa: E402


def precompute(config_path: Path, index: str, batch: int = 1000) -> tuple[dict[str, str], dict, float]:
    """Every document as the JSON text flusso writes, the index body, and the seconds it took."""
    started = time.perf_counter()
    config, catalog, dsn = harness.load_parts(config_path)
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = [str(r[0]) for r in conn.execute("SELECT id FROM book ORDER BY id")]
    docs: dict[str, str] = {}
    with SqlDocumentBuilder(config, catalog, dsn, raw_json=True) as builder:
        for i in range(0, len(ids), batch):
            built = builder.build(index, ids[i:i + batch]).docs
            docs.update({str(k): v for k, v in built.items() if v is not None})
    body = index_mapping(config.indexes[index], catalog)
    body["mappings"].pop("_meta", None)
    return docs, body, time.perf_counter() - started


BUILD_SETTINGS = {"refresh_interval": "-1", "number_of_replicas": 0}


def _configured(settings: dict, name: str) -> Any:
    """A setting however the index's `settings` write it (`name`, `index.name`, `{index: {name}}`);
    None when they leave it out."""
    nested = settings.get("index") if isinstance(settings.get("index"), dict) else {}
    return next((v for v in (settings.get(name), settings.get(f"index.{name}"), nested.get(name)) if v is not None),
                None)


def build_body(body: dict) -> tuple[dict, dict]:
    """The create body with `BUILD_SETTINGS` in place of what `body` configures for them, and the
    settings that restore the configured values afterwards (None: back to OpenSearch's default)."""
    settings = {k: v for k, v in body.get("settings", {}).items()
                if k not in BUILD_SETTINGS and k.removeprefix("index.") not in BUILD_SETTINGS}
    nested = settings.get("index")
    if isinstance(nested, dict):
        settings["index"] = {k: v for k, v in nested.items() if k not in BUILD_SETTINGS}
    restore = {f"index.{k}": _configured(body.get("settings", {}), k) for k in BUILD_SETTINGS}
    return {**body, "settings": {**settings, **{f"index.{k}": v for k, v in BUILD_SETTINGS.items()}}}, restore


def load_once(client: OpenSearch, index: str, body: dict, docs: dict[str, str], chunk: int,
              threads: int) -> dict[str, Any]:
    client.indices.delete(index=index, ignore=404)
    build, restore = build_body(body)
    cpu_before = harness.cpu_snapshot()
    started = time.monotonic()
    client.indices.create(index=index, body=build)
    actions = ({"_index": index, "_id": k, "_source": v} for k, v in docs.items())
    errors = 0
    if threads > 1:
        for ok, _ in helpers.parallel_bulk(client, actions, chunk_size=chunk, thread_count=threads,
                                           queue_size=threads, raise_on_error=False):
            errors += not ok
    else:
        for ok, _ in helpers.streaming_bulk(client, actions, chunk_size=chunk, raise_on_error=False):
            errors += not ok
    client.indices.put_settings(index=index, body=restore)
    count = harness.searchable_count(client, index, len(docs), started + 600, every=0.05)
    wall = time.monotonic() - started
    cpu = harness.cpu_delta(cpu_before, harness.cpu_snapshot(), "raw")  # the loader is `bench`, this process
    return {"chunk_size": chunk, "threads": threads, "documents": count, "build_settings": BUILD_SETTINGS,
            "errors": errors, "wall_s": round(wall, 2), "docs_per_s": round(len(docs) / wall, 1), "cpu_s": cpu,
            "cpu_s_per_1000_docs": harness.per_1000(cpu, len(docs))}


def run_raw(config_path: Path, index: str, opensearch: str, chunks: list[int], threads: list[int],
            quiet: tuple[float, float] = (1.0, 0.0)) -> dict[str, Any]:
    docs, body, pre_s = precompute(config_path, index)
    client = OpenSearch(hosts=[opensearch], timeout=120)
    trials = []
    try:
        for chunk in chunks:
            for t in threads:
                harness.wait_quiet(*quiet)
                trials.append(load_once(client, index, body, docs, chunk, t))
                harness.log(f"  raw chunk {chunk} threads {t}: {trials[-1]['docs_per_s']:,.0f} docs/s")
    finally:
        client.indices.delete(index=index, ignore=404)
    best = max(trials, key=lambda r: r["docs_per_s"])
    mean_bytes = sum(len(v) for v in docs.values()) / max(1, len(docs))
    return {"documents": len(docs), "precompute_s": round(pre_s, 2), "mean_doc_bytes": round(mean_bytes),
            "trials": trials, "best": best, "wall_s": best["wall_s"], "docs_per_s": best["docs_per_s"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--books", type=int, default=10_000)
    parser.add_argument("--database", default="flusso_bench_run")
    parser.add_argument("--dsn", default=harness.DEFAULT_DSN)
    parser.add_argument("--opensearch", default=harness.DEFAULT_OPENSEARCH)
    parser.add_argument("--chunks", default="500,1000,2000")
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    import tempfile
    dsn, _ = harness.ensure_data(args.dsn, args.database, args.books, 42)
    config, index = harness.write_config(Path(tempfile.mkdtemp()) / "flusso.yaml", dsn, args.opensearch, "bench_raw")
    result = run_raw(config, index, args.opensearch, [int(c) for c in args.chunks.split(",")],
                     [int(t) for t in args.threads.split(",")])
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
