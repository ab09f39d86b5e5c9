"""Schema changes under capture: what the config needs of each table, and how to tell it no longer holds.

Two sources, because some changes send no message at all:

- **Relation messages.** pgoutput sends one before a table's first change after its definition
  changed (and on every new connection). `relation_problem` compares it with `Expected`: the
  relation's OID (a table dropped and created again, or swapped, under the same name has another),
  its name, the needed columns and their types, and whether its replica identity still sends the
  old values resolve reads. With `publish_via_partition_root` the partition a change came through
  gets a Relation of its own too, which carries the *partition's* replica identity.
- **The catalog, re-read every few seconds** (`read_state`, one query): a table swapped out of the
  publication, a publication dropped, an identity changed on a table nobody writes to, and partitions
  attached, detached or truncated, none of which reach the slot through a root publication
  (`state_problems`, `partition_changes`). What pgoutput sends for a TRUNCATE of a partition under
  `publish_via_partition_root`: nothing at all (its truncate callback skips a partition published as
  its root, and sends no Truncate when none is left; PostgreSQL 15, checked with
  `pg_logical_slot_peek_binary_changes`), and nothing for ATTACH or DETACH PARTITION either. A
  partition TRUNCATE is therefore seen as a new `relfilenode` of the partition (as are VACUUM FULL,
  CLUSTER and table rewrites: the index is then rebuilt needlessly, never left stale).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import psycopg

from ...catalog import Catalog
from ...changes import lsn_to_int
from ...config import qualify
from ...plan import Plan
from .pgoutput import Relation

IDENTITY = {"d": "DEFAULT", "f": "FULL", "n": "NOTHING", "i": "USING INDEX"}
_REIDENTIFY = "start flusso again: it sets REPLICA IDENTITY FULL again and rebuilds the indexes that use the table"
_REPUBLISH = "start flusso again: it publishes the table now under that name and rebuilds the indexes that use it"
_VALIDATE = "`flusso validate` lists what no longer matches; the indexes that use the table are rebuilt"


@dataclass(frozen=True)
class Expected:
    """What the config needs of one table: these columns with these types (OIDs), replica identity
    FULL (`full`), or else an identity that sends `old_columns` in old rows."""

    table: str
    columns: Mapping[str, int]
    type_names: Mapping[str, str]
    old_columns: frozenset[str]
    full: bool


def expectations(plan: Plan, catalog: Catalog) -> dict[str, Expected]:
    """Per configured table (qualified): the columns build and resolve use, and the identity they
    need, from each index's plan."""
    used: dict[str, set[str]] = {}

    def use(table: str, columns: Sequence[str]) -> None:
        used.setdefault(table, set()).update(columns)

    for index in plan.indexes.values():
        tree = index.tree
        use(tree.table, index.key)
        for node, _ in tree.walk():
            for dep in node.depends_on:  # a view: its base tables send the changes
                use(dep.table, dep.base_columns)
            use(node.table, [*node.field_columns, *node.child_columns, *node.order])
            for child in node.children:
                use(node.table, child.parent_columns)
                if child.through is not None:
                    use(child.through.table, [*child.through.parent_side, *child.through.child_side])
    old = plan.old_columns
    full = plan.full_identity
    out = {}
    for table, columns in used.items():
        found = catalog.tables.get(table)
        if found is None:
            continue  # a view (never in a Relation message), or validation's to report
        present = {c: found.columns[c] for c in sorted(columns) if c in found.columns}
        out[found.qualified] = Expected(
            table=found.qualified,
            columns={c: col.type_oid for c, col in present.items()},
            type_names={c: col.type_name for c, col in present.items()},
            old_columns=frozenset(old.get(table, set()) & present.keys()),
            full=found.qualified in full,
        )
    return out


# --- the catalog, re-read -------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """A partition below a partitioned table (any level)."""

    oid: int
    name: str
    identity: str
    relfilenode: int  # 0 for a partitioned (non-leaf) one; a new one after TRUNCATE or a rewrite


@dataclass(frozen=True)
class TableState:
    table: str
    oid: int
    identity: str
    published: bool
    partitions: tuple[Part, ...] = ()

    def fingerprint(self) -> list:
        """What the seeded marker records: the OID, and each partition's OID and storage."""
        return [self.oid, [[p.oid, p.relfilenode] for p in self.partitions]]


@dataclass(frozen=True)
class State:
    """The configured tables as the catalog says now (None: no such table), at WAL `position`."""

    publication: bool
    tables: Mapping[str, TableState | None]
    position: int = 0
    oids: Mapping[int, str] = field(default_factory=dict)  # table OID -> configured name
    partition_of: Mapping[int, str] = field(default_factory=dict)  # partition OID -> configured table

    @classmethod
    def of(cls, publication: bool, tables: Mapping[str, TableState | None], position: int = 0) -> State:
        oids = {t.oid: name for name, t in tables.items() if t is not None}
        parts = {p.oid: name for name, t in tables.items() if t is not None for p in t.partitions}
        return cls(publication, tables, position, oids, parts)


_STATE = """
SELECT t.name, c.oid, c.relreplident,
       EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
               WHERE p.pubname = %(pub)s AND pr.prrelid = c.oid),
       (WITH RECURSIVE tree(relid) AS (
            SELECT inhrelid FROM pg_inherits WHERE inhparent = c.oid
            UNION ALL SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.relid)
        SELECT coalesce(jsonb_agg(jsonb_build_array(pc.oid, pn.nspname || '.' || pc.relname, pc.relreplident,
                                                    CASE WHEN pc.relkind = 'p' THEN 0 ELSE pc.relfilenode END)
                                  ORDER BY pc.oid), '[]'::jsonb)
          FROM tree JOIN pg_class pc ON pc.oid = tree.relid AND pc.relispartition
          JOIN pg_namespace pn ON pn.oid = pc.relnamespace),
       EXISTS (SELECT 1 FROM pg_publication WHERE pubname = %(pub)s),
       pg_current_wal_lsn()::text
FROM unnest(%(tables)s::text[]) t(name)
LEFT JOIN (pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace)
  ON n.nspname || '.' || c.relname = t.name AND c.relkind IN ('r', 'p')
"""


def read_state(conn: psycopg.Connection, publication: str, tables: Sequence[str]) -> State:
    """The OIDs, publication membership, replica identities and partitions of `tables`: one query,
    on the catalog only (pg_inherits rather than pg_partition_tree, which locks every partition)."""
    names = sorted({qualify(t) for t in tables})
    rows = conn.execute(_STATE, {"pub": publication, "tables": names}).fetchall()
    found: dict[str, TableState | None] = {}
    exists, position = False, 0
    for name, oid, identity, published, parts, pub_exists, lsn in rows:
        exists, position = pub_exists, lsn_to_int(lsn)
        if oid is None:
            found[name] = None
            continue
        partitions = tuple(Part(int(p[0]), p[1], p[2], int(p[3])) for p in parts or [])
        found[name] = TableState(name, int(oid), identity, bool(published), partitions)
    return State.of(bool(exists), found, position)


@dataclass(frozen=True)
class Drift:
    """A configured table no longer as the running engine needs it: what changed, and the fix."""

    table: str
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what}: {self.fix}"


def identity_problem(expected: Expected, identity: str, keys: set[str] | None, what: str) -> Drift | None:
    """Why `what` (a table or one of its partitions) no longer sends the old values resolve needs.
    `keys`: the identity's columns as a Relation message flags them (None: not known)."""
    if expected.full and identity != "f":
        return Drift(expected.table, f"REPLICA IDENTITY of {what} is {IDENTITY.get(identity, identity)}, but flusso "
                     "needs FULL there (old rows find the documents a moved or deleted row leaves)", _REIDENTIFY)
    if keys is not None and not expected.full and not expected.old_columns <= keys:
        missing = ", ".join(sorted(expected.old_columns - keys))
        return Drift(expected.table, f"REPLICA IDENTITY of {what} ({IDENTITY.get(identity, identity)}) no longer "
                     f"covers column {missing}, which old rows must carry", _REIDENTIFY)
    return None


def relation_problem(msg: Relation, expected: Mapping[str, Expected], state: State,
                     type_name: Callable[[int, int], str] = lambda oid, _: f"type {oid}") -> Drift | None:
    """What changed when a Relation message shows a definition the running engine cannot follow;
    None when it is fine or not about a table of the config."""
    name = msg.qualified
    keys = {c.name for c in msg.columns if c.is_key}
    table = state.oids.get(msg.oid)
    if table is None:
        root = state.partition_of.get(msg.oid)
        if root is not None and root in expected:
            return identity_problem(expected[root], msg.replica_identity, keys, f"partition {name} of {root}")
        if name in expected and state.oids:
            old = next((oid for oid, t in state.oids.items() if t == name), None)
            return Drift(name, f"table {name} was replaced under the same name (OID {old}, now {msg.oid}): "
                         "dropped and created again, or swapped for another table", _REPUBLISH)
        return None
    if name != table:
        return Drift(table, f"table {table} was renamed to {name}",
                     f"rename it back, or put the new name in the config, then start flusso again ({_VALIDATE})")
    want = expected.get(table)
    if want is None:
        return None
    columns = {c.name: c for c in msg.columns}
    for column, oid in want.columns.items():
        got = columns.get(column)
        if got is None:
            return Drift(table, f'column "{column}" of {table} is gone (dropped or renamed), and the config uses it',
                         f"add it back or change the config, then start flusso again ({_VALIDATE})")
        if got.type_oid != oid:
            return Drift(table, f'column "{column}" of {table} changed type from {want.type_names[column]} to '
                         f"{type_name(got.type_oid, got.type_modifier)}",
                         f"start flusso again: it reads the new type and rebuilds what needs it ({_VALIDATE})")
    return identity_problem(want, msg.replica_identity, keys, table)


def state_problems(state: State, expected: Mapping[str, Expected], baseline: State | None = None) -> list[Drift]:
    """What in the catalog stops capture from seeing every change it needs: the publication or a
    table gone, a table out of the publication or replaced, an identity that lost old values."""
    if not state.publication:
        return [Drift("", "the publication no longer exists (dropped while flusso was running)",
                      "start flusso again: it recreates the publication, moves the slot past the changes it "
                      "could not read and rebuilds every index")]
    problems = []
    for name, now in sorted(state.tables.items()):
        before = baseline.tables.get(name) if baseline is not None else None
        if now is None:
            problems.append(Drift(name, f"table {name} no longer exists (dropped or renamed)",
                                  f"create it again or change the config, then start flusso again ({_VALIDATE})"))
            continue
        if before is not None and before.oid != now.oid:
            problems.append(Drift(name, f"table {name} was replaced under the same name (OID {before.oid}, now "
                                  f"{now.oid}): its changes are no longer captured", _REPUBLISH))
        elif not now.published:
            problems.append(Drift(name, f"table {name} is no longer in the publication: its changes are not "
                                  "captured", _REPUBLISH))
        want = expected.get(name)
        if want is None:
            continue
        for what, identity in [(name, now.identity), *((f"partition {p.name} of {name}", p.identity)
                                                       for p in now.partitions)]:
            problem = identity_problem(want, identity, None, what)
            if problem:
                problems.append(problem)
    return problems


def partition_changes(before: TableState | None, now: TableState | None) -> tuple[list[Part], list[Part], list[Part]]:
    """The partitions attached, detached (or dropped) and truncated (or rewritten) between two reads of
    one table: changes of its rows that no row change reports. A replaced table is a stop instead."""
    if before is None or now is None or before.oid != now.oid:
        return [], [], []
    old = {p.oid: p for p in before.partitions}
    new = {p.oid: p for p in now.partitions}
    attached = [new[o] for o in sorted(new.keys() - old.keys())]
    detached = [old[o] for o in sorted(old.keys() - new.keys())]
    truncated = [new[o] for o in sorted(new.keys() & old.keys()) if new[o].relfilenode != old[o].relfilenode]
    return attached, detached, truncated


def describe_partitions(table: str, attached: Sequence[Part], detached: Sequence[Part],
                        truncated: Sequence[Part]) -> str:
    said = [f"{what} {', '.join(p.name for p in parts)}" for what, parts in
            (("attached", attached), ("detached or dropped", detached), ("truncated or rewritten", truncated))
            if parts]
    return f"partitions of {table}: {'; '.join(said)}"
