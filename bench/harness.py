"""What every benchmark shares: the data, the processes it starts and watches, and the measurements.

Data: the bookstore generated into a database of the benchmark's own (`ensure_data`), its
flusso.yaml pointed at that database and at names of the benchmark's own (`write_config`), and
documents as flusso's SQL builder makes them now (`built_documents`, `check_documents`).
Processes: `flusso` subcommands and `flusso run` as a child (`flusso`, `start_flusso`,
`stop_process`), their memory (`Watch`) and py-spy. Measurement: CPU seconds by group
(`cpu_snapshot`, `cpu_delta`), waiting for a quiet machine (`wait_quiet`), OpenSearch's counters,
percentiles (`pct`, `latency_ms`), the replication slot's lag and confirmed position, the machine
and commit a report was made on.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import yaml
from opensearchpy import OpenSearch
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
BOOKSTORE = ROOT / "examples" / "bookstore"
sys.path.insert(0, str(BOOKSTORE))
from generate import generate  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from acks import (  # noqa: E402,F401 - the capture's positions, used through harness by every benchmark
    Fence,
    commit_fence,
    polling_cursor,
    slot_lag,
    wait_acked,
    wait_confirmed,
)

from flusso_engine.config import read_yaml  # noqa: E402
from flusso_engine.redact import redact_dsn  # noqa: E402

FLUSSO = [sys.executable, "-m", "flusso_engine.cli"]
DEFAULT_DSN = os.environ.get("FLUSSO_PG_DSN", "postgresql://postgres:postgres@127.0.0.1:5432/postgres")
DEFAULT_OPENSEARCH = os.environ.get("OPENSEARCH_URL", "http://127.0.0.1:9200")
DIRTY = "bench_dirty"  # a table the writers create: the rows are no longer the generated ones
OPENSEARCH_PORT = "9200"  # which JVM is "opensearch": the one serving this port (others are noise)


def public(parameters: dict[str, Any]) -> dict[str, Any]:
    """A run's parameters fit for a results file: a DSN's or URL's password hidden (results are committed)."""
    return {k: redact_dsn(v) if isinstance(v, str) and ("://" in v or "password=" in v) else v
            for k, v in parameters.items()}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- data -------------------------------------------------------------------------------------------


def ensure_data(admin_dsn: str, database: str, books: int, seed: int,
                pristine: bool = False, at_least: bool = False) -> tuple[str, float | None]:
    """The database's DSN, generating the bookstore unless it holds exactly `books` books (with
    `at_least`, `books` or more; with `pristine`, none changed by a writer since: a backfill is
    measured on the generated rows only); returns the generation's seconds too (None when reused)."""
    dsn = psycopg.conninfo.make_conninfo(admin_dsn, dbname=database)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    with psycopg.connect(dsn) as conn:
        exists = conn.execute("SELECT to_regclass('public.book') IS NOT NULL").fetchone()[0]
        have = conn.execute("SELECT count(*) FROM book").fetchone()[0] if exists else 0
        dirty = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (DIRTY,)).fetchone()[0]
        conn.commit()
        enough = have >= books if at_least else have == books
        if enough and not (pristine and dirty):
            return dsn, None
        why = "changed by writers since" if enough else f"it has {have:,}"
        log(f"generating {books:,} books into {database} ({why})")
        started = time.perf_counter()
        generate(conn, books, seed, progress=lambda line: log("  " + line))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(DIRTY)))
        conn.commit()
        return dsn, time.perf_counter() - started


def write_config(path: Path, dsn: str, opensearch: str, name: str, refresh: str | None = None,
                 **source: Any) -> tuple[Path, str]:
    """The bookstore's flusso.yaml with this benchmark's database, slot, publication and index (with
    `refresh`, the index's refresh mode: `interval` or `wait_for`; and `source` settings:
    `capture="polling"` drops the publication, which only the WAL uses)."""
    raw = read_yaml((BOOKSTORE / "flusso.yaml").read_text())
    raw["source"].update(dsn=dsn, slot=name, publication=name, **source)
    if raw["source"]["capture"] == "polling":
        del raw["source"]["publication"]
    raw["sink"]["hosts"] = [opensearch]
    index = f"{name}_books"
    raw["indexes"] = {index: raw["indexes"]["books"]}
    if refresh is not None:
        raw["indexes"][index]["refresh"] = refresh
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, index


def load_parts(config_path: Path) -> tuple[Any, Any, str]:
    """The loaded config, the catalog of its tables and the source DSN: what flusso's builder needs."""
    from flusso_engine.catalog import read_catalog
    from flusso_engine.config import load_config

    config = load_config(config_path)
    dsn = config.source.dsn.get_secret_value()
    with psycopg.connect(dsn, autocommit=True) as conn:
        catalog = read_catalog(conn, config.tables())
    return config, catalog, dsn


def built_documents(config_path: Path, index: str, ids: list[int]) -> dict[str, Any]:
    """The documents of `ids` as a fresh build from the database makes them, as JSON would carry them."""
    from flusso_engine.documents.sql import SqlDocumentBuilder

    config, catalog, dsn = load_parts(config_path)
    with SqlDocumentBuilder(config, catalog, dsn) as builder:
        expected = builder.build(index, [str(i) for i in ids]).docs
    return json.loads(json.dumps(expected, default=str))


def check_documents(expected: dict[str, Any], client: OpenSearch, index: str, ids: list[int],
                    normalize: Callable[[Any], Any] = lambda doc: doc) -> dict[str, Any]:
    """The documents of `ids` as indexed against `expected` (`built_documents`), both `normalize`d."""
    reply = client.mget(index=index, body={"ids": [str(i) for i in ids]})
    actual = {d["_id"]: d.get("_source") for d in reply["docs"]}
    differ = [i for i in expected if normalize(expected[i]) != normalize(actual.get(i))]
    return {"checked": len(ids), "differing": len(differ), "first_differing": differ[:5]}


# --- processes --------------------------------------------------------------------------------------


def flusso(*args: str, config: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*FLUSSO, *args, "-c", str(config)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def drop_flusso(config: Path, client: OpenSearch, index: str) -> None:
    """What a run leaves behind: flusso's slot and publication (`flusso teardown`), the index and its
    dead-letter index."""
    flusso("teardown", "--yes", config=config)
    drop_index(client, index)


def drop_index(client: OpenSearch, index: str) -> None:
    """The index, its dead letters and, once flusso made `index` an alias, its generations
    `<index>__g<N>` (deleting an alias by name is refused)."""
    found = client.indices.get(index=f"{index}*", ignore=404, expand_wildcards="open,closed")
    for name in found:
        if name in (index, f"{index}-deadletter") or name.startswith(f"{index}__g"):
            client.indices.delete(index=name, ignore=404)


def start_flusso(config: Path, log_path: Path, *flags: str, live_within: float | None = None) -> subprocess.Popen:
    """`flusso [FLAGS] run -c CONFIG` as a child writing to `log_path`; with `live_within`, once its
    log says it went live (stopped, and an error, when it exits first or takes longer)."""
    with log_path.open("w") as out:
        proc = subprocess.Popen([*FLUSSO, *flags, "run", "-c", str(config)], stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT)
    if live_within is None:
        return proc
    deadline = time.monotonic() + live_within
    while "live capture started" not in log_path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise RuntimeError(f"flusso run did not go live:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.1)
    return proc


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM (flusso flushes, acks and exits), then SIGKILL after a minute."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (kB) of a live process; {} once it is gone."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def cpu_seconds(pid: int | str, children: bool = False) -> float:
    """CPU seconds of a process (its threads; its reaped children too with `children`)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


class Watch(threading.Thread):
    """Polls a process's memory until it exits; keeps the peak (VmHWM, or the largest VmRSS seen)."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_kb = 0
        self.last_cpu = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            status = memory_kb(self.pid)
            if not status:
                return
            self.peak_kb = max(self.peak_kb, status.get("VmHWM", 0), status.get("VmRSS", 0))
            self.last_cpu = cpu_seconds(self.pid) or self.last_cpu
            self.done.wait(self.every)


def py_spy(pid: int, output: Path, seconds: float | None = None, idle: bool = True) -> subprocess.Popen:
    """py-spy sampling `pid` into a raw collapsed-stack file (`idle`: waiting threads too, which shows
    where the worker waits; without it only the thread holding the GIL, which shows what costs
    Python CPU: py-spy's own idle detection counts a thread in `select` as busy); summarize it with
    `bench/e2e_profile.py pyspy FILE` (or `cpu FILE`)."""
    spy = Path(sys.executable).with_name("py-spy")
    cmd = [str(spy), "record", "--pid", str(pid), *(["--idle"] if idle else ["--gil"]), "--threads", "--nonblocking",
           "--format", "raw", "-o", str(output)]
    if seconds:
        cmd += ["--duration", str(int(seconds))]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --- measurement: CPU, a quiet machine, OpenSearch's counters ---------------------------------------


def cpu_snapshot(flusso_pid: int | None = None) -> dict[str, float]:
    """CPU seconds so far by group: postgres (postmaster with its reaped backends, and live ones),
    opensearch (the JVM serving OPENSEARCH_PORT; every JVM if none says so), flusso (the given
    process), this process, and the whole machine (busy, from /proc/stat)."""
    groups = {"postgres": 0.0, "opensearch": 0.0}
    jvms: list[tuple[str, float]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        if comm == "postgres" or comm.startswith("postgres:"):
            groups["postgres"] += cpu_seconds(entry.name, children=ppid == 1)
        elif comm == "java":
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except (FileNotFoundError, ProcessLookupError):
                continue
            jvms.append((cmdline, cpu_seconds(entry.name)))
    ours = [t for cmd, t in jvms if f"http.port={OPENSEARCH_PORT}\0" in cmd + "\0"]
    groups["opensearch"] = sum(ours) if ours else sum(t for _, t in jvms)
    if flusso_pid is not None:
        groups["flusso"] = cpu_seconds(flusso_pid)
    groups["bench"] = cpu_seconds(os.getpid())  # this process: the writers and the poller
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in cpu]
    idle = values[3] + values[4]  # idle + iowait
    groups["machine_busy"] = (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    return groups


def per_1000(cpu_s: dict[str, float], count: float) -> dict[str, float]:
    """CPU seconds by process group per 1,000 documents (or changes): what each costs, whatever the rate."""
    return {k: round(v * 1000 / count, 3) for k, v in cpu_s.items()} if count else {}


def cpu_delta(before: dict[str, float], after: dict[str, float], system: str = "flusso") -> dict[str, float]:
    """CPU seconds by group between two snapshots; the measured process's group named `system`."""
    out = {k: round(after[k] - before[k], 2) for k in after if k in before}
    # everything else the machine did meanwhile (other users' processes): the noise
    out["other"] = round(out["machine_busy"] - sum(v for k, v in out.items() if k != "machine_busy"), 2)
    if system != "flusso" and "flusso" in out:
        out[system] = out.pop("flusso")
    return out


def cpu_since(before: dict[str, float], child_s: float, system: str = "flusso") -> dict[str, float]:
    """`cpu_delta` from a snapshot taken before the measured child started, to now: its `child_s`."""
    return cpu_delta({**before, "flusso": 0.0}, {**cpu_snapshot(), "flusso": child_s}, system)


def busy_share(seconds: float = 2.0) -> float:
    """The share of the machine's CPUs busy over `seconds`."""
    before = cpu_snapshot()["machine_busy"]
    time.sleep(seconds)
    return (cpu_snapshot()["machine_busy"] - before) / seconds / (os.cpu_count() or 1)


def wait_quiet(max_busy: float, timeout: float) -> float:
    """Wait (up to `timeout`) until the machine is less than `max_busy` busy: the services are shared
    and other users' tests make the figures noisy. Returns the last busy share seen."""
    deadline = time.monotonic() + timeout
    while True:
        busy = busy_share()
        if busy <= max_busy or time.monotonic() > deadline:
            if busy > max_busy:
                log(f"the machine is still {busy:.0%} busy: measuring anyway")
            return round(busy, 3)
        log(f"the machine is {busy:.0%} busy: waiting for < {max_busy:.0%}")


def opensearch_stats(client: OpenSearch, index: str) -> dict[str, float]:
    """Cumulative OpenSearch figures (ms, counts) of the index and the node's JVM collections."""
    out: dict[str, float] = {}
    try:
        prim = client.indices.stats(index=index, metric="indexing,merge,refresh,search")["_all"]["primaries"]
        out.update({
            "index_ms": prim["indexing"]["index_time_in_millis"],
            "index_ops": prim["indexing"]["index_total"],
            "merge_ms": prim["merges"]["total_time_in_millis"],
            "refresh_ms": prim["refresh"]["total_time_in_millis"],
            "refreshes": prim["refresh"]["total"],
            "search_ms": prim["search"]["query_time_in_millis"] + prim["search"]["fetch_time_in_millis"],
            "searches": prim["search"]["query_total"],
        })
    except Exception as err:  # noqa: BLE001 - figures for the report only (the index may be missing)
        log(f"could not read the index's stats: {err}")
    try:
        for node in client.nodes.stats(metric="jvm")["nodes"].values():
            for name, gc in node["jvm"]["gc"]["collectors"].items():
                out[f"gc_{name}_ms"] = out.get(f"gc_{name}_ms", 0) + gc["collection_time_in_millis"]
    except Exception as err:  # noqa: BLE001 - figures for the report only
        log(f"could not read OpenSearch stats: {err}")
    return out


def stats_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after if k in before}


def searchable_count(client: OpenSearch, index: str, rows: int, deadline: float, every: float = 0.1,
                     once: bool = False) -> int:
    """The index's count once a refresh shows `rows` documents (or after one look with `once`, or
    past `deadline`, a time.monotonic())."""
    while True:
        client.indices.refresh(index=index)
        count = client.count(index=index)["count"]
        if count >= rows or once or time.monotonic() > deadline:
            return count
        time.sleep(every)


# --- measurement: latencies, the slot, the report's context -----------------------------------------


def pct(values: list[float], p: float) -> float:
    """The p-th percentile of sorted `values` (nearest rank)."""
    if not values:
        return float("nan")
    k = max(0, min(len(values) - 1, round(p / 100 * len(values) + 0.5) - 1))
    return values[k]


def latency_ms(latencies: list[float], missing: int, censored: list[float] | None = None) -> dict[str, Any]:
    """The `latency_ms` figures of a rate from the sorted latencies seen. With `censored` (sorted: for
    each sample never seen, the time it waited, a lower bound of its latency) the percentiles and
    the max are over both, and `lower_bound` names the percentiles that fall on a censored one."""
    ranked = latencies if censored is None else sorted(latencies + censored)

    def ms(p: float) -> int | None:
        return round(1000 * pct(ranked, p)) if ranked else None

    out: dict[str, Any] = {"samples": len(latencies), "missing": missing, "p50": ms(50), "p95": ms(95),
                           "p99": ms(99)}
    if censored is not None:  # these percentiles fall on samples never seen: true value >= the figure
        out["lower_bound"] = [p for p in ("p50", "p95", "p99") if censored and ranked and
                              pct(ranked, float(p[1:])) >= censored[0]]
    out["max"] = round(1000 * ranked[-1]) if ranked else None
    out["mean"] = round(1000 * statistics.fmean(latencies)) if latencies else None
    return out


class LagSampler(threading.Thread):
    def __init__(self, dsn: str, slot: str, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.dsn, self.slot, self.every = dsn, slot, every
        self.stop = threading.Event()
        self.values: list[int] = []

    def run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                lag = slot_lag(self.dsn, self.slot)
            except psycopg.Error:
                continue
            if lag is not None:
                self.values.append(lag)


def machine() -> dict[str, Any]:
    mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), None)
    return {"nproc": os.cpu_count(), "mem_total_kb": int(mem.split()[1]), "cpu": model,
            "load_avg_at_start": os.getloadavg()}


def git_commit() -> dict[str, Any]:
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, cwd=ROOT).stdout.strip()
    return {"commit": head, "dirty": bool(dirty)}


def parse_rates(text: str) -> list[float | None]:
    return [None if r.strip() == "max" else float(r) for r in text.split(",") if r.strip()]
