"""Sizes in the units people read: what `flusso status`, the slot's health and logs print."""

from __future__ import annotations


def human_bytes(n: int | None) -> str:
    """1373694344 -> "1.3 GB" (binary units, as PostgreSQL's pg_size_pretty and settings use)."""
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if abs(size) < 1024 or unit == "TB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
