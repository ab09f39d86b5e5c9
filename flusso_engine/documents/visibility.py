"""Waiting until the transactions of a batch are visible before reading the rows they changed.

PostgreSQL writes a commit record, and only then takes the transaction out of the proc array; the
walsender may decode and send the transaction in between. A snapshot taken at that moment does not
see it, so a document built from it would miss the very change that made us build it, and nothing
would ever build it again. The builder therefore checks its snapshot against the batch's xids and
takes a new one until it sees them all.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

_EPOCH = 1 << 32
_HALF = 1 << 31


def parse_snapshot(text: str) -> tuple[int, int, frozenset[int]]:
    """`xmin:xmax:xip,...` as `pg_current_snapshot()::text` writes it."""
    xmin, xmax, xip = text.split(":")
    return int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x)


def sees(snapshot: str, xids: Iterable[int]) -> bool:
    """Whether the snapshot sees every one of these committed 32-bit xids (as pgoutput sends them)."""
    xmin, xmax, xip = parse_snapshot(snapshot)
    low = xmax % _EPOCH
    for xid in xids:
        ahead = (xid - low) % _EPOCH
        if ahead < _HALF:  # at or after xmax: not yet completed as far as this snapshot knows
            return False
        full = xmax - (_EPOCH - ahead)
        if full >= xmin and full in xip:
            return False
    return True


def batch_xids(changes: Iterable[object]) -> Collection[int]:
    return {x for c in changes if (x := getattr(c, "xid", 0))}
