"""bench/RESULTS.md's polling section (issue #14) from bench/results/polling-*.json (bench/polling.py).

`write` replaces that section alone (from its `## polling` heading to the next `## ` heading), or
puts it before the notes when there is none yet: the file's other sections, some of them written
by hand, stay as they are. bench/report.py's `write_all` takes the same section, so a regenerated
file keeps it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sections import BEFORE, splice_section

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
REPORT = ROOT / "bench" / "RESULTS.md"
HEADING = "## polling: `capture: polling` beside `capture: wal` (issue #14)"
WAY_NAMES = {"polling": "polling + flusso", "triggers": "triggers only", "wal": "wal + flusso"}

INTRO = """`make bench-polling` (bench/polling.py; `python bench/run.py --scenario polling`), in a database of
its own. **Writer overhead**: a writer commits as fast as it can (closed loop, autocommit: each
statement its own transaction, waiting for its WAL flush: `synchronous_commit` on) for a fixed time
over 1 and 2 connections; `update` is single-row UPDATEs of a random book's subtitle, `mix` half
such updates, a quarter review inserts and a quarter deletes of the reviews it inserted. Each row is
measured four ways: `capture: polling` installed (triggers, change log) with `flusso run` live; then
no capture and the same triggers with flusso stopped (their cost alone), in alternating 1 s slices
(ABBA order, the row triggers disabled for the no-capture slices), so that both share the machine's
noise and each adjacent pair of slices gives one ratio (its interquartile range is shown as "pairs");
then `capture: wal` (publication, slot) with `flusso run` live, the slot active. Each flusso way
starts from nothing (teardown; `flusso run` backfills, goes live, then the writer starts) and is torn
down after, since an unpaced writer outruns flusso. The % is the change in commits/s against no
capture in the same row; "other load" is the share of the two cores that other users' processes
took meanwhile (the noise).
**Live latency**: bench/e2e.py's live measurement (its mix, markers, poller every 50 ms, fence and
drain; every subtitle update a sample) for `capture: wal` and then `capture: polling`
(`poll_interval_ms` 200) in the same run, each on an index backfilled first, with the index's
default 1 s refresh and the bookstore's `batch.max_delay_ms` 200."""


def load() -> list[dict[str, Any]]:
    out = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("polling-*.json"))]
    return [r for r in out if r.get("benchmark") == "polling"]


def _n(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}" if isinstance(v, (int, float)) else str(v)


def _change(c: dict[str, Any]) -> str:
    """The change in commits/s against no capture (`overhead_pct` is the share lost)."""
    pct = c.get("overhead_pct")
    return "-" if pct is None else f"{-pct:+.1f}%"


def _way(c: dict[str, Any]) -> str:
    pairs = c.get("pairs")
    spread = f"; pairs {pairs['p25_pct']:+.1f}..{pairs['p75_pct']:+.1f}%" if pairs else ""
    return f"{_n(c['commits_per_s'])} ({_change(c)}{spread})"


def overhead_table(rows: list[dict[str, Any]], cores: int) -> list[str]:
    lines = ["| workload | connections | no capture commits/s | " + " | ".join(WAY_NAMES.values())
             + " | other load |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        ways = r["ways"]
        lines.append(f"| {r['workload']} | {r['connections']} | {_n(ways['none']['commits_per_s'])} | "
                     + " | ".join(_way(ways[w]) for w in WAY_NAMES) + f" | {_other(r, cores)} |")
    return lines


def _other(row: dict[str, Any], cores: int) -> str:
    """The share of the machine that other users' processes took during the row's four cells: the noise."""
    cells = row["ways"].values()
    seconds = sum(c["seconds"] for c in cells)
    other = sum(max(0.0, c.get("cpu_s", {}).get("other", 0.0)) for c in cells)
    return f"{100 * other / (seconds * cores):.0f}%" if seconds else "-"


def live_table(live: dict[str, Any]) -> list[str]:
    lines = ["| capture | offered/s | written/s | p50 ms | p95 ms | p99 ms | max ms | samples | drain s | kept up "
             "| batch ms | check |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |"]
    for capture, run in live.items():
        for r in run.get("rates", []):
            lat, eng = r["latency_ms"], r["engine_during_writes"]
            unseen = f" (+{lat['missing']} unseen)" if lat["missing"] else ""
            lines.append(
                f"| {capture} | {r['rate']} | {_n(r['writer']['achieved_per_s'])} | {_n(lat['p50'])} "
                f"| {_n(lat['p95'])} "
                f"| **{_n(lat['p99'])}** | {_n(lat['max'])} | {lat['samples']}{unseen} | {_n(r['drain_s'], 1)} "
                f"| {r['kept_up']} "
                f"| {_n(eng['mean_batch_ms'])} | {r['check']['differing']}/{r['check']['checked']} |")
    return lines


def _rate(run: dict[str, Any], rate: str) -> dict[str, Any] | None:
    return next((r for r in run.get("rates", []) if r["rate"] == rate), None)


def reading(r: dict[str, Any]) -> list[str]:
    """What the figures mean, with this run's numbers."""
    p = r["parameters"]
    live = r.get("live", {})
    gaps = []
    for rate in (f"{x:g}" for x in p["rates"]):
        wal, poll = _rate(live.get("wal", {}), rate), _rate(live.get("polling", {}), rate)
        if wal and poll and wal["latency_ms"]["p50"] is not None and poll["latency_ms"]["p50"] is not None:
            gaps.append(f"{poll['latency_ms']['p50'] - wal['latency_ms']['p50']:+,} ms at p50 and "
                        f"{poll['latency_ms']['p99'] - wal['latency_ms']['p99']:+,} ms at p99 at {rate}/s")
    trig = [f"{row['workload']} x{row['connections']} {_change(row['ways']['triggers'])}"
            for row in r.get("overhead", [])]
    return [
        f"Where the latency goes: a polled change first waits for the next poll (every {p['poll_interval_ms']} "
        f"ms: {p['poll_interval_ms'] // 2} ms on average, plus the poll's query; the WAL streams a change within "
        "milliseconds of its commit). Then both wait for the batch to close: at these rates a batch never "
        "fills, so it closes `max_delay_ms` (200) after its first change; changes from the WAL arrive spread "
        "over that window (100 ms of it on average), a poll's arrive together at its start and wait nearly "
        f"all of it. So polling should cost half the poll interval and half `max_delay_ms` more "
        f"(~{p['poll_interval_ms'] // 2 + 100} ms here). Then the build "
        "and the bulk request (`batch ms`: the same work for both) and the refresh: every 1 s, 0.5 s on average "
        "plus the refresh itself, the largest share of either figure. Polling against the WAL in this run: "
        + ("; ".join(gaps) if gaps else "not measured")
        + f". A shorter `poll_interval_ms` takes up to {p['poll_interval_ms'] // 2} ms of it away on average, "
        "for one more indexed range query per poll.",
        "",
        "The triggers alone change the writer's commits/s by " + ", ".join(trig)
        + "; each of its statements also writes a change-log row (a heap tuple and an index entry, in "
        "the same WAL flush as its commit). With flusso live, both captures add what flusso, OpenSearch and "
        "the poll or the WAL decoding take of the same two cores.",
    ]


def section(results: list[dict[str, Any]]) -> list[str]:
    if not results:
        return []
    lines = [HEADING, "", INTRO, ""]
    for r in results:
        p, m = r["parameters"], r["machine"]
        lines += [f"### {r['name']}: {p['books']:,} books", "",
                  f"commit `{r['commit'][:10]}`{' (dirty)' if r.get('dirty') else ''}, {m['nproc']} cores, "
                  f"started {r['started_at']}, whole run {r.get('elapsed_s')} s; writer {p['writer_seconds']:g} s "
                  f"per cell, live {p['live_seconds']:g} s per rate over {p['live_writers']} writers. One run, on the "
                  "shared 2-core machine beside other users' tests (see \"other load\")."
                  + (f" {r['note']}" if r.get("note") else ""), ""]
        lines += ["Writer commits/s (and the change against no capture):", ""]
        lines += overhead_table(r["overhead"], m["nproc"] or 1) + [""]
        lines += ["Live, commit to searchable:", ""] + live_table(r["live"]) + [""]
        lines += reading(r) + [""]
    return lines


def splice(text: str, lines: list[str]) -> str:
    """`text` with its polling section replaced by `lines` (or `lines` put before the notes)."""
    return splice_section(text, HEADING, lines, BEFORE)


def write(results: list[dict[str, Any]]) -> None:
    REPORT.write_text(splice(REPORT.read_text() if REPORT.exists() else "", section(results)))


if __name__ == "__main__":
    write(load())
