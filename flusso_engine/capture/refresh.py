"""Materialized views: how both captures see a REFRESH, which sends no row change at all.

A materialized view's rows change only on `REFRESH MATERIALIZED VIEW`, and neither logical
decoding (a publication cannot hold one) nor row triggers (none fire for a refresh) report it. What
a refresh leaves is in the catalog and the statistics:

- a plain REFRESH (and `WITH NO DATA`) writes a new heap: a new `relfilenode`;
- `REFRESH ... CONCURRENTLY` keeps the heap and applies the difference as inserts, updates and
  deletes on it, which count in `pg_stat_all_tables` (`n_tup_ins + n_tup_upd + n_tup_del`) once
  the refreshing session reports its statistics (at the latest ~10 s after it went idle, at once
  when it ends); a concurrent refresh that changed nothing moves neither, and needs nothing.

Each capture's catalog watch reads this fingerprint with the tables' (`fingerprints`) and turns a
change into a `resync` of the view, which rebuilds the indexes that read it beside the serving
generation; the seeded marker records it too, so a refresh while flusso was stopped rebuilds them
at the next start. Statistics lost in a crash (or `pg_stat_reset()`) change the fingerprint as well:
the indexes are then rebuilt needlessly, never left stale. The fingerprint is read before the
rebuild's snapshot, so a refresh the counters show late costs one more rebuild, never a stale one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import psycopg

from ..config import qualify

_FINGERPRINTS = """
SELECT n.nspname || '.' || c.relname, c.oid::int8, c.relfilenode::int8,
       coalesce(s.n_tup_ins + s.n_tup_upd + s.n_tup_del, 0)::int8
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
WHERE c.relkind = 'm' AND n.nspname || '.' || c.relname = ANY(%s)
"""


def fingerprints(conn: psycopg.Connection, views: Collection[str]) -> dict[str, list[int]]:
    """Per materialized view of `views` that exists: its OID, heap and rows changed by refreshes."""
    if not views:
        return {}
    rows = conn.execute(_FINGERPRINTS, (sorted(qualify(v) for v in views),)).fetchall()
    return {name: [oid, heap, changed] for name, oid, heap, changed in rows}


def refreshed(before: dict[str, list[int]], now: dict[str, list[int]], views: Sequence[str]) -> list[str]:
    """The views of `views` whose fingerprint moved from `before` to `now` (gone ones included)."""
    return [v for v in views if before.get(v) != now.get(v)]
