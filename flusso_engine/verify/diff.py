"""A field-level diff of a stored document against a fresh build: the paths whose values differ."""

from __future__ import annotations

from typing import Any

from ..documents.mapping import FINGERPRINT

MAX_PATHS = 20


def field_diff(stored: Any, fresh: Any, path: str = "", out: list[str] | None = None) -> list[str]:
    """Paths (`reviews[2].rating`, `publisher`) where `stored` and `fresh` differ, at most
    `MAX_PATHS`; the fingerprint field is left out (it differs whenever anything else does)."""
    out = [] if out is None else out
    if len(out) >= MAX_PATHS:
        return out
    if isinstance(stored, dict) and isinstance(fresh, dict):
        for key in sorted(set(stored) | set(fresh)):
            if not path and key == FINGERPRINT:
                continue
            sub = f"{path}.{key}" if path else key
            if key not in stored or key not in fresh:
                out.append(sub)
            else:
                field_diff(stored[key], fresh[key], sub, out)
    elif isinstance(stored, list) and isinstance(fresh, list) and len(stored) == len(fresh):
        for i, (a, b) in enumerate(zip(stored, fresh, strict=True)):
            field_diff(a, b, f"{path}[{i}]", out)
    elif stored != fresh:
        out.append(path or "(document)")
    return out
