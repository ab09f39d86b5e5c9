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
