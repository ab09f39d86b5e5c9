"""`flusso validate`: the config against the live database, every problem at once (DESIGN §5).

`config.py` has already checked what the file alone can tell; this module asks PostgreSQL the rest:
do the tables, columns and keys exist, can the role replicate and publish, is the server set up
for logical decoding. Facts are read first (a catalog of the config's tables and a `Server` of
settings, privileges, slot and publication), then judged by pure functions, so each rule reads on
its own. What `run` sets up by itself (publication, slot, REPLICA IDENTITY FULL) is a note, not a
problem; it becomes a problem only when the role could not do it.

Which tables need REPLICA IDENTITY FULL is the builder's to say (`documents.routes.needs_full_identity`,
derived from the very lookups resolve makes); `old_row_columns` only words the note about it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import psycopg

from .capture.wal import SlotInfo, WalServer, read_slot
from .catalog import Catalog, Column, Table, read_catalog
from .config import FlussoConfig, RelationConfig, did_you_mean, qualify, relation_path, split_table
from .documents.routes import needs_full_identity
from .error import ConfigError, Problem
from .health import SET_KEEP, judge
from .keys import KEY_FIX, key_type_problem

_ACTIONS = ("insert", "update", "delete", "truncate")
_PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_RESERVED = frozenset("all user role table select from where order group column check default".split())
_COMPARABLE_CATEGORIES = frozenset("BDINSTV")  # PostgreSQL compares across types within these


@dataclass
class ValidationReport:
    """What `validate` found: problems block a run (exit 1); notes say what `run` will set up."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_for_problems(self, source: str = "flusso.yaml") -> None:
        """Raise `ConfigError` listing every problem, if there is any."""
        if self.problems:
            raise ConfigError(self.problems, source)


def validate(config: FlussoConfig, conn: psycopg.Connection) -> ValidationReport:
    """Check `config` against the database behind `conn` (read-only queries; commits nothing)."""
    catalog = read_catalog(conn, config.tables())
    server = read_server(conn, config, catalog)
    report = ValidationReport()
    report.problems += schema_problems(config, catalog, server.relations)
    judge_server(config, catalog, server, report)
    return report


# --- which old rows must carry more than their primary key -------------------------------------


@dataclass(frozen=True)
class Edge:
    """A relation with where it sits: its path in the file and the table it hangs from."""

    path: str  # indexes.books.relations.reviews
    parent: str  # qualified table of the index root or the enclosing relation
    relation: RelationConfig

    @property
    def table(self) -> str:
        return qualify(self.relation.table)

    @property
    def through(self) -> str | None:
        return qualify(self.relation.through.table) if self.relation.through else None


def edges(config: FlussoConfig) -> Iterator[Edge]:
    """Every relation of every index, depth first, with its parent table."""

    def below(path: str, parent: str, relations: Mapping[str, RelationConfig]) -> Iterator[Edge]:
        for name, rel in relations.items():
            edge = Edge(f"{path}.relations.{name}", parent, rel)
            yield edge
            yield from below(edge.path, edge.table, rel.relations)

    for index_name, index in config.indexes.items():
        yield from below(relation_path(index_name), qualify(index.table), index.relations)


def old_row_columns(config: FlussoConfig) -> dict[str, set[str]]:
    """For each table, the columns a change's *old* row must carry to find its documents.

    A change reaches its root ids by joining upward from the changed row; the tables above are
    read as they are now, so only the changed row's own link to its parent must come from the
    old row (a deleted review, or one whose book_id moved, must say which book it was under):

    - root table: its `key` (a deleted root row deletes the document with that id);
    - one_to_many / one_to_one child: the child side of `on` (its foreign key to the parent);
    - many_to_one target: the child side of `on` (the columns the parent references, usually
      its primary key);
    - many_to_many: on the through table both sides (parent- and child-side join columns), on
      the child the columns the through table references.

    The columns a table's own children reference are not needed: a change below reaches this
    table through its current rows, and a change to this row is found through its own link.
    """
    needed: dict[str, set[str]] = {}
    for index in config.indexes.values():
        needed.setdefault(qualify(index.table), set()).update(index.key)
    for edge in edges(config):
        rel = edge.relation
        if rel.through is not None:
            through = needed.setdefault(qualify(rel.through.table), set())
            through.update(rel.through.parent.values())
            through.update(rel.through.child.keys())
            needed.setdefault(edge.table, set()).update(rel.through.child.values())
        elif rel.on:
            needed.setdefault(edge.table, set()).update(rel.on.values())
    return needed


# --- tables, columns and keys ------------------------------------------------------------------


def schema_problems(config: FlussoConfig, catalog: Catalog, relations: Mapping[str, str]) -> list[Problem]:
    """Tables, columns and keys the config names but the database lacks.

    `relations` maps every qualified table and view name in the database to its kind ("table" or
    "view"), for suggestions.
    """
    problems: list[Problem] = []
    for index_name, index in config.indexes.items():
        base = relation_path(index_name)
        table = _table(catalog, relations, f"{base}.table", index.table, problems)
        if table is None:
            continue
        problems += _columns(table, f"{base}.key", index.key)
        problems += _field_columns(table, base, index.fields)
        if not _missing(table, index.key):
            if not table.is_unique(index.key):
                problems.append(Problem(f"{base}.key", _not_unique(table, index.key)))
            problems += _key_problems(table, f"{base}.key", index.key)
    for edge in edges(config):
        problems += _edge_problems(edge, catalog, relations)
    problems += _generated_problems(config, catalog)
    return problems


def _generated_problems(config: FlussoConfig, catalog: Catalog) -> list[Problem]:
    """Keys and join columns that are generated: logical replication leaves them out of every
    change, so the change could not be matched to its documents."""
    paths = _first_paths(config)
    problems = []
    for name, columns in old_row_columns(config).items():
        table = catalog.get(name)
        for column in sorted(columns & table.columns.keys()) if table is not None else ():
            if table.columns[column].generated:
                problems.append(
                    Problem(
                        paths[name],
                        f"{name}.{column} is a generated column, and logical replication does not send "
                        "generated columns, so changes to its rows could not be matched to their "
                        "documents: key and join on a plain column instead (one that a trigger fills, "
                        "if it must be computed)",
                    )
                )
    return problems


def _edge_problems(edge: Edge, catalog: Catalog, relations: Mapping[str, str]) -> list[Problem]:
    problems: list[Problem] = []
    rel, base = edge.relation, edge.path
    parent = catalog.get(edge.parent)
    child = _table(catalog, relations, f"{base}.table", rel.table, problems)
    if rel.through is not None:
        through = _table(catalog, relations, f"{base}.through.table", rel.through.table, problems)
        problems += _join(f"{base}.through.parent", parent, through, rel.through.parent)
        problems += _join(f"{base}.through.child", through, child, rel.through.child)
    elif rel.on:
        problems += _join(f"{base}.on", parent, child, rel.on)
    if child is None:
        return problems
    problems += _field_columns(child, base, rel.fields)
    problems += _columns(child, f"{base}.order_by", rel.order_by)
    problems += _columns(child, f"{base}.key", rel.key or [])
    if rel.is_array and not rel.key and not child.primary_key:
        problems.append(
            Problem(
                f"{base}.key",
                f"{child.qualified} has no primary key to order and identify {_last(base)} by: add "
                f"key: [columns that identify a row] to this relation, or give the table a primary key "
                f"(ALTER TABLE {_qt(child.qualified)} ADD PRIMARY KEY (...))",
            )
        )
    if not rel.is_array and rel.on and not _missing(child, rel.on.values()):
        target = list(rel.on.values())
        if not child.is_unique(target) and not (rel.key and set(rel.key) <= set(target)):
            problems.append(
                Problem(
                    f"{base}.on",
                    f"{_cols(target)} is not unique in {child.qualified}, so several rows could match "
                    f"one {rel.type} object: add a unique index (CREATE UNIQUE INDEX ON "
                    f"{_qt(child.qualified)} ({', '.join(map(_q, target))})), or make the relation an "
                    "array (one_to_many)",
                )
            )
    return problems


def _table(
    catalog: Catalog, relations: Mapping[str, str], path: str, name: str, problems: list[Problem]
) -> Table | None:
    table = catalog.get(name)
    if table is not None:
        return table
    qualified = qualify(name)
    if relations.get(qualified) == "view":
        problems.append(
            Problem(
                path,
                f"{qualified} is a view, not a table: logical replication carries tables only: "
                "name the table(s) it reads",
            )
        )
        return None
    bare = split_table(qualified)[1]
    same_name = [r for r in relations if split_table(r)[1] == bare and relations[r] == "table"]
    best = (
        same_name[0]
        if same_name
        else did_you_mean(qualified, [r for r, k in relations.items() if k == "table"])
    )
    hint = f" (did you mean {best}?)" if best else ": create it or fix the name"
    problems.append(Problem(path, f"table {qualified} does not exist{hint}"))
    return None


def _missing(table: Table, columns: Iterable[str]) -> list[str]:
    return [c for c in columns if c not in table.columns]


def _column_problem(table: Table, column: str) -> str:
    best = did_you_mean(column, table.columns)
    if best:
        return f'column "{column}" does not exist in {table.qualified} (did you mean "{best}"?)'
    shown = ", ".join(list(table.columns)[:12]) + (", ..." if len(table.columns) > 12 else "")
    return f'column "{column}" does not exist in {table.qualified}: use one of its columns ({shown})'


def _columns(table: Table, path: str, columns: Iterable[str]) -> list[Problem]:
    return [Problem(path, _column_problem(table, c)) for c in _missing(table, columns)]


def _field_columns(table: Table, base: str, fields: Mapping[str, str]) -> list[Problem]:
    return [
        Problem(f"{base}.fields.{name}", _column_problem(table, column))
        for name, column in fields.items()
        if column not in table.columns
    ]


def _join(path: str, left: Table | None, right: Table | None, pairs: Mapping[str, str]) -> list[Problem]:
    """`pairs` maps a column of `left` to one of `right`: both must exist and be comparable."""
    problems: list[Problem] = []
    if left is not None:
        problems += _columns(left, path, pairs.keys())
    if right is not None:
        problems += _columns(right, path, pairs.values())
    if problems or left is None or right is None:
        return problems
    for a, b in pairs.items():
        ca, cb = left.columns[a], right.columns[b]
        if not _comparable(ca, cb):
            problems.append(
                Problem(
                    path,
                    f"{left.qualified}.{a} ({ca.type_name}) and {right.qualified}.{b} ({cb.type_name}) "
                    "cannot be joined, their types differ: join columns of the same type",
                )
            )
    return problems


def _comparable(a: Column, b: Column) -> bool:
    """Whether PostgreSQL can compare the two columns without a cast (int4 = int8 yes, uuid = text no)."""
    if (a.element_type is None) != (b.element_type is None):
        return False
    if a.base_type == b.base_type:
        return True
    return a.category == b.category and a.category in _COMPARABLE_CATEGORIES


def _key_problems(table: Table, path: str, key: list[str]) -> list[Problem]:
    """Key columns whose values cannot make a document id: a type without one text per value
    (`keys.key_type_problem`), or NULL allowed (a unique index lets many rows be NULL, and a NULL
    key has no id at all)."""
    problems = []
    for name in key:
        column = table.columns[name]
        reason = key_type_problem(column)
        if reason is not None:
            problems.append(
                Problem(
                    path,
                    f"{table.qualified}.{name} is {column.type_name}, which cannot be part of a document "
                    f"id ({reason}): {KEY_FIX}",
                )
            )
    nullable = [c for c in key if not table.columns[c].not_null]
    if nullable:
        columns = ", ".join(f"ALTER COLUMN {_q(c)} SET NOT NULL" for c in nullable)
        problems.append(
            Problem(
                path,
                f"{_cols(nullable)} of {table.qualified} may be NULL, and a row whose key is NULL has no "
                f"document id (a unique index lets any number of rows be NULL): make the key NOT NULL "
                f"(ALTER TABLE {_qt(table.qualified)} {columns}) once no row holds a NULL there, or use "
                "the primary key",
            )
        )
    return problems


def _not_unique(table: Table, key: list[str]) -> str:
    if table.primary_key:
        fix = f"use its primary key (key: [{', '.join(table.primary_key)}]), or add a unique index"
    else:
        fix = "add a primary key or a unique index"
    return (
        f"{_cols(key)} is not unique in {table.qualified} (no primary key or unique index covers it), "
        f"so two rows could claim one document id: {fix} "
        f"(CREATE UNIQUE INDEX ON {_qt(table.qualified)} ({', '.join(map(_q, key))}))"
    )


def _cols(columns: Iterable[str]) -> str:
    return "(" + ", ".join(columns) + ")"


def _last(path: str) -> str:
    return path.rpartition(".")[2]


def _q(name: str) -> str:
    """A name as it should be typed in a hint's SQL: plain when it can be, quoted when it must be."""
    return name if _PLAIN_NAME.match(name) and name not in _RESERVED else '"' + name.replace('"', '""') + '"'


def _qt(table: str) -> str:
    """A qualified table name as it should be typed in a hint's SQL."""
    return ".".join(map(_q, split_table(table)))


# --- the server: settings, privileges, slot and publication ------------------------------------


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


@dataclass(frozen=True)
class TableAccess:
    owned: bool  # owner or member of the owner: may add it to a publication and set its identity
    readable: bool  # SELECT on the table and USAGE on its schema


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
    relations: dict[str, str] = field(default_factory=dict)  # every table and view: "table" | "view"
    wal: WalServer | None = None  # the WAL settings read with the slot (capture.wal.read_slot)
    slot_info: SlotInfo | None = None  # the slot's positions and wal_status, for its health


_SERVER = """
SELECT current_user, current_database(), r.rolsuper, r.rolreplication,
       has_database_privilege(current_database(), 'CREATE'),
       current_setting('wal_level'), current_setting('max_replication_slots')::int,
       current_setting('max_wal_senders')::int, (SELECT count(*) FROM pg_replication_slots)
FROM pg_roles r WHERE r.rolname = current_user
"""
_PUBLICATION = """
SELECT pg_has_role(p.pubowner, 'MEMBER'), p.puballtables,
       ARRAY_REMOVE(ARRAY[CASE WHEN p.pubinsert THEN 'insert' END,
                          CASE WHEN p.pubupdate THEN 'update' END,
                          CASE WHEN p.pubdelete THEN 'delete' END,
                          CASE WHEN p.pubtruncate THEN 'truncate' END], NULL),
       ARRAY(SELECT t.schemaname || '.' || t.tablename
             FROM pg_publication_tables t WHERE t.pubname = p.pubname)
FROM pg_publication p WHERE p.pubname = %s
"""
_ACCESS = """
SELECT n.nspname || '.' || c.relname, pg_has_role(c.relowner, 'MEMBER'),
       has_table_privilege(c.oid, 'SELECT') AND has_schema_privilege(n.oid, 'USAGE')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname || '.' || c.relname = ANY(%s)
"""
_RELATIONS = """
SELECT n.nspname || '.' || c.relname, CASE WHEN c.relkind IN ('r', 'p') THEN 'table' ELSE 'view' END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY n.nspname = 'public' DESC, 1
"""


def read_server(conn: psycopg.Connection, config: FlussoConfig, catalog: Catalog) -> Server:
    """Read settings, the role's privileges, the slot, the publication and table access (read-only)."""
    row = conn.execute(_SERVER).fetchone()
    assert row is not None  # current_user is always a role
    user, database, superuser, replication, create, wal_level, max_slots, max_senders, used = row
    wal, info = read_slot(conn, config.source.slot)
    pub_row = conn.execute(_PUBLICATION, (config.source.publication,)).fetchone()
    access = {
        name: TableAccess(owned=owned, readable=readable)
        for name, owned, readable in conn.execute(_ACCESS, (list(catalog.tables),)).fetchall()
    }
    relations = dict(conn.execute(_RELATIONS).fetchall())
    return Server(
        user=user,
        database=database,
        superuser=superuser,
        replication=replication,
        create_on_database=create,
        wal_level=wal_level,
        max_replication_slots=max_slots,
        max_wal_senders=max_senders,
        slots_used=used,
        slot=Slot(info.plugin, info.slot_type, info.database, info.wal_status, info.active_pid) if info else None,
        publication=(
            Publication(pub_row[0], pub_row[1], frozenset(pub_row[2]), frozenset(pub_row[3]))
            if pub_row
            else None
        ),
        access=access,
        relations=relations,
        wal=wal,
        slot_info=info,
    )


def judge_server(config: FlussoConfig, catalog: Catalog, server: Server, report: ValidationReport) -> None:
    """Settings, privileges, slot, publication and replica identity: problems and notes."""
    report.problems += settings_problems(server)
    if not (server.superuser or server.replication):
        report.problems.append(
            Problem(
                "source.slot",
                f'role "{server.user}" may not use replication slots: run ALTER ROLE {_q(server.user)} '
                "REPLICATION as a superuser, or connect as a role that has it",
            )
        )
    _judge_slot(config, server, report)
    _judge_slot_health(config, server, report)
    _judge_publication(config, catalog, server, report)
    _judge_access(config, catalog, server, report)


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


def _judge_slot(config: FlussoConfig, server: Server, report: ValidationReport) -> None:
    name, slot = config.source.slot, server.slot
    if slot is None:
        if 0 < server.max_replication_slots <= server.slots_used:
            report.problems.append(
                Problem(
                    "source.slot",
                    f"all {server.max_replication_slots} replication slots are in use, so slot {name} "
                    "cannot be created: drop an unused one (SELECT pg_drop_replication_slot('name')) or "
                    "raise max_replication_slots and restart PostgreSQL",
                )
            )
        else:
            report.notes.append(
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
        report.problems.append(
            Problem(
                "source.slot",
                f"replication slot {name} exists but is {what}, so flusso cannot use it: "
                "choose another slot name, or drop that slot if it is abandoned",
            )
        )
        return
    if slot.wal_status == "lost":
        report.notes.append(
            f"replication slot {name} exists but was invalidated (its WAL is gone): `flusso run` must "
            "create it afresh and backfill every index"
        )
    elif slot.active_pid is not None:
        report.notes.append(
            f"replication slot {name} exists and is in use by process {slot.active_pid}: `flusso run` "
            f"waits up to {config.source.slot_wait_s:g} s for it to be released"
        )
    else:
        report.notes.append(f"replication slot {name} exists: `flusso run` resumes from it")


def _judge_slot_health(config: FlussoConfig, server: Server, report: ValidationReport) -> None:
    """What `flusso status` would warn about the slot (an inactive slot holding WAL, a slot at risk),
    and an unset max_slot_wal_keep_size, as notes: none of them stops a run."""
    if server.wal is None:
        return
    health = judge(config.source.slot, server.wal, server.slot_info, config.slot.warn_lag)
    for reason in health.reasons:
        if reason.code != "slot_lost":  # _judge_slot says what an invalidated slot means for `run`
            report.notes.append(f"{reason.message}. Fix: {reason.fix}")
    if server.slot_info is None and server.wal.max_slot_wal_keep_size is None:
        report.notes.append(
            "max_slot_wal_keep_size is unset (-1): the slot `flusso run` creates will keep WAL without bound "
            f"while flusso is stopped. Fix: {SET_KEEP}"
        )


def _judge_publication(
    config: FlussoConfig, catalog: Catalog, server: Server, report: ValidationReport
) -> None:
    """`run` creates the publication or adds the missing tables: note it, or say what it lacks to."""
    name, pub = config.source.publication, server.publication
    tables = [t for t in config.tables() if t in catalog.tables]
    if pub is not None:
        lacking = [a for a in _ACTIONS if a not in pub.actions]
        if lacking:
            report.problems.append(
                Problem(
                    "source.publication",
                    f"publication {name} does not publish {', '.join(lacking)}, so those changes would be "
                    f"missed: run ALTER PUBLICATION {_q(name)} SET (publish = '{', '.join(_ACTIONS)}') "
                    "as its owner",
                )
            )
    to_add = tables if pub is None else [] if pub.all_tables else [t for t in tables if t not in pub.tables]
    if pub is None:
        report.notes.append(
            f"publication {name} does not exist yet: `flusso run` creates it for {_list(tables) or 'none'}"
        )
    elif to_add:
        report.notes.append(f"publication {name} exists: `flusso run` adds {_list(to_add)} to it")
    else:
        report.notes.append(f"publication {name} exists and covers every table")
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
        statement = f"CREATE PUBLICATION {_q(name)} FOR TABLE {', '.join(map(_qt, to_add))}"
    else:
        what = f"may not add {_list(to_add)} to publication {name}"
        statement = f"ALTER PUBLICATION {_q(name)} ADD TABLE {', '.join(map(_qt, to_add))}"
    grant = (
        f" (or GRANT CREATE ON DATABASE {_q(server.database)} TO {_q(server.user)})"
        if pub is None and not not_owned
        else ""
    )
    report.problems.append(
        Problem(
            "source.publication",
            f'role "{server.user}" {what}: it lacks {" and ".join(lacks)}: run {statement} as the owner '
            f"of the tables, or run flusso as that owner{grant}",
        )
    )


def _judge_access(config: FlussoConfig, catalog: Catalog, server: Server, report: ValidationReport) -> None:
    """SELECT on every table (snapshots and builds read them); REPLICA IDENTITY FULL where needed."""
    paths = _first_paths(config)
    needed = old_row_columns(config)
    for name in sorted(needs_full_identity(config, catalog), key=list(paths).index):
        table = catalog.tables[name]
        if table.replica_identity == "f":
            continue
        why = f"old rows must carry {', '.join(sorted(needed[name] & table.columns.keys()))}"
        if _owned(server, name):
            report.notes.append(
                f"{name} needs REPLICA IDENTITY FULL ({why}) and does not have it yet: `flusso run` sets it"
            )
        else:
            report.problems.append(
                Problem(
                    paths[name],
                    f"{name} needs REPLICA IDENTITY FULL ({why}), and only its owner may set it: run "
                    f"ALTER TABLE {_qt(name)} REPLICA IDENTITY FULL as its owner",
                )
            )
    for name, path in paths.items():
        access = server.access.get(name)
        if access is not None and not access.readable and not server.superuser:
            schema = split_table(name)[0]
            report.problems.append(
                Problem(
                    path,
                    f'role "{server.user}" may not read {name}: run GRANT SELECT ON {_qt(name)} TO '
                    f"{_q(server.user)} (and GRANT USAGE ON SCHEMA {_q(schema)} TO {_q(server.user)})",
                )
            )


def _owned(server: Server, table: str) -> bool:
    access = server.access.get(table)
    return server.superuser or (access is not None and access.owned)


def _first_paths(config: FlussoConfig) -> dict[str, str]:
    """Each table's first place in the file, to point a problem about the table itself at."""
    paths: dict[str, str] = {}
    for index_name, index in config.indexes.items():
        paths.setdefault(qualify(index.table), f"{relation_path(index_name)}.table")
    for edge in edges(config):
        if edge.through is not None:
            paths.setdefault(edge.through, f"{edge.path}.through.table")
        paths.setdefault(edge.table, f"{edge.path}.table")
    return paths


def _list(names: list[str]) -> str:
    return ", ".join(names)
