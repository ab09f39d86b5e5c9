"""What `flusso validate` checks of the server for the WAL backend: settings, role, slot, publication.

Facts are read first (`read_server`: settings, privileges, the slot through `slot.read_slot`, the
publication, who owns the tables), then judged by pure functions, so each rule reads on its own.
What `run` sets up by itself (publication, slot, REPLICA IDENTITY FULL) is a note, not a problem;
it becomes a problem only when the role could not do it. Which tables need REPLICA IDENTITY FULL
is the builder's to say (`documents.routes.needs_full_identity`, from the very lookups resolve makes);
`old_row_columns` words the note about it. The documents' side is `documents/checks.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from ...catalog import Catalog
from ...config import FlussoConfig
from ...documents.checks import first_paths, old_row_columns, sql_name, sql_table
from ...documents.routes import needs_full_identity
from ...error import Problem
from .. import Findings
from .health import SET_KEEP, judge
from .slot import SlotInfo, WalServer, read_slot

_ACTIONS = ("insert", "update", "delete", "truncate")


def checks(config: FlussoConfig, conn: psycopg.Connection, catalog: Catalog) -> Findings:
    """The WAL backend's checks against the server behind `conn` (read-only queries)."""
    found = Findings()
    judge_server(config, catalog, read_server(conn, config, catalog), found)
    return found


@dataclass(frozen=True)
class Slot:
    plugin: str | None
    slot_type: str
    database: str | None
    wal_status: str | None
    active_pid: int | None


@dataclass(frozen=True)
class Publication:
    owned: bool  # the role may alter it (owner or member of the owner)
    all_tables: bool
    actions: frozenset[str]
    tables: frozenset[str]
    via_root: bool = True  # publish_via_partition_root, which `run` sets (partitions' changes as their root's)


@dataclass(frozen=True)
class TableAccess:
    owned: bool  # owner or member of the owner: may add it to a publication and set its identity


@dataclass(frozen=True)
class Server:
    """What validation needs to know about the server and the connected role."""

    user: str
    database: str
    superuser: bool
    replication: bool
    create_on_database: bool
    wal_level: str
    max_replication_slots: int
    max_wal_senders: int
    slots_used: int
    slot: Slot | None
    publication: Publication | None
    access: dict[str, TableAccess]  # by qualified name, for the config's existing tables
    wal: WalServer | None = None  # the WAL settings read with the slot (capture.wal.read_slot)
    slot_info: SlotInfo | None = None  # the slot's positions and wal_status, for its health


_SERVER = """
SELECT current_user, current_database(), r.rolsuper, r.rolreplication,
       has_database_privilege(current_database(), 'CREATE'),
       current_setting('wal_level'), current_setting('max_replication_slots')::int,
       current_setting('max_wal_senders')::int
FROM pg_roles r WHERE r.rolname = current_user
"""
_PUBLICATION = """
SELECT pg_has_role(p.pubowner, 'MEMBER'), p.puballtables,
       ARRAY_REMOVE(ARRAY[CASE WHEN p.pubinsert THEN 'insert' END,
                          CASE WHEN p.pubupdate THEN 'update' END,
                          CASE WHEN p.pubdelete THEN 'delete' END,
                          CASE WHEN p.pubtruncate THEN 'truncate' END], NULL),
       ARRAY(SELECT t.schemaname || '.' || t.tablename
             FROM pg_publication_tables t WHERE t.pubname = p.pubname),
       p.pubviaroot
FROM pg_publication p WHERE p.pubname = %s
"""
_OWNED = """
SELECT n.nspname || '.' || c.relname, pg_has_role(c.relowner, 'MEMBER')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname || '.' || c.relname = ANY(%s)
"""


def read_server(conn: psycopg.Connection, config: FlussoConfig, catalog: Catalog) -> Server:
    """Read settings, the role's privileges, the slot, the publication and table ownership (read-only)."""
    row = conn.execute(_SERVER).fetchone()
    assert row is not None  # current_user is always a role
    user, database, superuser, replication, create, wal_level, max_slots, max_senders = row
    wal, info = read_slot(conn, config.source.slot)
    pub_row = conn.execute(_PUBLICATION, (config.source.publication,)).fetchone()
    access = {
        name: TableAccess(owned=owned)
        for name, owned in conn.execute(_OWNED, (list(catalog.tables),)).fetchall()
    }
    return Server(
        user=user,
        database=database,
        superuser=superuser,
        replication=replication,
        create_on_database=create,
        wal_level=wal_level,
        max_replication_slots=max_slots,
        max_wal_senders=max_senders,
        slots_used=wal.slots_used,
        slot=Slot(info.plugin, info.slot_type, info.database, info.wal_status, info.active_pid) if info else None,
        publication=(
            Publication(pub_row[0], pub_row[1], frozenset(pub_row[2]), frozenset(pub_row[3]), pub_row[4])
            if pub_row
            else None
        ),
        access=access,
        wal=wal,
        slot_info=info,
    )


def judge_server(config: FlussoConfig, catalog: Catalog, server: Server, found: Findings) -> None:
    """Settings, privileges, slot, publication and replica identity: problems and notes."""
    found.problems += settings_problems(server)
    if not (server.superuser or server.replication):
        found.problems.append(
            Problem(
                "source.slot",
                f'role "{server.user}" may not use replication slots: run ALTER ROLE {sql_name(server.user)} '
                "REPLICATION as a superuser, or connect as a role that has it",
            )
        )
    _judge_slot(config, server, found)
    _judge_slot_health(config, server, found)
    _judge_publication(config, catalog, server, found)
    _judge_identity(config, catalog, server, found)


def settings_problems(server: Server) -> list[Problem]:
    """The server settings logical decoding needs; each takes a restart to change."""
    problems = []
    if server.wal_level != "logical":
        problems.append(
            Problem(
                "source.capture",
                f'wal_level is "{server.wal_level}" but capture from the WAL needs "logical": '
                "set wal_level = logical in postgresql.conf and restart PostgreSQL",
            )
        )
    for setting, value, path in (
        ("max_replication_slots", server.max_replication_slots, "source.slot"),
        ("max_wal_senders", server.max_wal_senders, "source.capture"),
    ):
        if value <= 0:
            problems.append(
                Problem(
                    path, f"{setting} is 0: set it to at least 1 in postgresql.conf and restart PostgreSQL"
                )
            )
    return problems


def _judge_slot(config: FlussoConfig, server: Server, found: Findings) -> None:
    name, slot = config.source.slot, server.slot
    if slot is None:
        if 0 < server.max_replication_slots <= server.slots_used:
            found.problems.append(
                Problem(
                    "source.slot",
                    f"all {server.max_replication_slots} replication slots are in use, so slot {name} "
                    "cannot be created: drop an unused one (SELECT pg_drop_replication_slot('name')) or "
                    "raise max_replication_slots and restart PostgreSQL",
                )
            )
        else:
            found.notes.append(
                f"replication slot {name} does not exist yet: `flusso run` creates it "
                "(and backfills every index)"
            )
        return
    if slot.slot_type != "logical" or slot.plugin != "pgoutput" or slot.database != server.database:
        what = (
            "a physical slot"
            if slot.slot_type != "logical"
            else f'a slot of database "{slot.database}"'
            if slot.database != server.database
            else f'a slot decoding with "{slot.plugin}", not pgoutput'
        )
        found.problems.append(
            Problem(
                "source.slot",
                f"replication slot {name} exists but is {what}, so flusso cannot use it: "
                "choose another slot name, or drop that slot if it is abandoned",
            )
        )
        return
    if slot.wal_status == "lost":
        found.notes.append(
            f"replication slot {name} exists but was invalidated (its WAL is gone): `flusso run` must "
            "create it afresh and backfill every index"
        )
    elif slot.active_pid is not None:
        found.notes.append(
            f"replication slot {name} exists and is in use by process {slot.active_pid}: `flusso run` "
            f"waits up to {config.source.slot_wait_s:g} s for it to be released"
        )
    else:
        found.notes.append(f"replication slot {name} exists: `flusso run` resumes from it")


def _judge_slot_health(config: FlussoConfig, server: Server, found: Findings) -> None:
    """What `flusso status` would warn about the slot (an inactive slot holding WAL, a slot at risk),
    and an unset max_slot_wal_keep_size, as notes: none of them stops a run."""
    if server.wal is None:
        return
    health = judge(config.source.slot, server.wal, server.slot_info, config.slot.warn_lag)
    for reason in health.reasons:
        if reason.code != "slot_lost":  # _judge_slot says what an invalidated slot means for `run`
            found.notes.append(f"{reason.message}. Fix: {reason.fix}")
    if server.slot_info is None and server.wal.max_slot_wal_keep_size is None:
        found.notes.append(
            "max_slot_wal_keep_size is unset (-1): the slot `flusso run` creates will keep WAL without bound "
            f"while flusso is stopped. Fix: {SET_KEEP}"
        )


def _judge_publication(
    config: FlussoConfig, catalog: Catalog, server: Server, found: Findings
) -> None:
    """`run` creates the publication or adds the missing tables: note it, or say what it lacks to."""
    name, pub = config.source.publication, server.publication
    tables = [t for t in config.captured_tables() if t in catalog.tables]
    if pub is not None:
        lacking = [a for a in _ACTIONS if a not in pub.actions]
        if lacking:
            found.problems.append(
                Problem(
                    "source.publication",
                    f"publication {name} does not publish {', '.join(lacking)}, so those changes would be "
                    f"missed: run ALTER PUBLICATION {sql_name(name)} SET (publish = '{', '.join(_ACTIONS)}') "
                    "as its owner",
                )
            )
        elif not pub.via_root and not pub.owned and not server.superuser:
            found.problems.append(
                Problem(
                    "source.publication",
                    f'publication {name} has publish_via_partition_root off, which flusso needs, and role '
                    f'"{server.user}" does not own it to turn it on: run ALTER PUBLICATION {sql_name(name)} '
                    "SET (publish_via_partition_root = true) as its owner",
                )
            )
    to_add = tables if pub is None else [] if pub.all_tables else [t for t in tables if t not in pub.tables]
    if pub is None:
        found.notes.append(
            f"publication {name} does not exist yet: `flusso run` creates it for {_list(tables) or 'none'}"
        )
    elif to_add:
        found.notes.append(f"publication {name} exists: `flusso run` adds {_list(to_add)} to it")
    else:
        found.notes.append(f"publication {name} exists and covers every table")
    if not to_add or server.superuser:
        return
    # PostgreSQL 15: creating needs CREATE on the database, altering needs the publication's owner,
    # and a table may be added only by its owner.
    lacks = []
    if pub is None and not server.create_on_database:
        lacks.append(f'CREATE on database "{server.database}"')
    if pub is not None and not pub.owned:
        lacks.append(f"ownership of publication {name}")
    not_owned = [t for t in to_add if not _owned(server, t)]
    if not_owned:
        lacks.append(f"ownership of {_list(not_owned)}")
    if not lacks:
        return
    if pub is None:
        what = f"may not create publication {name}"
        statement = f"CREATE PUBLICATION {sql_name(name)} FOR TABLE {', '.join(map(sql_table, to_add))}"
    else:
        what = f"may not add {_list(to_add)} to publication {name}"
        statement = f"ALTER PUBLICATION {sql_name(name)} ADD TABLE {', '.join(map(sql_table, to_add))}"
    grant = (
        f" (or GRANT CREATE ON DATABASE {sql_name(server.database)} TO {sql_name(server.user)})"
        if pub is None and not not_owned
        else ""
    )
    found.problems.append(
        Problem(
            "source.publication",
            f'role "{server.user}" {what}: it lacks {" and ".join(lacks)}: run {statement} as the owner '
            f"of the tables, or run flusso as that owner{grant}",
        )
    )


def _judge_identity(config: FlussoConfig, catalog: Catalog, server: Server, found: Findings) -> None:
    """REPLICA IDENTITY FULL where resolve needs whole old rows: `run` sets it, if the role may."""
    paths = first_paths(config)
    needed = old_row_columns(config, catalog)
    for name in sorted(needs_full_identity(config, catalog), key=list(paths).index):
        table = catalog.tables[name]
        if table.replica_identity == "f":
            continue
        why = f"old rows must carry {', '.join(sorted(needed[name] & table.columns.keys()))}"
        if _owned(server, name):
            found.notes.append(
                f"{name} needs REPLICA IDENTITY FULL ({why}) and does not have it yet: `flusso run` sets it"
            )
        else:
            found.problems.append(
                Problem(
                    paths[name],
                    f"{name} needs REPLICA IDENTITY FULL ({why}), and only its owner may set it: run "
                    f"ALTER TABLE {sql_table(name)} REPLICA IDENTITY FULL as its owner",
                )
            )


def _owned(server: Server, table: str) -> bool:
    access = server.access.get(table)
    return server.superuser or (access is not None and access.owned)


def _list(names: list[str]) -> str:
    return ", ".join(names)
