"""The verify scenario (issue #13): `flusso verify --full` beside `flusso backfill` on the same books.

    python bench/verify.py [--books 100000] [--database flusso_bench_verify]

Generates the bookstore (reused when it already holds exactly `--books` books), backfills a fresh
index with `flusso backfill --force`, then runs `flusso verify --full` on it; each command is a
child process whose RSS is sampled every 0.2 s. Reports documents/s of both (the backfill's root
rows over its wall time; verify's documents compared over its wall time) and the peak RSS of both,
with verify's RSS over the first and last quarter of its run (flat: no growth with the ids walked).
Measures, never asserts; writes `bench/results/verify-<books>.json`.
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

from opensearchpy import OpenSearch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import harness  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def timed(args: list[str], config: Path) -> dict[str, Any]:
    """Run `flusso ARGS -c CONFIG`; wall seconds, exit code, RSS samples (MB)."""
    log = config.with_suffix(f".{args[0]}.log")
    started = time.perf_counter()
    with log.open("w") as sink:
        proc = subprocess.Popen([*harness.FLUSSO, *args, "-c", str(config)], cwd=ROOT, stdout=sink,
                                stderr=subprocess.STDOUT)
        samples: list[float] = []
        while proc.poll() is None:
            rss = harness.memory_kb(proc.pid).get("VmRSS")
            if rss:
                samples.append(rss / 1024)
            time.sleep(0.2)
    seconds = time.perf_counter() - started
    quarter = max(1, len(samples) // 4)
    return {"seconds": round(seconds, 2), "returncode": proc.returncode,
            "peak_rss_mb": round(max(samples, default=0), 1),
            "rss_first_quarter_mb": round(max(samples[:quarter], default=0), 1),
            "rss_last_quarter_mb": round(max(samples[-quarter:], default=0), 1),
            "output_tail": log.read_text()[-1500:]}


def cleanup(config: Path, client: OpenSearch, index: str) -> None:
    """The slot and publication, the index's generations (the alias goes with them), its dead letters."""
    harness.flusso("teardown", "--yes", config=config)
    client.indices.delete(index=f"{index}__g*", ignore=404)
    client.indices.delete(index=f"{index}-deadletter", ignore=404)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--books", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dsn", default=harness.DEFAULT_DSN)
    parser.add_argument("--database", default="flusso_bench_verify")
    parser.add_argument("--opensearch", default=harness.DEFAULT_OPENSEARCH)
    args = parser.parse_args()
    dsn, generated = harness.ensure_data(args.dsn, args.database, args.books, args.seed)
    client = OpenSearch(hosts=[args.opensearch], timeout=120)
    with tempfile.TemporaryDirectory() as tmp:
        config, index = harness.write_config(Path(tmp) / "flusso.yaml", dsn, args.opensearch, "bench_verify")
        cleanup(config, client, index)
        try:
            harness.log(f"backfill of {args.books:,} books")
            backfill = timed(["backfill", "--force", "--index", index], config)
            harness.log(f"verify --full of {index}")
            verify = timed(["verify", "--full", "--index", index], config)
        finally:
            cleanup(config, client, index)
    result = {
        "books": args.books, "generation_s": generated,
        "backfill": {**backfill, "documents_per_s": round(args.books / backfill["seconds"])},
        "verify": {**verify, "documents_per_s": round(args.books / verify["seconds"])},
        "verify_over_backfill": round(backfill["seconds"] / verify["seconds"], 2),
        "machine": harness.machine(), "commit": harness.git_commit(),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"verify-{args.books}.json"
    out.write_text(json.dumps(result, indent=2))
    harness.log(f"backfill {result['backfill']['documents_per_s']:,} docs/s (peak RSS {backfill['peak_rss_mb']} MB), "
                f"verify --full {result['verify']['documents_per_s']:,} docs/s (peak RSS {verify['peak_rss_mb']} MB, "
                f"first/last quarter {verify['rss_first_quarter_mb']}/{verify['rss_last_quarter_mb']} MB): {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
