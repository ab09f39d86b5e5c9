"""bench/RESULTS.md's kafka section (issue #15) from bench/results/kafka-*.json (bench/kafka.py).

`write` replaces that section alone (from its `## kafka` heading to the next `## ` heading), or puts
it before the notes when there is none yet (after the polling section): the file's other sections,
some of them written by hand, stay as they are. bench/report.py's `write_all` takes the same section.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sections import BEFORE, splice_section

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
REPORT = ROOT / "bench" / "RESULTS.md"
HEADING = "## kafka: the Kafka queue beside the channel (issue #15)"

INTRO = """`make bench-kafka` (bench/kafka.py; `python bench/run.py --scenario kafka`), in a database of its
own, with the shared broker of services/kafka.sh on the same 2 cores as PostgreSQL and OpenSearch.
**Live**: bench/e2e.py's live measurement (its mix, markers, poller every 50 ms, fence and drain;
every subtitle update a sample; `max` is 2 writers unpaced) for three setups, each on an index
backfilled first, with the index's default 1 s refresh: `channel` (one `flusso run`), `kafka-1`
(`flusso run --role capture` and one `--role worker`), `kafka-2` (the capture and two workers over
a topic of 2 partitions). With Kafka the drain also waits for the group's lag to reach 0 ("lag 0 +s":
the fence shows only that its own partition's worker is through). CPU per 1,000 changes is per
process over each rate's whole call (a 2 s quiet check, the writes, the drain), over the changes
the engine flushed; the broker's share is the shared broker's, other users' traffic included.
**Backlog**: the capture role live and no worker running, the writers commit the backlog (the e2e
mix, unpaced), which the capture puts into Kafka (the backlog sits in the topic, not in the slot);
once the slot is acknowledged past its last change, 1 or 2 workers start, and the catch-up ends
when the group's committed offsets reach the topic's end (lag 0); changes/s from the workers'
start (process start and group join included) and from the moment the group held every
partition. "busy" is the share of the 2 cores in use just before (other users' tests included)."""


def load() -> list[dict[str, Any]]:
    out = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("kafka-*.json"))]
    return sorted((r for r in out if r.get("benchmark") == "kafka"), key=lambda r: r.get("started_at", ""))


def _n(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}" if isinstance(v, (int, float)) else str(v)


def _procs(d: dict[str, float], digits: int = 2) -> str:
    return ", ".join(f"{k} {_n(v, digits)}" for k, v in d.items()) or "-"


def live_table(live: dict[str, Any]) -> list[str]:
    lines = ["| setup | offered/s | written/s | sustained/s | p50 ms | p95 ms | p99 ms | max ms | samples | drain s "
             "| lag 0 +s | kept up | busy | check |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |"]
    for setup, run in live.items():
        for r in run.get("rates", []):
            lat = r["latency_ms"]
            unseen = f" (+{lat['missing']} unseen)" if lat["missing"] else ""
            lines.append(
                f"| {setup} | {r['rate']} | {_n(r['writer']['achieved_per_s'])} | {_n(r['sustained_per_s'])} "
                f"| {_n(lat['p50'])} | {_n(lat['p95'])} | **{_n(lat['p99'])}** | {_n(lat['max'])} "
                f"| {lat['samples']}{unseen} | {_n(r['drain_s'], 1)} | {_n(r.get('lag_zero_extra_s'), 1)} "
                f"| {r['kept_up']} | {100 * r['machine_busy_before']:.0f}% "
                f"| {r['check']['differing']}/{r['check']['checked']} |")
    return lines


def cost_table(live: dict[str, Any]) -> list[str]:
    lines = ["| setup | offered/s | CPU s per 1,000 changes, by process | PostgreSQL | OpenSearch | peak RSS MB |",
             "| --- | ---: | --- | ---: | ---: | --- |"]
    for setup, run in live.items():
        for r in run.get("rates", []):
            groups = r.get("cpu_s_per_1000_changes", {})
            lines.append(f"| {setup} | {r['rate']} | {_procs(r.get('cpu_s_per_1000_changes_by_process', {}), 3)} "
                         f"| {_n(groups.get('postgres'), 3)} | {_n(groups.get('opensearch'), 3)} "
                         f"| {_procs(run.get('peak_rss_mb', {}), 0)} |")
    return lines


def backlog_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| workers | changes written | messages | into Kafka s | group formed s | catch-up s | changes/s "
             "| after the group formed /s | worker peak RSS MB | worker CPU s / 1,000 | capture CPU s / 1,000 "
             "| PostgreSQL / OpenSearch CPU s / 1,000 | busy | check |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | --- |"]
    for b in rows:
        groups = b.get("cpu_s_per_1000_changes", {})
        lines.append(
            f"| {b['workers']} | {_n(b['changes_written'])} | {_n(b['messages'])} | {_n(b['in_kafka_s'], 1)} "
            f"| {_n(b['group_formed_s'], 1)} | {_n(b['catch_up_s'], 1)} | **{_n(b['changes_per_s'])}** "
            f"| {_n(b['changes_per_s_after_join'])} | {_procs(b['worker_peak_rss_mb'], 0)} "
            f"| {_procs(b['worker_cpu_s_per_1000_changes'], 3)} | {_n(b['capture_cpu_s_per_1000_changes'], 3)} "
            f"| {_n(groups.get('postgres'), 3)} / {_n(groups.get('opensearch'), 3)} "
            f"| {100 * b['machine_busy_before_workers']:.0f}% | {b['check']['differing']}/{b['check']['checked']} |")
    return lines


def _at(run: dict[str, Any], rate: str) -> dict[str, Any] | None:
    return next((r for r in run.get("rates", []) if r["rate"] == rate), None)


def _live_reading(live: dict[str, Any]) -> str:
    rates = [x["rate"] for x in live.get("channel", {}).get("rates", [])]
    gaps = []
    for rate in rates:
        got = {s: _at(live.get(s, {}), rate) for s in live}
        if all(g and g["latency_ms"]["p99"] is not None for g in got.values()):
            gaps.append(f"at {rate}/s p50 " + " / ".join(f"{g['latency_ms']['p50']:,}" for g in got.values())
                        + " ms, p99 " + " / ".join(f"{g['latency_ms']['p99']:,}" for g in got.values())
                        + " ms, written " + " / ".join(_n(g["writer"]["achieved_per_s"]) for g in got.values())
                        + "/s, sustained " + " / ".join(_n(g["sustained_per_s"]) for g in got.values())
                        + "/s, busy before " + " / ".join(f"{100 * g['machine_busy_before']:.0f}%"
                                                           for g in got.values()))
    return ("Live, " + " / ".join(live) + ": " + ("; ".join(gaps) if gaps else "not measured") + ". "
            "With Kafka a change takes two more hops (the capture's produce, acknowledged by the broker, "
            "and the worker's fetch) and the worker's batch closes on its own `max_delay_ms`; at a paced "
            "rate on a quiet machine that is tens of milliseconds beside the 1 s refresh that dominates "
            "every figure, so differences of hundreds of ms between setups at 200 and 500/s are mostly the "
            "machine's load (the \"busy\" share, other users' tests). At `max` the writers themselves get "
            "fewer commits with Kafka: the broker and the extra processes take CPU from the same 2 cores, "
            "and the engine then lags the writers (sustained below written, latencies of seconds).")


def _backlog_reading(rows: list[dict[str, Any]]) -> str:
    by = {b["workers"]: b for b in rows}
    if not by:
        return "Backlog catch-up: not measured."
    text = "Backlog catch-up: " + ", ".join(
        f"{w} worker{'s' if w > 1 else ''} {_n(b['changes_per_s'])} changes/s from their start "
        f"({_n(b['changes_per_s_after_join'])}/s once the group held every partition, after "
        f"{_n(b['group_formed_s'], 1)} s)" for w, b in by.items())
    if 1 in by and 2 in by and by[1]["changes_per_s"] and by[2]["changes_per_s"]:
        text += f": the second worker gives x{by[2]['changes_per_s'] / by[1]['changes_per_s']:.2f} on these 2 cores"
    where = []
    for w, b in by.items():
        cpu, secs = b.get("cpu_s"), b.get("catch_up_s")
        if cpu and secs:
            workers = sum(b["worker_cpu_s"].values())
            where.append(f"with {w}: {cpu['machine_busy'] / secs:.2f} of the 2 cores busy, OpenSearch "
                         f"{cpu['opensearch'] / secs:.2f}, PostgreSQL {cpu['postgres'] / secs:.2f}, the "
                         f"worker{'s' if w > 1 else ''} {workers / secs:.2f}")
    return (text + ". A worker's own CPU is small beside the work it asks for (its builds run in "
            "PostgreSQL, its bulk requests in OpenSearch): what a second worker adds here is a second "
            "build and flush in flight, which the two shared cores serve only partly"
            + (" (during the catch-up, " + "; ".join(where) + ": the machine is full, OpenSearch's "
               "indexing the largest share)" if where else "")
            + ". The capture role put the backlog into Kafka as fast as the writers committed it "
            "(\"into Kafka s\").")


def reading(r: dict[str, Any]) -> list[str]:
    """What the figures say, with this run's numbers, and what a second machine would add."""
    by = {b["workers"]: b for b in r.get("backlog", [])}
    capture = "/".join(_n(b["capture_cpu_s_per_1000_changes"], 2) for b in by.values()) or "-"
    return [
        *([_live_reading(r["live"]), ""] if r.get("live") else []), _backlog_reading(r.get("backlog", [])), "",
        "What a second machine would add: here the capture, the workers, the broker, PostgreSQL and "
        "OpenSearch share the same 2 cores, so a second worker mostly competes with them for CPU, and "
        "these tables show how much of the engine's work runs in parallel on a busy 2-core box, not "
        "scale-out. Workers on another machine take the resolve/build/flush CPU (and the fetch) off the "
        f"capture's machine, leaving there the capture role's own ~{capture} CPU s per 1,000 changes (WAL "
        "decoding and producing) and the broker's share; each worker there gets cores of its own. The "
        "documents are still built by PostgreSQL and indexed by OpenSearch, so once the workers no longer "
        "compete with them the catch-up is bounded by those two (more workers add builds and bulk requests "
        "in flight, up to the topic's partitions). Not measured: this is one machine.",
    ]


def section(results: list[dict[str, Any]]) -> list[str]:
    if not results:
        return []
    lines = [HEADING, "", INTRO, ""]
    for r in results:
        p, m = r["parameters"], r["machine"]
        lines += [f"### {r['name']}: {p['books']:,} books", "",
                  f"commit `{r['commit'][:10]}`{' (dirty)' if r.get('dirty') else ''}, {m['nproc']} cores, "
                  f"started {r['started_at']}, whole run {r.get('elapsed_s')} s; live {p['live_seconds']:g} s per "
                  f"rate over {p['live_writers']} writers, drain timeout {p['drain_timeout']:g} s; topic of "
                  f"{p['partitions']} partitions; backlog {p['backlog']:,} changes. One run, on the shared 2-core "
                  "machine beside other users' tests (see \"busy\")." + (f" {r['note']}" if r.get("note") else ""),
                  ""]
        if r.get("live"):
            lines += ["Live, commit to searchable:", ""] + live_table(r["live"]) + [""]
            lines += ["Live, what each process costs:", ""] + cost_table(r["live"]) + [""]
        if r.get("backlog"):
            lines += ["Backlog catch-up from Kafka:", ""] + backlog_table(r["backlog"]) + [""]
        lines += reading(r) + [""]
    if len(results) > 1:
        lines += [summary(results), ""]
    return lines


def summary(results: list[dict[str, Any]]) -> str:
    """The runs side by side: how far one run's figures can be trusted on the shared machine."""
    parts = []
    for w in (1, 2):
        got = [_n(b["changes_per_s"]) for r in results for b in r.get("backlog", []) if b["workers"] == w]
        if got:
            parts.append(f"backlog catch-up with {w} worker{'s' if w > 1 else ''} " + " / ".join(got) + " changes/s")
    for setup in ("channel", "kafka-1", "kafka-2"):
        got = [f"{x['latency_ms']['p50']:,}/{x['latency_ms']['p99']:,}" for r in results
               for x in r.get("live", {}).get(setup, {}).get("rates", []) if x["rate"] == "500"]
        if got:
            parts.append(f"{setup} p50/p99 at 500/s " + " and ".join(got) + " ms")
    extra = []
    for r in results:
        live, mine = r.get("live", {}), []
        for setup in ("kafka-1", "kafka-2"):
            for rate in ("200", "500"):
                a, b = _at(live.get("channel", {}), rate), _at(live.get(setup, {}), rate)
                if a and b and a["latency_ms"]["p50"] is not None and b["latency_ms"]["p50"] is not None:
                    mine.append(f"{setup} {rate}/s {b['latency_ms']['p50'] - a['latency_ms']['p50']:+,}")
        if mine:
            extra.append(f"{r['name']} " + ", ".join(mine))
    return ("**Across the runs** (" + ", ".join(r["name"] for r in results) + "): " + "; ".join(parts) + ". "
            "p50 with Kafka minus the channel's: " + ("; ".join(extra) or "-") + " ms (the larger "
            "gaps came with the machine busier before the rate, see \"busy\"). On 2 shared cores a second "
            "worker's catch-up gain is within the noise between runs: the machine is full during a "
            "catch-up, OpenSearch's indexing first.")


def splice(text: str, lines: list[str]) -> str:
    """`text` with its kafka section replaced by `lines` (or `lines` put before the notes)."""
    return splice_section(text, HEADING, lines, BEFORE)


def write(results: list[dict[str, Any]]) -> None:
    REPORT.write_text(splice(REPORT.read_text() if REPORT.exists() else "", section(results)))


if __name__ == "__main__":
    write(load())
