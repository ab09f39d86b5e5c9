"""What `plugins:` costs (issue #16 item 7): building and serializing documents with and without one.

    python bench/plugins.py [--books 10000] [--database flusso_bench_plugins] [--rounds 3]

Builds every book's document in chunks of 1,000 with the SQL builder as `flusso run` makes it (raw
JSON text), then through `PluginBuilder` with an identity plugin (parse, call, re-serialize: the
plugin path's own cost) and with the example `ShoutTitles`; each document is serialized as the sink
would send it (raw text as it is, a dict with `json.dumps`). Reports documents/s of each and the
extra microseconds per document (the best of `--rounds`), and the plugin path's own work timed apart
from the database (parse, an identity transform, serialize), which the shared machine's noise
cannot hide. Measures, never asserts; writes
`bench/results/plugins-<books>.json`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "examples" / "plugins"))
import harness  # noqa: E402

RESULTS = ROOT / "bench" / "results"


class Identity:
    def transform(self, doc: dict) -> dict:
        return doc


def measure(builder: Any, index: str, ids: list[str], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(0, len(ids), 1000):
            for doc in builder.build(index, ids[i:i + 1000]).docs.values():
                _ = doc if isinstance(doc, str) else json.dumps(doc, separators=(",", ":"))
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--books", type=int, default=10_000)
    parser.add_argument("--database", default="flusso_bench_plugins")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dsn", default=harness.DEFAULT_DSN)
    args = parser.parse_args()

    from bookstore_plugins import ShoutTitles

    from flusso_engine.documents.plugins import PluginBuilder
    from flusso_engine.documents.sql import SqlDocumentBuilder

    dsn, _ = harness.ensure_data(args.dsn, args.database, args.books, seed=42)
    with tempfile.TemporaryDirectory() as tmp:
        config_path, index = harness.write_config(Path(tmp) / "flusso.yaml", dsn, harness.DEFAULT_OPENSEARCH,
                                                  "bench_plugins")
        config, catalog, dsn = harness.load_parts(config_path)
    ids = [str(i) for i in range(1, args.books + 1)]
    with SqlDocumentBuilder(config, catalog, dsn, raw_json=True) as raw:
        seconds = {"raw_json": measure(raw, index, ids, args.rounds),
                   "identity_plugin": measure(PluginBuilder(raw, {index: [("identity", Identity())]}), index, ids,
                                              args.rounds),
                   "shout_titles_plugin": measure(PluginBuilder(raw, {index: [("shout", ShoutTitles())]}), index,
                                                  ids, args.rounds)}
        texts = [d for i in range(0, len(ids), 1000) for d in raw.build(index, ids[i:i + 1000]).docs.values()
                 if isinstance(d, str)]
    started = time.perf_counter()  # the plugin path's own work, apart from the database's noise
    for _ in range(args.rounds):
        for text in texts:
            json.dumps(Identity().transform(json.loads(text)), separators=(",", ":"))
    parse_us = (time.perf_counter() - started) / args.rounds / max(1, len(texts)) * 1e6
    base = seconds["raw_json"]
    result = {
        "books": args.books, "rounds": args.rounds,
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip(),
        "docs_per_s": {k: round(args.books / v) for k, v in seconds.items()},
        "parse_transform_serialize_us_per_doc": round(parse_us, 1),
        "mean_document_bytes": round(sum(map(len, texts)) / max(1, len(texts))),
        "extra_us_per_doc": {k: round((v - base) / args.books * 1e6, 1) for k, v in seconds.items() if k != "raw_json"},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"plugins-{args.books}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
