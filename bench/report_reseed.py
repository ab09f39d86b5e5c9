"""The `reseed` section of bench/RESULTS.md and its plots, from bench/results/reseed-*.json (bench/reseed.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

ABOUT = """`make bench-reseed` (bench/reseed.py; `python bench/run.py --scenario reseed`): the bookstore
generated afresh, seeded by a first `flusso backfill`, then `flusso run` live in a child process,
writers committing random DML to every table (books and child rows inserted, updated, deleted;
bench/dml.py), and `flusso backfill --force --index NAME` run beside them, timed. A poller searches
(`match_all`, size 1) and counts the index by its configured name every 50 ms, with the root
table's `count(*)` (every 200 ms, on a connection of its own) paired with each poll. From the
reseed's start to 3 s after it exits: the longest gap between successful searches, the failed polls
(404 or other, by status), the lowest count with the root rows at that moment, the largest shortfall
`root rows - count`; "before" is the same over the seconds before the reseed (what live lag and
the 1 s refresh alone give). raw is bench/raw.py on the same rows, built like a generation
(`refresh_interval: -1`, `number_of_replicas: 0`, then the configured settings and a refresh).
Converged: after the writers stop and the slot is acknowledged past a last commit, the count equals
the root rows and a sample of the touched documents equals a fresh build. One run each, on the
shared 2-core machine: three 100k runs of the same reseed (before issue #12) gave 27-41 s wall and
longest gaps of 301-753 ms, so compare orders of magnitude (a gap of ~50 ms is the poll interval)."""


def _n(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}" if isinstance(v, int | float) else str(v)


def load() -> list[dict]:
    runs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("reseed-*.json"))]
    return sorted((r for r in runs if r.get("benchmark") == "reseed"), key=lambda r: r.get("started_at", ""))


def row(r: dict) -> str:
    s, q, b = r["reseed"], r["probe"]["reseed"], r["probe"]["before"]
    failed = ", ".join(f"{k}: {v}" for k, v in sorted(q["failed_by_status"].items()))
    after = r.get("after", {})
    return (f"| {r['name']} | `{r['commit'][:10]}`{' (dirty)' if r.get('dirty') else ''} | {r['books']:,} | "
            f"{_n(r['writer']['achieved_per_s'])} | {s['wall_s']} | {_n(s['docs_per_s'])} | "
            f"{_n(r['raw']['docs_per_s'])} | **{_n(r.get('ratio_over_raw'), 2)}** | "
            f"**{_n(q['longest_gap_ms'])}** ({_n(b['longest_gap_ms'])}) | "
            f"{q['failed_polls']} of {q['polls']}{f' ({failed})' if failed else ''} | "
            f"**{_n(q['min_count'])}** ({_n(q['root_rows_at_min_count'])}) | "
            f"{_n(q['max_shortfall'])} ({_n(b['max_shortfall'])}) | {after.get('converged')} | {r.get('note') or ''} |")


def section(runs: list[dict], images: list[str]) -> list[str]:
    if not runs:
        return []
    out = ["## reseed: a forced reseed under live writes (issue #12)", "", ABOUT, "",
           "| run | commit | books | writes/s | reseed wall s | docs/s | raw docs/s | reseed/raw | longest gap ms "
           "(before) | failed polls | min count (root rows then) | max shortfall (before) | converged | note |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | --- |"]
    out += [row(r) for r in runs]
    out.append("")
    for r in runs:
        m, p = r["machine"], r["parameters"]
        out.append(f"- {r['name']}: {m['nproc']} cores, started {r['started_at']}; {p['writers']} writers at "
                   f"{p['rate']:g} commits/s offered ({r['writer']['errors']} failed), poll every {p['poll_ms']:g} ms; "
                   f"reseed exit {r['reseed']['exit_code']}, {_n(r['reseed']['documents'])} documents of "
                   f"{_n(r['reseed'].get('rows'))} rows, peak RSS {r['reseed']['peak_rss_mb']} MB; live capture exit "
                   f"{r['live'].get('exit_code')}, {r['live']['notices_during_reseed']['count']} warnings/errors in "
                   f"its log during the reseed; after: count {_n(r['after']['count'])}, root rows "
                   f"{_n(r['after']['root_rows'])}, {r['after']['check']['differing']}/"
                   f"{r['after']['check']['checked']} touched documents differ.")
    out += [""] + [f"![{name}](results/{name})" for name in images] + [""]
    return out


def plots(runs: list[dict]) -> list[str]:
    """Per run: the count and the root rows over time, failed polls marked, the reseed shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for r in runs:
        tl = r.get("timeline") or []
        if not tl:
            continue
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ok = [p for p in tl if p[2] == "200"]
        ax.plot([p[0] for p in tl if p[4] is not None], [p[4] for p in tl if p[4] is not None], color="#888",
                lw=1, label="root rows (PostgreSQL)")
        ax.plot([p[0] for p in ok], [p[3] for p in ok], color="#2a7", lw=1.2, label="count (OpenSearch)")
        failed = [p[0] for p in tl if p[1] != "200" or p[2] != "200"]
        if failed:
            ax.plot(failed, [0] * len(failed), "x", color="#c33", ms=4, label="failed poll")
        ax.axvspan(0, r["reseed"]["wall_s"], color="#fc6", alpha=0.25, label="flusso backfill --force")
        ax.set_xlabel("s from the reseed's start")
        ax.set_ylabel("documents / rows")
        ax.set_title(f"{r['name']}: {r['books']:,} books, {r['writer']['achieved_per_s']:g} commits/s "
                     f"({r['commit'][:8]})", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        name = f"{r['name']}.png"
        fig.savefig(RESULTS / name, dpi=100)
        plt.close(fig)
        made.append(name)
    return made
