"""The drift report: a pandas DataFrame of every drifted id, the summary by index and kind printed as
a table (rich), the first examples of each kind with the fields that differ, and the report file
(`.csv`, `.parquet` or `.html`, by its suffix)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..error import ConfigError, Problem
from .check import KINDS, IndexCheck

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

COLUMNS = ["index", "id", "kind", "stored_version", "built_position", "fields"]
SUFFIXES = (".csv", ".parquet", ".html")
EXAMPLES = 3


def drift_frame(checks: Sequence[IndexCheck]) -> pd.DataFrame:
    """One row per drifted id; `fields` is the differing paths, comma-separated (stale only)."""
    import pandas as pd

    rows = [(f.index, f.id, f.kind, f.stored_version, f.built_position, ", ".join(f.fields))
            for c in checks for f in c.findings]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype({"stored_version": "Int64", "built_position": "int64"})


def summary_frame(checks: Sequence[IndexCheck]) -> pd.DataFrame:
    """Per index: what was compared, and the drift by kind (zeros included)."""
    import pandas as pd

    frame = drift_frame(checks)
    counts = frame.groupby(["index", "kind"]).size().unstack(fill_value=0) if len(frame) else None
    rows = []
    for c in checks:
        by_kind = {k: int(counts.loc[c.index, k]) if counts is not None and c.index in counts.index
                   and k in counts.columns else 0 for k in KINDS}
        rate = (c.documents + c.rows) / c.seconds if c.seconds > 0 else 0.0
        rows.append({"index": c.index, "mode": c.mode, "rows": c.rows, "documents": c.documents,
                     "newer": c.newer, **by_kind, "seconds": round(c.seconds, 2), "ids/s": round(rate)})
    return pd.DataFrame(rows)


def check_report_path(path: str | None) -> None:
    """Refuse an unknown suffix before any work is done."""
    if path is not None and Path(path).suffix.lower() not in SUFFIXES:
        raise ConfigError([Problem("--report", f"{path}: the report is written as {', '.join(SUFFIXES)} "
                                               "(by the file's suffix)")])


def write_report(checks: Sequence[IndexCheck], path: str) -> int:
    """Every drifted id into `path`; returns how many."""
    frame = drift_frame(checks)
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        Path(path).write_text(
            "<h2>flusso verify: summary</h2>\n" + summary_frame(checks).to_html(index=False)
            + "\n<h2>drifted ids</h2>\n" + frame.to_html(index=False))
    return len(frame)


def print_report(checks: Sequence[IndexCheck], console: Console, title: str = "flusso verify") -> None:
    """The summary table, then up to `EXAMPLES` examples of each kind per index."""
    from rich.markup import escape
    from rich.table import Table

    summary = summary_frame(checks)
    table = Table(*[str(c) for c in summary.columns], title=title)
    for row in summary.itertuples(index=False):
        table.add_row(*[str(v) for v in row])
    console.print(table)
    for c in checks:
        for kind in KINDS:
            found = [f for f in c.findings if f.kind == kind]
            for f in found[:EXAMPLES]:
                what = {"missing": "a row with no document", "extra": "a document with no row",
                        "stale": "differs in " + ", ".join(f.fields)}[kind]
                console.print(f"{escape(c.index)} {kind} [bold]{escape(f.id)}[/]: {escape(what)}")
            if len(found) > EXAMPLES:
                console.print(f"{escape(c.index)} {kind}: ... and {len(found) - EXAMPLES} more")
