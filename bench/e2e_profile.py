"""Where a backfill's time goes, and what the hardware allows: experiments beside bench/e2e.py.

    python bench/e2e_profile.py split     # the engine's backfill, in process, with timers
    python bench/e2e_profile.py raw       # documents built once into memory, then bulk-loaded raw
    python bench/e2e_profile.py overlap   # build and flush overlapped (threads), same builder and sink
    python bench/e2e_profile.py mapping   # the raw bulk limit by mapping variant: what the mapping costs
    python bench/e2e_profile.py pyspy FILE [FILE...]   # summarize py-spy raw (collapsed) profiles
    python bench/e2e_profile.py cpu FILE [FILE...]     # ... on-CPU ones (e2e.py --profile-cpu): stages, hot functions

Uses the database and names of bench/e2e.py (`flusso_bench_e2e`, `bench_e2e*`), which must hold the
bookstore already (run bench/e2e.py first). Nothing here changes flusso_engine: the timers wrap its
functions in this process only, and the overlapped backfill is built from its parts (the
`SqlDocumentBuilder` and the `OpenSearchSink`) by the experiment itself. Prints JSON lines; `--out`
appends them to a file.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import queue
import re
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

from flusso_engine.config import load_config  # noqa: E402
from flusso_engine.documents.sql import SqlDocumentBuilder  # noqa: E402
from flusso_engine.policy import FailurePolicies  # noqa: E402
from flusso_engine.sinks.opensearch import OpenSearchSink  # noqa: E402


class Timers:
    """Seconds and calls per name, summed over threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.perf_counter() - started
                with self.lock:
                    self.seconds[name] += spent
                    self.calls[name] += 1

        return timed

    def report(self, wall: float) -> dict[str, Any]:
        return {k: {"s": round(v, 2), "share": round(v / wall, 3), "calls": self.calls[k]}
                for k, v in sorted(self.seconds.items(), key=lambda kv: -kv[1])}


def setup(args: argparse.Namespace) -> tuple[Path, str, str]:
    workdir = Path(tempfile.mkdtemp(prefix="flusso-bench-profile-"))
    dsn = psycopg.conninfo.make_conninfo(args.dsn, dbname=args.database)
    config, index = harness.write_config(workdir / "flusso.yaml", dsn, args.opensearch, args.name)
    return config, index, dsn


def cpu_now() -> dict[str, float]:
    """CPU seconds by group, this process counted as flusso (the engine runs in it)."""
    snapshot = harness.cpu_snapshot(os.getpid())
    snapshot.pop("bench")
    return snapshot


def emit(args: argparse.Namespace, record: dict[str, Any]) -> None:
    record = {"experiment": args.command, **harness.git_commit(), "load_avg": os.getloadavg(), **record}
    line = json.dumps(record, default=str)
    print(line, flush=True)
    if args.out:
        with args.out.open("a") as out:
            out.write(line + "\n")


# --- split: the engine's own backfill with timers ----------------------------------------------------


def split(args: argparse.Namespace) -> None:
    """`Engine.backfill` in this process, its build, encode, bulk round trip and flush timed."""
    from flusso_engine.engine import Engine
    from flusso_engine.sinks.opensearch import bulk as os_bulk

    config_path, index, dsn = setup(args)
    config = load_config(config_path)
    timers = Timers()
    SqlDocumentBuilder.build = timers.wrap("build (PG: snapshot + build query + fetch)", SqlDocumentBuilder.build)
    OpenSearchSink.flush = timers.wrap("flush (total)", OpenSearchSink.flush)
    OpenSearchSink.write = timers.wrap("sink.write (buffer)", OpenSearchSink.write)
    os_bulk.encode = timers.wrap("flush: _encode (NDJSON lines)", os_bulk.encode)
    engine = Engine(config).open()
    engine.sink.client.bulk = timers.wrap("flush: client.bulk (HTTP + OpenSearch indexing)",
                                          engine.sink.client.bulk)
    try:
        engine.prepare()
        busy = harness.wait_quiet(args.quiet, args.quiet_timeout)
        cpu0 = cpu_now()
        started = time.perf_counter()
        report = engine.backfill(index)
        wall = time.perf_counter() - started
        cpu = harness.cpu_delta(cpu0, cpu_now())
    finally:
        engine.capture.teardown()
        engine.sink.client.indices.delete(index=index, ignore=404)
        engine.close()
    emit(args, {"documents": report.documents, "wall_s": round(wall, 2),
                "docs_per_s": round(report.documents / wall, 1), "timers": timers.report(wall), "cpu_s": cpu,
                "machine_busy_before": busy})


# --- raw: the bulk limit -----------------------------------------------------------------------------


def all_ids(dsn: str, limit: int | None) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        q = "SELECT id::text FROM book ORDER BY id" + (f" LIMIT {int(limit)}" if limit else "")  # noqa: S608
        return [r[0] for r in conn.execute(q)]


def parts(config_path: Path) -> tuple[Any, Any]:
    config, catalog, _ = harness.load_parts(config_path)
    return config, catalog


def build_all(config: Any, catalog: Any, dsn: str, index: str, ids: list[str],
              chunk: int) -> tuple[dict[str, tuple[str, int]], dict]:
    """Every document of `ids` as raw JSON with its version (the build's position), `chunk` ids a
    query on one connection, and the index's mapping."""
    docs: dict[str, tuple[str, int]] = {}
    with SqlDocumentBuilder(config, catalog, dsn, raw_json=True) as builder:
        for i in range(0, len(ids), chunk):
            built = builder.build(index, ids[i : i + chunk])
            for doc_id, doc in built.docs.items():
                docs[doc_id] = (doc, built.position)
        return docs, builder.mapping(index)


def timed_load(args: argparse.Namespace, client: Any, index: str, load: Callable[[], Any]) -> dict[str, Any]:
    """One bulk load (`load` yields opensearch-py's (ok, item)) until a refreshed count: its figures."""
    busy = harness.wait_quiet(args.quiet, args.quiet_timeout)
    cpu0 = cpu_now()
    started = time.perf_counter()
    failed = sum(1 for ok, _ in load() if not ok)
    client.indices.refresh(index=index)
    count = client.count(index=index)["count"]
    wall = time.perf_counter() - started
    return {"documents": count, "failed": failed, "seconds": round(wall, 2), "docs_per_s": round(count / wall, 1),
            "machine_busy_before": busy, "cpu_s": harness.cpu_delta(cpu0, cpu_now())}


def raw(args: argparse.Namespace) -> None:
    """Build every document once (raw JSON, 1,000 ids a query) into memory, then bulk-load them with
    opensearch-py's helpers, carrying the versions as flusso does."""
    from opensearchpy import OpenSearch, helpers

    config_path, index, dsn = setup(args)
    config, catalog = parts(config_path)
    ids = all_ids(dsn, args.docs)
    busy = harness.wait_quiet(args.quiet, args.quiet_timeout)
    cpu0 = cpu_now()
    started = time.perf_counter()
    docs, mapping = build_all(config, catalog, dsn, index, ids, args.chunk)
    build_s = time.perf_counter() - started
    emit(args, {"variant": f"build only, 1 connection, {args.chunk} ids a query", "documents": len(docs),
                "seconds": round(build_s, 2), "docs_per_s": round(len(docs) / build_s, 1),
                "bytes": sum(len(d) for d, _ in docs.values()), "machine_busy_before": busy,
                "cpu_s": harness.cpu_delta(cpu0, cpu_now())})
    client = OpenSearch(hosts=[args.opensearch], timeout=120)
    sink = OpenSearchSink(config.sink, FailurePolicies.from_config(config.failures), client=client)

    def actions() -> Any:
        for doc_id, (doc, version) in docs.items():
            yield {"_index": index, "_id": doc_id, "version": version, "version_type": "external_gte",
                   "_source": doc}

    variants: list[tuple[str, Callable[[], Any]]] = []
    for threads, chunk in ((2, 1000), (2, 2000), (1, 1000), (4, 1000)):
        if threads == 1:
            variants.append((f"streaming_bulk, 1 thread, chunk {chunk}",
                             lambda c=chunk: helpers.streaming_bulk(client, actions(), chunk_size=c)))
        else:
            variants.append((f"parallel_bulk, {threads} threads, chunk {chunk}",
                             lambda t=threads, c=chunk: helpers.parallel_bulk(client, actions(), thread_count=t,
                                                                              chunk_size=c)))
    # the same again over the documents now in the index: every write replaces one (as live does)
    variants.append(("parallel_bulk, 2 threads, chunk 1000, replacing existing documents",
                     lambda: helpers.parallel_bulk(client, actions(), thread_count=2, chunk_size=1000)))
    try:
        for label, make in variants:
            if "replacing" not in label:
                sink.recreate(index, mapping)
            emit(args, {"variant": label, **timed_load(args, client, index, make)})
    finally:
        client.indices.delete(index=index, ignore=404)


# --- mapping: what the index's mapping costs OpenSearch ---------------------------------------------


def mapping_variant(mapping: dict, name: str) -> dict:
    """The bookstore mapping with `search_as_you_type` fields as plain `text` ("text"), the nested
    reviews as plain objects ("object"), or both ("text+object")."""
    m = copy.deepcopy(mapping)
    props = m["mappings"]["properties"]
    if "text" in name:
        for field in (props.get("title"), props.get("authors", {}).get("properties", {}).get("name")):
            if field and field.get("type") == "search_as_you_type":
                field.clear()
                field["type"] = "text"
    if "object" in name:
        props.get("reviews", {}).pop("type", None)
    return m


def mapping(args: argparse.Namespace) -> None:
    """Documents built once into memory, bulk-loaded (parallel_bulk, 2 threads, 1,000 a request)
    into an index made with each mapping variant."""
    from opensearchpy import OpenSearch, helpers

    config_path, index, dsn = setup(args)
    config, catalog = parts(config_path)
    docs, base = build_all(config, catalog, dsn, index, all_ids(dsn, args.docs), args.chunk)
    client = OpenSearch(hosts=[args.opensearch], timeout=120)
    try:
        for name in (args.variants or "as-is,text,object,text+object").split(","):
            client.indices.delete(index=index, ignore=404)
            client.indices.create(index=index, body=mapping_variant(base, name))
            actions = ({"_index": index, "_id": k, "version": v, "version_type": "external_gte", "_source": d}
                       for k, (d, v) in docs.items())
            load = functools.partial(helpers.parallel_bulk, client, actions, thread_count=2, chunk_size=1000)
            emit(args, {"variant": name, **timed_load(args, client, index, load)})
    finally:
        client.indices.delete(index=index, ignore=404)


# --- overlap: build and flush on threads of their own ----------------------------------------------


def overlap(args: argparse.Namespace) -> None:
    """A backfill made of the engine's parts, in the engine's order (build a chunk, write, flush) or
    with builders and flushers on threads of their own joined by a small queue: what overlapping the
    PostgreSQL and the OpenSearch halves would gain."""
    config_path, index, dsn = setup(args)
    config, catalog = parts(config_path)
    ids = all_ids(dsn, args.docs)
    chunks = [ids[i : i + args.chunk] for i in range(0, len(ids), args.chunk)]
    policies = FailurePolicies.from_config(config.failures)
    admin = OpenSearchSink(config.sink, policies)
    with SqlDocumentBuilder(config, catalog, dsn, raw_json=True) as b:
        mapping = b.mapping(index)
    variants = [(0, 1), (1, 1), (1, 2), (2, 2)] if not args.variants else [
        tuple(int(x) for x in v.split("x")) for v in args.variants.split(",")]
    try:
        for builders, flushers in variants:
            admin.recreate(index, mapping)
            busy = harness.wait_quiet(args.quiet, args.quiet_timeout)
            timers = Timers()
            cpu0 = cpu_now()
            started = time.perf_counter()
            if builders == 0:  # the engine's order, on one thread
                label = "sequential (build, write, flush), 1 thread"
                sink = OpenSearchSink(config.sink, policies)
                with SqlDocumentBuilder(config, catalog, dsn, raw_json=True) as builder:
                    for chunk in chunks:
                        built = timers.wrap("build", builder.build)(index, chunk)
                        for doc_id, doc in built.docs.items():
                            sink.write(index, doc_id, doc, built.position)
                        timers.wrap("flush", sink.flush)()
                sink.close()
            else:
                label = f"overlapped: {builders} builder(s), {flushers} flusher(s), queue {2 * flushers}"
                overlapped(config, catalog, dsn, index, chunks, builders, flushers, timers)
            admin.refresh(index)
            count = admin.count(index)
            wall = time.perf_counter() - started
            emit(args, {"variant": label, "documents": count, "seconds": round(wall, 2),
                        "docs_per_s": round(count / wall, 1), "timers": timers.report(wall),
                        "machine_busy_before": busy, "cpu_s": harness.cpu_delta(cpu0, cpu_now())})
    finally:
        admin.client.indices.delete(index=index, ignore=404)
        admin.close()


def overlapped(config: Any, catalog: Any, dsn: str, index: str, chunks: list[list[str]], builders: int,
               flushers: int, timers: Timers) -> None:
    """`builders` threads (a connection each) build chunks into a queue of `2 * flushers` that
    `flushers` threads (a sink each) write and flush."""
    policies = FailurePolicies.from_config(config.failures)
    todo: queue.Queue = queue.Queue()
    for chunk in chunks:
        todo.put(chunk)
    built_q: queue.Queue = queue.Queue(maxsize=2 * flushers)
    errors: list[BaseException] = []

    def build_loop() -> None:
        try:
            with SqlDocumentBuilder(config, catalog, dsn, raw_json=True) as builder:
                build = timers.wrap("build", builder.build)
                while True:
                    try:
                        chunk = todo.get_nowait()
                    except queue.Empty:
                        return
                    built_q.put(build(index, chunk))
        except BaseException as err:  # noqa: BLE001 - raised by the caller
            errors.append(err)

    def flush_loop() -> None:
        sink = OpenSearchSink(config.sink, policies)
        flush = timers.wrap("flush", sink.flush)
        try:
            while (built := built_q.get()) is not None:
                for doc_id, doc in built.docs.items():
                    sink.write(index, doc_id, doc, built.position)
                flush()
        except BaseException as err:  # noqa: BLE001 - raised by the caller
            errors.append(err)
        finally:
            sink.close()

    bthreads = [threading.Thread(target=build_loop) for _ in range(builders)]
    fthreads = [threading.Thread(target=flush_loop) for _ in range(flushers)]
    for t in bthreads + fthreads:
        t.start()
    for t in bthreads:
        t.join()
    for _ in fthreads:
        built_q.put(None)
    for t in fthreads:
        t.join()
    if errors:
        raise errors[0]


# --- py-spy summaries --------------------------------------------------------------------------------

# (category, pattern on the stack's frames, searched leaf first); the first match wins
CATEGORIES: list[tuple[str, str]] = [
    ("queue: waiting for changes", r"get_batch \(flusso_engine/queue/channel"),
    ("queue: capture blocked on a full queue", r"^put \(flusso_engine/queue/channel"),
    ("build: visibility wait (sleep)", r"_Wait\.sees"),
    ("flush: _encode (NDJSON)", r"\bencode \(flusso_engine/sinks/opensearch/bulk"),
    ("flush: bulk response JSON parse", r"(loads|JSONSerializer\.loads) \(.*(json|serializer)"),
    ("flush: bulk HTTP round trip (OpenSearch)", r"(OpenSearch\.bulk|perform_request) \("),
    ("flush: other", r"flush \(flusso_engine/sinks/opensearch"),
    ("build: PG query + fetch", r"(execute|fetchall|fetchone) \(psycopg"),
    ("build: other", r"build \(flusso_engine/documents/sql"),
    ("resolve", r"resolve \(flusso_engine/documents/sql"),
    ("capture: pgoutput decoding", r"flusso_engine/capture/wal/(pgoutput|decode)"),
    ("snapshot read (PG keys)", r"snapshot \(flusso_engine/capture/wal"),
    ("replication stream", r"(stream|_receive) \(flusso_engine/capture/wal"),
    ("logging / observer", r"flusso_engine/observer|logging/__init__"),
    ("ack", r"ack \(flusso_engine/capture/wal"),
]


def classify(frames: list[str]) -> str:
    for category, pattern in CATEGORIES:
        rx = re.compile(pattern)
        for frame in reversed(frames):
            if rx.search(frame):
                return category
    return "other: " + (frames[-1] if frames else "?")


def pyspy(args: argparse.Namespace) -> None:
    for path in args.files:
        threads: dict[str, Counter[str]] = defaultdict(Counter)
        for line in Path(path).read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = stack.split(";")
            head = frames[0]
            name = head.split(": ", 1)[1] if ": " in head else head
            threads[name][classify(frames[1:])] += int(count)
        out: dict[str, Any] = {}
        for name, cats in sorted(threads.items(), key=lambda kv: -sum(kv[1].values())):
            total = sum(cats.values())
            if total < args.min_samples:
                continue
            out[name] = {"samples": total,
                         "categories": {c: round(n / total, 3) for c, n in cats.most_common(args.top)}}
        emit(args, {"file": str(path), "threads": out})


def cpu(args: argparse.Namespace) -> None:
    """On-CPU samples (`bench/e2e.py --profile-cpu`): the share of each stage, and the functions with
    the most samples of their own (leaf) and in all (inclusive), over every thread."""
    for path in args.files:
        stages: Counter[str] = Counter()
        leaf: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        for line in Path(path).read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames, n = stack.split(";")[1:], int(count)
            stages[classify(frames)] += n
            if frames:
                leaf[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
        total = sum(stages.values()) or 1
        ours = Counter({k: v for k, v in inclusive.items() if "flusso_engine" in k})
        emit(args, {"file": str(path), "samples": total,
                    **{what: {k: round(v / total, 3) for k, v in c.most_common(args.top)}
                       for what, c in (("stages", stages), ("self", leaf), ("inclusive", ours))}})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["split", "raw", "overlap", "mapping", "pyspy", "cpu"])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--dsn", default=harness.DEFAULT_DSN)
    parser.add_argument("--database", default="flusso_bench_e2e")
    parser.add_argument("--opensearch", default=harness.DEFAULT_OPENSEARCH)
    parser.add_argument("--name", default="bench_e2e_profile")
    parser.add_argument("--docs", type=int, default=None, help="only the first N books (default all)")
    parser.add_argument("--chunk", type=int, default=1000, help="ids per build (the engine's max_changes)")
    parser.add_argument("--variants", default="",
                        help="overlap: BUILDERSxFLUSHERS,... (0x1 = sequential); mapping: as-is,text,object,...")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--min-samples", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quiet", type=float, default=0.25, help="wait until the machine is at most this busy")
    parser.add_argument("--quiet-timeout", type=float, default=180.0)
    args = parser.parse_args()
    harness.OPENSEARCH_PORT = str(urlsplit(args.opensearch).port or 9200)
    {"split": split, "raw": raw, "overlap": overlap, "mapping": mapping, "pyspy": pyspy, "cpu": cpu}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
