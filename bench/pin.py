"""`run.py --pin`: OpenSearch's JVM on one core, PostgreSQL, flusso and the writers on the other
(issue #17 item 4), for raw and flusso alike.

Unpinned, the three share two cores and OpenSearch alone needs most of them, so flusso / raw mixes
how well flusso keeps the sink busy with how much CPU it takes from it. Pinned, the sink has a core
of its own and is the only bottleneck: flusso / raw then says how well flusso keeps it busy.

Affinity is set on every thread (`/proc/<pid>/task`: a JVM's threads each have their own) and
restored on exit, also on the threads and backends started meanwhile (they inherited the pinned
mask). The services are shared: pinning slows everyone else's OpenSearch requests while it lasts,
so the option is for a quiet machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import harness


def service_pids() -> dict[str, list[int]]:
    """The OpenSearch JVM serving `harness.OPENSEARCH_PORT` (every JVM if none says so) and every
    PostgreSQL process, as `harness.cpu_snapshot` counts them."""
    found: dict[str, list[int]] = {"opensearch": [], "postgres": []}
    jvms: list[tuple[int, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            if comm == "java":
                jvms.append((int(entry.name), (entry / "cmdline").read_bytes().decode(errors="replace")))
            elif comm == "postgres" or comm.startswith("postgres:"):
                found["postgres"].append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
    ours = [pid for pid, cmd in jvms if f"http.port={harness.OPENSEARCH_PORT}\0" in cmd + "\0"]
    found["opensearch"] = ours or [pid for pid, _ in jvms]
    return found


def threads(pid: int) -> list[int]:
    try:
        return [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def set_affinity(pids: list[int], cpus: set[int], saved: dict[int, set[int]] | None = None) -> int:
    """Every thread of `pids` onto `cpus`; the previous masks go into `saved`. Returns the threads set."""
    done = 0
    for pid in pids:
        for tid in threads(pid):
            try:
                if saved is not None and tid not in saved:
                    saved[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, cpus)
                done += 1
            except (ProcessLookupError, FileNotFoundError):
                continue  # a thread or backend that ended meanwhile
    return done


@contextmanager
def pinned(sink_cpu: int = 0, rest_cpu: int = 1) -> Iterator[dict[str, object]]:
    """OpenSearch on `sink_cpu`; PostgreSQL and this process (so flusso, bench/e2e.py and the
    writers it starts) on `rest_cpu`; everything as it was on exit."""
    if len(os.sched_getaffinity(0)) < 2 or max(sink_cpu, rest_cpu) >= (os.cpu_count() or 1):
        raise SystemExit(f"--pin needs cores {sink_cpu} and {rest_cpu}; this machine has {os.cpu_count()}")
    saved: dict[int, set[int]] = {}
    mine = os.sched_getaffinity(0)
    pids = service_pids()
    if not pids["opensearch"] or not pids["postgres"]:
        raise SystemExit(f"--pin found no OpenSearch JVM or no PostgreSQL process: {pids}")
    original = {name: os.sched_getaffinity(found[0]) for name, found in pids.items()}
    info = {"sink_cpu": sink_cpu, "rest_cpu": rest_cpu,
            "opensearch_threads": set_affinity(pids["opensearch"], {sink_cpu}, saved),
            "postgres_threads": set_affinity(pids["postgres"], {rest_cpu}, saved)}
    os.sched_setaffinity(0, {rest_cpu})
    harness.log(f"pinned: OpenSearch on core {sink_cpu}, PostgreSQL, flusso and the writers on core {rest_cpu}")
    try:
        yield info
    finally:
        os.sched_setaffinity(0, mine)
        restore = dict(saved)
        for name, found in service_pids().items():  # threads and backends started meanwhile
            for pid in found:
                restore.update({tid: original[name] for tid in threads(pid) if tid not in saved})
        for tid, cpus in restore.items():
            try:
                os.sched_setaffinity(tid, cpus)
            except (ProcessLookupError, FileNotFoundError):
                continue
        harness.log("unpinned: every service's threads are back on their cores")
