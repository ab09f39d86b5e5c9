"""`make bench-kafka` (issue #15): the Kafka queue beside the channel, live and through a backlog.

    python bench/run.py --scenario kafka [--books 10000] [--kafka-database flusso_bench_kafka]
                        [--kafka-rates 200,500,max] [--kafka-seconds 20] [--kafka-backlog 100000]
                        [--kafka-partitions 2] [--kafka-bootstrap 127.0.0.1:9092] [--note TEXT]

1. **Live.** bench/e2e.py's live measurement (`e2e.live_rate`: its writers, mix, markers, poller,
   fence and drain; every subtitle update a latency sample) at `--kafka-rates` changes/s, for three
   setups, each on an index `flusso backfill` seeded first, with the index's default 1 s refresh:
   `channel` (one `flusso run`), `kafka-1` (`flusso run --role capture` and one `--role worker`),
   `kafka-2` (the capture and two workers; the topic has `--kafka-partitions` >= 2). With Kafka the
   drain also waits until the group's lag is 0 (the fence shows only its own partition's worker is
   through). Per process (flusso, or the capture and each worker; the Kafka broker beside them) the
   CPU seconds over each rate's whole call (the 2 s quiet check, the writes, the drain) per 1,000
   changes the engine flushed, and each one's peak RSS over the setup.
2. **Backlog catch-up.** The capture role live, no worker running: the writers commit
   `--kafka-backlog` changes (the e2e mix, unpaced), which the capture puts into the topic (the
   backlog sits in Kafka, not in the slot: what scale-out is about); once the slot is acknowledged
   past the last one, 1 (then, in a setup of its own, 2) workers start, and the catch-up ends when
   the group's committed offsets reach the topic's end (lag 0). Changes/s from the workers' start,
   and from the moment the group was formed; per worker peak RSS and CPU per 1,000 changes; then a
   sample of touched documents is compared with a fresh build.

The database (`--kafka-database`) and the slots, indexes, topics and groups (`bench_kafka_*`, a
fresh topic per setup, deleted after) are this scenario's own. Writes bench/results/kafka-<books>.json
(`--name`) and puts its section into bench/RESULTS.md (bench/report_kafka.py), leaving the others.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from opensearchpy import OpenSearch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e  # noqa: E402
import harness  # noqa: E402
import report_kafka  # noqa: E402
import workload  # noqa: E402

from flusso_engine.queue.kafka.lag import group_lag, group_members  # noqa: E402

PREFIX = "bench_kafka"
SETUPS = {"channel": 0, "kafka-1": 1, "kafka-2": 2}  # setup: workers (0: the channel, one process)


@dataclass
class Params:
    books: int = 10_000
    database: str = "flusso_bench_kafka"
    dsn: str = harness.DEFAULT_DSN
    opensearch: str = harness.DEFAULT_OPENSEARCH
    bootstrap: str = "127.0.0.1:9092"
    partitions: int = 2
    rates: tuple[float | None, ...] = (200.0, 500.0, None)
    live_seconds: float = 20.0
    live_writers: int = 2
    drain_timeout: float = 30.0
    backlog: int = 100_000
    backlog_workers: tuple[int, ...] = (1, 2)
    backlog_timeout: float = 600.0
    quiet: float = 0.35
    quiet_timeout: float = 10.0
    seed: int = 42


class Logs:
    """Several processes' logs read as one (e2e's `log_lines` reads `.read_text()`): the workers' flushes."""

    def __init__(self, *paths: Path) -> None:
        self.paths = paths

    def read_text(self, errors: str = "strict") -> str:
        return "\n".join(p.read_text(errors=errors) for p in self.paths)


def broker_pid() -> int | None:
    """The local Kafka broker's JVM (services/kafka.sh's main class; shared with other users, so its
    CPU is Kafka's work for them too)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "\0kafka.Kafka\0" in cmd:
                return int(entry.name)
    return None


class Setup:
    """One setup's config (its own slot, index, topic and group), its processes, and its clean-up."""

    def __init__(self, p: Params, dsn: str, name: str, workers: int, workdir: Path) -> None:
        self.p, self.name, self.workers, self.workdir = p, name, workers, workdir
        self.slot = f"{PREFIX}_{name.replace('-', '_')}"
        self.topic = f"{self.slot}_{uuid.uuid4().hex[:8]}"
        self.group = f"{self.topic}_workers"
        self.client = OpenSearch(hosts=[p.opensearch], timeout=60)
        self.config, self.index = harness.write_config(workdir / f"{self.slot}.yaml", dsn, p.opensearch, self.slot)
        if workers or name.startswith("backlog"):
            raw = yaml.safe_load(self.config.read_text())
            raw["queue"] = {"type": "kafka", "bootstrap": p.bootstrap, "topic": self.topic,
                            "partitions": p.partitions, "group": self.group}
            self.config.write_text(yaml.safe_dump(raw, sort_keys=False))
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def start(self, role: str | None, label: str) -> subprocess.Popen:
        """`flusso --log-level DEBUG run [--role ROLE]` as a child, logging to `<label>.log`."""
        path = self.workdir / f"{self.slot}-{label}.log"
        with path.open("w") as out:
            proc = subprocess.Popen([*harness.FLUSSO, "--log-level", "DEBUG", "run", "-c", str(self.config),
                                     *(["--role", role] if role else [])], stdout=out, stderr=subprocess.STDOUT,
                                    cwd=harness.ROOT)
        self.procs[label], self.logs[label] = proc, path
        return proc

    def wait_log(self, label: str, text: str, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.logs[label].read_text(errors="replace"):
            if self.procs[label].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{label} did not log {text!r}:\n{self.logs[label].read_text()[-3000:]}")
            time.sleep(0.1)

    def wait_group(self, members: int, timeout: float = 90.0) -> float:
        """Until the group has `members` members holding every partition; the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                found = group_members(self.p.bootstrap, self.topic, self.group)
            except Exception:  # noqa: BLE001 - the group may not exist yet
                found = []
            if len(found) == members and sum(len(m["partitions"]) for m in found) == self.p.partitions \
                    and all(m["partitions"] for m in found):
                return time.monotonic() - started
            time.sleep(0.3)
        raise RuntimeError(f"group {self.group} did not reach {members} members with partitions in {timeout:.0f} s")

    def lag(self) -> int | None:
        return group_lag(self.p.bootstrap, self.topic, self.group).get("lag")

    def wait_lag_zero(self, timeout: float, every: float = 0.25) -> float | None:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.lag() == 0:
                return time.monotonic() - started
            time.sleep(every)
        return None

    def topic_end(self) -> int:
        """Messages in the topic (the sum of its partitions' end offsets: it starts empty)."""
        probe = Consumer({"bootstrap.servers": self.p.bootstrap, "group.id": f"{self.group}_probe"})
        try:
            return sum(probe.get_watermark_offsets(TopicPartition(self.topic, n), timeout=10)[1]
                       for n in range(self.p.partitions))
        finally:
            probe.close()

    def stop(self, *labels: str) -> None:
        for label in labels or list(self.procs):
            harness.stop_process(self.procs.pop(label))

    def drop(self) -> None:
        """The processes, the slot (`flusso teardown`), the index, the topic and the group."""
        self.stop()
        done = harness.flusso("teardown", "--yes", config=self.config)
        if done.returncode != 0:
            harness.log(f"flusso teardown ({self.name}) exited {done.returncode}: {done.stderr[-1000:]}")
        harness.drop_index(self.client, self.index)
        if self.workers or self.name.startswith("backlog"):
            admin = AdminClient({"bootstrap.servers": self.p.bootstrap})
            for future in [*admin.delete_topics([self.topic], operation_timeout=30).values(),
                           *admin.delete_consumer_groups([self.group], request_timeout=30).values()]:
                try:
                    future.result(30)
                except Exception:  # noqa: BLE001 - one never created
                    pass

    def backfill(self) -> None:
        done = harness.flusso("backfill", "--force", config=self.config, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"flusso backfill ({self.name}) exited {done.returncode}:\n{done.stderr[-3000:]}")

    def cpu(self, broker: int | None) -> dict[str, float]:
        out = {label: harness.cpu_seconds(proc.pid) for label, proc in self.procs.items()}
        if broker is not None:
            out["kafka_broker"] = harness.cpu_seconds(broker)
        return out

    def peak_rss_mb(self) -> dict[str, float]:
        return {label: round(harness.memory_kb(proc.pid).get("VmHWM", 0) / 1024, 1)
                for label, proc in self.procs.items()}


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before[k], 2) for k in after if k in before}


# --- 1. live ----------------------------------------------------------------------------------------


def live(p: Params, dsn: str, name: str, workers: int, workdir: Path) -> dict[str, Any]:
    """e2e's live rates for one setup, on an index backfilled first; per process CPU and RSS."""
    s = Setup(p, dsn, name, workers, workdir)
    s.drop()
    try:
        s.backfill()
        if workers == 0:
            s.start(None, "flusso")
            s.wait_log("flusso", "live capture started", 120)
            logs: Any = s.logs["flusso"]
        else:
            s.start("capture", "capture")
            s.wait_log("capture", "live capture started", 120)
            for n in range(1, workers + 1):
                s.start("worker", f"worker-{n}")
            joined = s.wait_group(workers)
            harness.log(f"   {name}: {workers} worker(s) hold the {p.partitions} partitions after {joined:.1f} s")
            logs = Logs(*(s.logs[f"worker-{n}"] for n in range(1, workers + 1)))
        main = next(iter(s.procs.values()))  # flusso, or the capture role
        args = argparse.Namespace(
            rates=list(p.rates), seconds=p.live_seconds, writers=p.live_writers, max_writers=2, sample_every=1,
            poll_ms=50.0, pool_every=10, keep_up_s=5.0, drain_timeout=p.drain_timeout, check=200, quiet=p.quiet,
            quiet_timeout=p.quiet_timeout, profile=None, seed=p.seed)
        pools = workload.Pools(dsn, args.pool_every)
        broker = broker_pid() if workers else None
        rates = []
        for i, rate in enumerate(p.rates):
            cpu0 = s.cpu(broker)
            r = e2e.live_rate(args, rate, logs, main.pid, dsn, s.slot, s.index, s.client, pools, s.config,
                              seq_start=(i + 1) * 10**8)
            if workers:  # the fence is one partition's: the others may still be behind it
                lag = s.lag()
                r["group_lag_after_drain"] = lag
                r["lag_zero_extra_s"] = 0.0 if lag == 0 else s.wait_lag_zero(p.drain_timeout)
            r["cpu_s_by_process"] = _delta(cpu0, s.cpu(broker))
            changes = r["engine_until_drained"]["changes"]
            r["cpu_s_per_1000_changes_by_process"] = harness.per_1000(r["cpu_s_by_process"], changes)
            lat = r["latency_ms"]
            harness.log(f"   {name} at {r['rate']}/s: p50 {lat['p50']} p99 {lat['p99']} ms, sustained "
                        f"{r['sustained_per_s']}/s, drain {r['drain_s']} s, "
                        f"CPU/1k {r['cpu_s_per_1000_changes_by_process']}")
            rates.append(r)
            for label, proc in s.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{label} exited {proc.returncode}:\n{s.logs[label].read_text()[-3000:]}")
        return {"setup": name, "workers": workers, "partitions": p.partitions if workers else None,
                "rates": rates, "peak_rss_mb": s.peak_rss_mb()}
    finally:
        s.drop()


# --- 2. backlog catch-up ----------------------------------------------------------------------------


def backlog(p: Params, dsn: str, workers: int, workdir: Path) -> dict[str, Any]:
    """A backlog of `p.backlog` changes put into Kafka with no worker running, then `workers` start."""
    s = Setup(p, dsn, f"backlog-{workers}", workers, workdir)
    s.drop()
    try:
        s.backfill()
        s.start("capture", "capture")
        s.wait_log("capture", "live capture started", 120)
        busy_before = harness.wait_quiet(p.quiet, p.quiet_timeout)
        pools, samples = workload.Pools(dsn, 10), workload.Samples()
        written, began = 0, time.monotonic()
        cap0 = harness.cpu_seconds(s.procs["capture"].pid)
        while written < p.backlog:
            seconds = min(10.0, max(2.0, (p.backlog - written) / 2000))  # ~2,000/s unpaced here: not far past
            w = workload.Writer(dsn, pools, samples, None, seconds, 2, 10**9, 10**8 + written, p.seed + written)
            written += w.run()["changes"]
        write_s = time.monotonic() - began
        with psycopg.connect(dsn, autocommit=True) as conn:
            lsn = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
        acked = harness.wait_confirmed(dsn, s.slot, lsn, p.backlog_timeout)
        in_kafka_s = None if acked is None else acked - began
        capture_cpu = harness.cpu_seconds(s.procs["capture"].pid) - cap0
        messages = s.topic_end()
        harness.log(f"   backlog: {written:,} changes written in {write_s:.0f} s, {messages:,} messages in "
                    f"{s.topic} after {in_kafka_s} s; starting {workers} worker(s)")
        busy_start = harness.wait_quiet(p.quiet, p.quiet_timeout)
        groups0 = harness.cpu_snapshot()
        started = time.monotonic()
        for n in range(1, workers + 1):
            s.start("worker", f"worker-{n}")
        cpu_started = {}
        for n in range(1, workers + 1):  # after the imports and the config: the work's CPU, not the start's
            s.wait_log(f"worker-{n}", "worker started", 120)
            cpu_started[f"worker-{n}"] = harness.cpu_seconds(s.procs[f"worker-{n}"].pid)
        s.wait_group(workers, timeout=120)
        joined = time.monotonic() - started
        lag_joined = s.lag() or 0  # the first worker works alone until the group has them all
        caught = s.wait_lag_zero(p.backlog_timeout, every=0.5)
        done = time.monotonic()
        groups = harness.cpu_delta(groups0, harness.cpu_snapshot())  # the workers are in "other" here
        cpu = _delta(cpu_started, {k: v for k, v in s.cpu(None).items() if k != "capture"})
        rss = s.peak_rss_mb()
        flushed = e2e.batch_stats(e2e.log_lines(Logs(*(s.logs[f"worker-{n}"] for n in range(1, workers + 1))),
                                                0, time.time()), done - started)
        for label in list(s.procs):
            if label.startswith("worker"):
                s.stop(label)
        ids = random.Random(p.seed).sample(range(1, pools.books + 1), min(200, pools.books))
        s.client.indices.refresh(index=s.index)
        check = harness.check_documents(harness.built_documents(s.config, s.index, ids), s.client, s.index, ids)
        total_s = None if caught is None else done - started
        after_join = None if caught is None else done - started - joined
        result = {
            "workers": workers, "partitions": p.partitions, "changes_written": written, "write_s": round(write_s, 1),
            "messages": messages, "in_kafka_s": round(in_kafka_s, 1) if in_kafka_s else None,
            "capture_cpu_s_per_1000_changes": round(1000 * capture_cpu / written, 3) if written else None,
            "capture_peak_rss_mb": rss.get("capture"),
            "machine_busy_before_writes": busy_before, "machine_busy_before_workers": busy_start,
            "group_formed_s": round(joined, 2), "lag_when_formed": lag_joined, "caught_up": caught is not None,
            "catch_up_s": round(total_s, 1) if total_s else None,
            "changes_per_s": round(messages / total_s, 1) if total_s else None,
            "changes_per_s_after_join": round(lag_joined / after_join, 1) if after_join and lag_joined else None,
            "worker_peak_rss_mb": {k: v for k, v in rss.items() if k != "capture"},
            "worker_cpu_s": cpu, "worker_cpu_s_per_1000_changes": harness.per_1000(cpu, messages),
            "cpu_s": groups, "cpu_s_per_1000_changes": harness.per_1000(groups, messages),
            "flushed": flushed, "check": check,
        }
        harness.log(f"   backlog with {workers} worker(s): {result['changes_per_s']} changes/s "
                    f"({result['catch_up_s']} s; {result['changes_per_s_after_join']}/s after the group formed), "
                    f"RSS {result['worker_peak_rss_mb']}, check {check['differing']}/{check['checked']}")
        return result
    finally:
        s.drop()


# --- the run ----------------------------------------------------------------------------------------


def run(p: Params, name: str, note: str | None = None) -> dict[str, Any]:
    started = time.monotonic()
    report: dict[str, Any] = {"benchmark": "kafka", "name": name, **harness.git_commit(),
                              "machine": harness.machine(), "started_at": datetime.now().isoformat(timespec="seconds"),
                              "parameters": harness.public(asdict(p)), "note": note}
    dsn, generated = harness.ensure_data(p.dsn, p.database, p.books, p.seed)
    report["generation_s"] = generated
    workdir = Path(tempfile.mkdtemp(prefix="flusso-bench-kafka-"))
    report["live"] = {}
    for setup, workers in SETUPS.items() if p.rates else ():
        harness.log(f"1. live: {setup} at {', '.join(workload.rate_label(r) for r in p.rates)} changes/s")
        report["live"][setup] = live(p, dsn, setup, workers, workdir)
    report["backlog"] = []
    for workers in p.backlog_workers if p.backlog else ():
        harness.log(f"2. backlog of {p.backlog:,} changes in Kafka, then {workers} worker(s)")
        report["backlog"].append(backlog(p, dsn, workers, workdir))
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    out = harness.ROOT / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    report_kafka.write(report_kafka.load())
    harness.log(f"wrote {out.relative_to(harness.ROOT)} and its section of bench/RESULTS.md in {report['elapsed_s']} s")
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This scenario's options (bench/run.py's `--scenario kafka` takes them too)."""
    parser.add_argument("--kafka-database", default=Params.database)
    parser.add_argument("--kafka-bootstrap", default=Params.bootstrap)
    parser.add_argument("--kafka-partitions", type=int, default=Params.partitions)
    parser.add_argument("--kafka-rates", default="200,500,max", help="live changes/s, comma-separated; max: unpaced")
    parser.add_argument("--kafka-seconds", type=float, default=Params.live_seconds, help="seconds of writes per rate")
    parser.add_argument("--kafka-drain-timeout", type=float, default=Params.drain_timeout)
    parser.add_argument("--kafka-backlog", type=int, default=Params.backlog, help="changes in the backlog (0: skip)")
    parser.add_argument("--kafka-backlog-workers", default="1,2")


def params(args: argparse.Namespace) -> Params:
    return Params(books=args.books, database=args.kafka_database, dsn=args.dsn, opensearch=args.opensearch,
                  bootstrap=args.kafka_bootstrap, partitions=args.kafka_partitions,
                  rates=tuple(harness.parse_rates(args.kafka_rates)), live_seconds=args.kafka_seconds,
                  drain_timeout=args.kafka_drain_timeout, backlog=args.kafka_backlog,
                  backlog_workers=tuple(int(w) for w in args.kafka_backlog_workers.split(",")),
                  quiet=getattr(args, "quiet", Params.quiet), quiet_timeout=getattr(args, "quiet_timeout", 10.0),
                  seed=getattr(args, "seed", 42))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--books", type=int, default=10_000)
    parser.add_argument("--name", default=None)
    parser.add_argument("--dsn", default=harness.DEFAULT_DSN)
    parser.add_argument("--opensearch", default=harness.DEFAULT_OPENSEARCH)
    parser.add_argument("--note", default=None)
    args = parser.parse_args()
    run(params(args), args.name or f"kafka-{args.books}", args.note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
