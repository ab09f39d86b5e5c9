"""Drift (`flusso verify`) as Dagster metadata: the summary table as markdown, the first examples of
each kind, and the counts an asset observation carries so the UI plots them over time."""

from __future__ import annotations

from collections.abc import Sequence

from dagster import MetadataValue

from flusso_engine.verify import KINDS, IndexCheck, summary_frame

EXAMPLES = 5


def markdown_table(checks: Sequence[IndexCheck]) -> str:
    frame = summary_frame(checks)
    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def examples(checks: Sequence[IndexCheck]) -> str:
    lines = []
    for check in checks:
        for kind in KINDS:
            for f in [f for f in check.findings if f.kind == kind][:EXAMPLES]:
                what = ", ".join(f.fields) if f.fields else {"missing": "no document", "extra": "no row"}[kind]
                lines.append(f"- {check.index} **{kind}** `{f.id}`: {what}")
    return "\n".join(lines) or "none"


def counts(checks: Sequence[IndexCheck]) -> dict[str, int]:
    """Drifted ids by kind (and in all), for metadata and observations."""
    out = {f"drift_{k}": sum(1 for c in checks for f in c.findings if f.kind == k) for k in KINDS}
    out["drift_total"] = sum(out.values())
    return out


def metadata(checks: Sequence[IndexCheck]) -> dict:
    return {
        "summary": MetadataValue.md(markdown_table(checks)),
        "examples": MetadataValue.md(examples(checks)),
        **{k: MetadataValue.int(v) for k, v in counts(checks).items()},
        "documents_checked": MetadataValue.int(sum(c.documents for c in checks)),
        "rows_checked": MetadataValue.int(sum(c.rows for c in checks)),
    }
