"""Benchmark results are committed: none may hold a password (issue #18, "no secret anywhere")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
PASSWORD = re.compile(r"://[^/\s:@\"']+:(?!\*\*\*@)[^/\s@\"']+@|password=(?!\*\*\*)")


@pytest.mark.parametrize("path", sorted([*BENCH.glob("results/*.json"), BENCH / "RESULTS.md"]), ids=lambda p: p.name)
def test_no_password_in_benchmark_results(path: Path) -> None:
    found = PASSWORD.search(path.read_text())
    assert found is None, f"{path.name} holds a password: ...{path.read_text()[found.start() - 20:found.end() + 10]}..."


def test_the_results_writers_hide_a_dsn_password() -> None:
    import sys

    sys.path.insert(0, str(BENCH))
    import harness

    shown = harness.public({"dsn": "postgresql://postgres:s3cret@127.0.0.1:5432/db", "books": 10})
    assert "s3cret" not in shown["dsn"] and shown["books"] == 10


def _report_polling():  # noqa: ANN202 - the module, imported the way bench/ imports its own
    import sys

    sys.path.insert(0, str(BENCH))
    import report_polling

    return report_polling


def _polling_result(name: str, p50: int) -> dict:
    cell = {"commits_per_s": 1000.0, "seconds": 15.0, "overhead_pct": 0.0, "cpu_s": {"other": 3.0}}
    rate = {"rate": "50", "writer": {"achieved_per_s": 50.0}, "drain_s": 1.2, "kept_up": True,
            "latency_ms": {"samples": 300, "missing": 0, "p50": p50, "p95": 2000, "p99": 2500, "max": 2600},
            "engine_during_writes": {"mean_batch_ms": 230.0}, "check": {"differing": 0, "checked": 200}}
    return {"benchmark": "polling", "name": name, "commit": "0123456789abcdef", "dirty": False,
            "started_at": "2026-12-02T06:00:00", "elapsed_s": 480.0, "machine": {"nproc": 2}, "note": None,
            "parameters": {"books": 10000, "writer_seconds": 15.0, "live_seconds": 20.0, "live_writers": 2,
                           "poll_interval_ms": 200, "rates": [50.0]},
            "overhead": [{"workload": "update", "connections": 1,
                          "ways": {w: dict(cell) for w in ("none", "polling", "triggers", "wal")}}],
            "live": {"wal": {"rates": [dict(rate, latency_ms={**rate["latency_ms"], "p50": 1000})]},
                     "polling": {"rates": [rate]}}}


def test_the_polling_section_replaces_only_itself_and_keeps_the_hand_written_ones() -> None:
    rp = _report_polling()
    others = ["# flusso benchmarks", "", "## run-10000: 10,000 books", "", "a table", "",
              "## verify: written by hand", "", "its words", ""]
    notes = ["## Notes on the systems", "", "- notes", ""]
    before = "\n".join(others + notes)
    once = rp.splice(before, rp.section([_polling_result("polling-10000", 1200)]))
    assert once.startswith("\n".join(others)) and once.endswith("\n".join(notes))
    assert rp.HEADING in once and "+200 ms at p50" in once  # polling's p50 against the WAL's, 1,200 - 1,000
    again = rp.splice(once, rp.section([_polling_result("polling-10000", 1500)]))
    assert again.count(rp.HEADING) == 1 and "+500 ms at p50" in again and "+200 ms at p50" not in again
    assert again.startswith("\n".join(others)) and again.endswith("\n".join(notes))


def test_the_committed_polling_results_are_in_results_md_with_both_captures() -> None:
    rp = _report_polling()
    results = rp.load()
    if not results:
        pytest.skip("no bench/results/polling-*.json yet (make bench-polling)")
    text = (BENCH / "RESULTS.md").read_text()
    assert "\n".join(rp.section(results)) in text  # RESULTS.md shows what the JSON holds
    for r in results:
        assert {w for row in r["overhead"] for w in row["ways"]} == {"none", "polling", "triggers", "wal"}
        for capture in ("wal", "polling"):
            rates = {x["rate"]: x["latency_ms"] for x in r["live"][capture]["rates"]}
            assert {"50", "200"} <= set(rates) and all(v["p50"] and v["p99"] for v in rates.values())


def test_regenerating_the_results_keeps_the_hand_written_sections_where_they_were() -> None:
    import sys

    sys.path.insert(0, str(BENCH))
    import report

    old = "\n".join(["# flusso benchmarks", "", "old intro", "", "## run-10000: 10,000 books", "", "old table", "",
                     "## verify: by hand", "", "its words", "", "## Notes on the systems", "", "- old notes", "",
                     "## Plots", "", "![a](results/a.png)", "", "## Plugins: by hand too", "", "more words", ""])
    generated = ["# flusso benchmarks", "", "new intro", "", "## run-10000: 10,000 books", "", "new table", "",
                 "## run-100000: 100,000 books", "", "a new run", "", "## Notes on the systems", "", "- new notes",
                 "", "## Plots", "", "![b](results/b.png)", ""]
    text = report.splice(old, generated)
    heads = [line for line in text.splitlines() if line.startswith("#")]
    assert heads == ["# flusso benchmarks", "## run-10000: 10,000 books", "## verify: by hand",
                     "## run-100000: 100,000 books", "## Notes on the systems", "## Plots", "## Plugins: by hand too"]
    assert "new table" in text and "its words" in text and "more words" in text and "- new notes" in text
    assert "old table" not in text and "old intro" not in text and "results/a.png" not in text
    assert report.splice(text, generated) == text


def test_the_live_section_names_the_highest_rate_kept_up_under_the_p99_target() -> None:
    import sys

    sys.path.insert(0, str(BENCH))
    import report

    def rate(offered: str, sustained: float, p99: int, kept: bool = True) -> dict:
        return {"rate": offered, "sustained_per_s": sustained, "kept_up": kept, "documents_per_s": sustained * 2,
                "latency_ms": {"p99": p99}}

    rates = [rate("50", 50, 1100), rate("200", 199, 1400), rate("500", 480, 2900), rate("max", 900, 1000, False)]
    line = report.kept_up(rates, raw_docs_per_s=1000.0)
    assert line.startswith("Highest rate kept up with p99 < 1.5 s: 200 changes/s offered (199/s sustained, "
                           "398 documents/s) = **0.40 x** raw's 1,000 docs/s")
    assert report.kept_up(rates[2:], 1000.0) == "Highest rate kept up with p99 < 1.5 s: none of the rates offered here."
