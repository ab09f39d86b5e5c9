"""One section of bench/RESULTS.md replaced in place: the scenario reports' `write` (polling, kafka)
changes its own section and leaves the others, some written by hand, as they are."""

from __future__ import annotations

BEFORE = "## Notes on the systems"


def splice_section(text: str, heading: str, lines: list[str], before: str = BEFORE) -> str:
    """`text` with the section whose heading starts like `heading` (up to its first colon) replaced by
    `lines`, or `lines` put before `before` when there is none yet (at the end without `before`)."""
    block = "\n".join(lines).rstrip("\n") + "\n\n" if lines else ""
    start = text.find("\n" + heading.split(":")[0] + ":")
    if start >= 0:
        start += 1
        end = text.find("\n## ", start + 1)
        end = len(text) if end < 0 else end + 1
        return text[:start] + block + text[end:]
    at = text.find("\n" + before)
    if at < 0:
        return text.rstrip("\n") + "\n\n" + block
    return text[:at + 1] + block + text[at + 1:]
