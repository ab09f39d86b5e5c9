"""Benchmark the SQL document builder: documents built per second, changes resolved per second.

    python bench/build.py [--books 100000] [--rounds 10]

Generates the bookstore into the database `flusso_bench` when it is missing or holds fewer books,
then times `build` on batches of 1,000 random ids (documents as dicts, and as raw JSON text) and
`resolve` on batches of 1,000 mixed changes made from real rows the way pgoutput gives them (text
values; old rows whole for REPLICA IDENTITY FULL tables, keys only otherwise). Prints a table and
writes bench/results/build.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import harness  # noqa: E402

from flusso_engine.catalog import Catalog, read_catalog  # noqa: E402
from flusso_engine.changes import Change  # noqa: E402
from flusso_engine.config import FlussoConfig, load_config  # noqa: E402
from flusso_engine.documents.routes import needs_full_identity  # noqa: E402
from flusso_engine.documents.sql import SqlDocumentBuilder  # noqa: E402

ADMIN_DSN = os.environ.get("FLUSSO_PG_DSN", "postgresql://postgres:postgres@127.0.0.1:5432/postgres")
CONFIG = ROOT / "examples" / "bookstore" / "flusso.yaml"
RESULTS = ROOT / "bench" / "results" / "build.json"
TARGET_DOCS_PER_S = 20_000
# Share of each table in a batch of changes: mostly leaves, some fan-out (publisher, author). A tag
# reaches a tenth of the books: it is timed on its own.
MIX = {
    "public.review": 0.30,
    "public.book": 0.15,
    "public.book_author": 0.10,
    "public.review_tag": 0.10,
    "public.reader": 0.10,
    "public.book_detail": 0.10,
    "public.author": 0.10,
    "public.publisher": 0.05,
}


def timed(fn: Callable[[], int], rounds: int) -> tuple[float, int]:
    """Seconds and items over `rounds` calls, after one warm-up call."""
    fn()
    items, started = 0, time.perf_counter()
    for _ in range(rounds):
        items += fn()
    return time.perf_counter() - started, items


def row(operation: str, batch: int, rounds: int, seconds: float, items: int, **extra: float) -> dict:
    """One line of the table: `items` is what the rate counts (documents built, changes resolved)."""
    return {
        "operation": operation,
        "batch": batch,
        "ms_per_batch": round(1000 * seconds / rounds, 1),
        "per_second": round(items / seconds),
        **extra,
    }


def sample_changes(
    conn: psycopg.Connection, catalog: Catalog, full: set[str], n: int, seed: int
) -> list[Change]:
    """`n` changes over real rows, in MIX proportions: updates, with some inserts and deletes."""
    rng = random.Random(seed)
    conn.execute("SELECT setseed(%s)", (rng.random(),))
    changes: list[Change] = []
    for table, share in MIX.items():
        t = catalog.tables[table]
        cols = sql.SQL(", ").join(
            sql.SQL("{}::text AS {}").format(sql.Identifier(c), sql.Identifier(c)) for c in t.columns
        )
        query = sql.SQL("SELECT {} FROM {} ORDER BY random() LIMIT %s").format(
            cols, sql.Identifier(t.schema, t.name)
        )
        with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            rows = cur.execute(query, (max(1, round(n * share)),)).fetchall()
        for row in rows:
            key = {k: row[k] for k in t.primary_key}
            old = dict(row) if table in full else key
            op = rng.choices(("update", "insert", "delete"), (0.7, 0.15, 0.15))[0]
            if op == "update":
                changes.append(Change(table, "update", new=row, old=dict(row) if table in full else None))
            elif op == "insert":
                changes.append(Change(table, "insert", new=row))
            else:
                changes.append(Change(table, "delete", old=old))
    rng.shuffle(changes)
    return changes[:n]


def run(books: int, rounds: int, batch: int, seed: int, database: str) -> dict:
    dsn, _ = harness.ensure_data(ADMIN_DSN, database, books, seed, at_least=True)
    config: FlussoConfig = load_config(CONFIG, env={"FLUSSO_PG_DSN": dsn})
    with psycopg.connect(dsn) as conn:
        catalog = read_catalog(conn, config.tables())
        total = conn.execute("SELECT count(*), max(id) FROM book").fetchone()
        busiest_tag = conn.execute(
            "SELECT tag_id FROM review_tag GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()[0]
        changes = [
            sample_changes(conn, catalog, needs_full_identity(config, catalog), batch, seed + i)
            for i in range(3)
        ]
    rng = random.Random(seed)
    rows = []
    for label, raw in (("build (dicts)", False), ("build (raw JSON)", True)):
        with SqlDocumentBuilder(config, catalog, dsn, raw_json=raw) as builder:

            def build_once(builder: SqlDocumentBuilder = builder) -> int:
                ids = [str(rng.randint(1, total[1])) for _ in range(batch)]
                return sum(doc is not None for doc in builder.build("books", ids).docs.values())

            seconds, docs = timed(build_once, rounds)
        rows.append(row(label, batch, rounds, seconds, docs))
    with SqlDocumentBuilder(config, catalog, dsn) as builder:
        found: list[int] = []

        def resolve(batch_of_changes: list[Change]) -> int:
            found.append(sum(len(v) for v in builder.resolve(batch_of_changes).values()))
            return len(batch_of_changes)

        turn = iter(range(10**9))
        before = builder.statements
        seconds, resolved = timed(lambda: resolve(changes[next(turn) % len(changes)]), rounds)
        statements = (builder.statements - before) / (rounds + 1)
        ids = round(sum(found) / len(found))
        rows.append(
            row(
                "resolve (mixed changes)",
                batch,
                rounds,
                seconds,
                resolved,
                ids_per_batch=ids,
                statements_per_batch=statements,
            )
        )
        found.clear()
        tag = Change("public.tag", "update", new={"id": str(busiest_tag), "name": "renamed"})
        seconds, resolved = timed(lambda: resolve([tag]), rounds)
        rows.append(
            row(
                "resolve (a tag renamed)",
                1,
                rounds,
                seconds,
                resolved,
                ids_per_batch=found[-1],
                statements_per_batch=1,
            )
        )
    return {"books": total[0], "target_docs_per_s": TARGET_DOCS_PER_S, "results": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--books", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=10, help="timed batches per measurement (default 10)")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--database", default="flusso_bench")
    args = parser.parse_args()
    report = run(args.books, args.rounds, args.batch, args.seed, args.database)
    table = pd.DataFrame(report["results"]).set_index("operation")
    print(f"\n{report['books']:,} books; target {TARGET_DOCS_PER_S:,} documents/s\n")
    print(table.astype(object).fillna("").to_string())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
