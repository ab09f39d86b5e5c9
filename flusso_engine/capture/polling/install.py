"""What polling installs in the source database, idempotently, and takes away again.

In a schema of flusso's own (`source.polling_schema`, `flusso` by default):

- `changes`: the change log, one row per row change (and one per TRUNCATE statement) of every slot
  that uses the schema: the slot, the writer's transaction id (`pg_current_xact_id()`, xid8), the
  table as the config names it, the operation, and the old and new values of the columns resolve
  reads (`Install.columns`), as `to_jsonb` renders them. One index, `(slot, xid, id)`, serves the
  poll's range query and the ack's clean-up.
- `cursors`: per slot, the snapshot of the last acknowledged poll, its position and the install's
  incarnation (a cursor made again means changes in between were not recorded: every index reseeds).
- `record_change()`: the trigger function (SECURITY DEFINER, so writers need no privilege on the
  change log; `search_path` pinned), and on every table the config reads the triggers
  `flusso_<slot>` (rows) and `flusso_<slot>_t` (TRUNCATE), `ENABLE ALWAYS` so that they fire under
  `session_replication_role = replica` too (pg_restore, some replication tools).

Values are stored as jsonb (`to_jsonb` of the whole row, then only the needed columns), never as
their text: a writer's session settings (TimeZone, DateStyle) must not change a key's text. The
poll renders them back through `jsonb_populate_record`, in flusso's pinned session (`poll.py`).
A column of the row that a migration drops or renames does not break the writers' statements:
the trigger names no column in SQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ...config import split_table
from .. import Repairs

LOCK_TIMEOUT = "30s"  # a CREATE TRIGGER waits for the writers of its table; not for ever

_FUNCTION = """
DECLARE
  cols text[] := TG_ARGV[2:TG_NARGS - 1];
  j jsonb;
  o jsonb;
  n jsonb;
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    INSERT INTO {changes} (slot, tbl, op) VALUES (TG_ARGV[0], TG_ARGV[1], 'T');
    RETURN NULL;
  END IF;
  IF TG_OP <> 'INSERT' THEN
    j := to_jsonb(OLD);
    SELECT jsonb_object_agg(c, j -> c) INTO o FROM unnest(cols) AS c;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    j := to_jsonb(NEW);
    SELECT jsonb_object_agg(c, j -> c) INTO n FROM unnest(cols) AS c;
  END IF;
  INSERT INTO {changes} (slot, tbl, op, old, new) VALUES (TG_ARGV[0], TG_ARGV[1], left(TG_OP, 1), o, n);
  RETURN NULL;
END
"""


def trigger_names(slot: str) -> tuple[str, str]:
    return f"flusso_{slot}", f"flusso_{slot}_t"


@dataclass(frozen=True)
class Trigger:
    """A trigger of this slot as pg_trigger has it."""

    table: str  # schema.name of the table it is on
    name: str
    enabled: str  # O (origin), D (disabled), R (replica), A (always)
    args: tuple[str, ...]


class Install:
    """The DDL of one slot's capture in one schema; every statement composed with `psycopg.sql`."""

    def __init__(self, schema: str, slot: str, columns: Mapping[str, Sequence[str]]) -> None:
        self.schema = schema
        self.slot = slot
        self.columns = {t: list(c) for t, c in columns.items()}  # table -> the columns it records
        self.changes = sql.Identifier(schema, "changes")
        self.cursors = sql.Identifier(schema, "cursors")
        self.function = sql.Identifier(schema, "record_change")

    def args(self, table: str, truncate: bool = False) -> tuple[str, ...]:
        return (self.slot, table) if truncate else (self.slot, table, *self.columns[table])

    # --- reading -----------------------------------------------------------------------------

    def installed(self, conn: psycopg.Connection) -> bool:
        row = conn.execute("SELECT to_regclass(format('%%I.changes', %s::text)) IS NOT NULL "
                           "AND to_regclass(format('%%I.cursors', %s::text)) IS NOT NULL",
                           (self.schema, self.schema)).fetchone()
        return bool(row and row[0])

    def cursor(self, conn: psycopg.Connection) -> tuple[str, int, str] | None:
        """(snapshot, position, incarnation) of this slot's cursor, None when there is none."""
        if not self.installed(conn):
            return None
        row = conn.execute(sql.SQL("SELECT snapshot::text, position, incarnation FROM {} WHERE slot = %s")
                           .format(self.cursors), (self.slot,)).fetchone()
        return None if row is None else (row[0], int(row[1]), row[2])

    def triggers(self, conn: psycopg.Connection) -> list[Trigger]:
        """Every trigger of this slot, on whatever table it is."""
        rows = conn.execute(
            """SELECT n.nspname || '.' || c.relname, t.tgname, t.tgenabled,
                      array_remove(string_to_array(encode(t.tgargs, 'escape'), '\\000'), '')
               FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE t.tgname = ANY(%s) AND NOT t.tgisinternal AND t.tgparentid = 0""",
            (list(trigger_names(self.slot)),),
        ).fetchall()
        return [Trigger(r[0], r[1], r[2], tuple(r[3] or ())) for r in rows]

    # --- set-up ------------------------------------------------------------------------------

    def prepare(self, conn: psycopg.Connection, repairs: Repairs) -> bool:
        """Create what is missing, put right what is wrong, in one transaction; True when the cursor
        had to be made (every index reseeds). What was wrong on an existing install goes into
        `repairs.missed`: changes to those tables may not have been recorded."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('flusso polling install'))")
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
            self._schema(conn)
            existing = self.cursor(conn)
            have = {(t.table, t.name): t for t in self.triggers(conn)}
            rows, truncate = trigger_names(self.slot)
            for table in self.columns:
                for name, is_truncate in ((rows, False), (truncate, True)):
                    found = have.pop((table, name), None)
                    why = self._trigger(conn, table, name, is_truncate, found)
                    if why and existing is not None:
                        repairs.missed.setdefault(table, why)
            for table, name in have:  # a table the config no longer reads
                conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                    sql.Identifier(name), sql.Identifier(*split_table(table))))
            if existing is not None:
                return False
            conn.execute(sql.SQL("DELETE FROM {} WHERE slot = %s").format(self.changes), (self.slot,))
            conn.execute(
                sql.SQL("INSERT INTO {} (slot, snapshot, position, incarnation) SELECT %s, pg_current_snapshot(), "
                        "(pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint, %s").format(self.cursors),
                (self.slot, uuid.uuid4().hex),
            )
            return True

    def _schema(self, conn: psycopg.Connection) -> None:
        schema = sql.Identifier(self.schema)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (slot text NOT NULL, id bigint GENERATED ALWAYS AS IDENTITY, "
            "xid xid8 NOT NULL DEFAULT pg_current_xact_id(), at timestamptz NOT NULL DEFAULT now(), "
            "tbl text NOT NULL, op \"char\" NOT NULL, old jsonb, new jsonb)").format(self.changes))
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS changes_slot_xid ON {} (slot, xid, id)").format(self.changes))
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (slot text PRIMARY KEY, snapshot pg_snapshot NOT NULL, "
            "position bigint NOT NULL, incarnation text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), "
            "acked_at timestamptz)").format(self.cursors))
        body = sql.SQL(_FUNCTION).format(changes=self.changes).as_string(conn)
        conn.execute(sql.SQL(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
            "SET search_path = pg_catalog, pg_temp AS {}").format(self.function, sql.Literal(body)))

    def _trigger(self, conn: psycopg.Connection, table: str, name: str, truncate: bool,
                 found: Trigger | None) -> str | None:
        """Make the trigger right; say why changes may have been missed if it was not."""
        args = self.args(table, truncate)
        target = sql.Identifier(*split_table(table))
        if found is None or found.args != args:
            events = sql.SQL("AFTER TRUNCATE ON {} FOR EACH STATEMENT" if truncate else
                             "AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW").format(target)
            conn.execute(sql.SQL("CREATE OR REPLACE TRIGGER {} {} EXECUTE FUNCTION {}({})").format(
                sql.Identifier(name), events, self.function, sql.SQL(", ").join(map(sql.Literal, args))))
        if found is None or found.enabled != "A":
            conn.execute(sql.SQL("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}").format(target, sql.Identifier(name)))
        if found is None:
            return f"the trigger {name} on {table} did not exist, so changes to it were not recorded"
        if found.args != args:
            return (f"the trigger {name} on {table} recorded other columns (the config changed), so the changes "
                    "it recorded may lack what finds their documents")
        if found.enabled != "A":
            state = {"D": "disabled", "R": "enabled for replica sessions only", "O": "not enabled ALWAYS"}
            return (f"the trigger {name} on {table} was {state.get(found.enabled, found.enabled)}, so changes to it "
                    "may not have been recorded")
        return None

    # --- taking it away ----------------------------------------------------------------------

    def forget(self, conn: psycopg.Connection) -> None:
        """The cursor and the pending changes of this slot (`--recreate-slot`): the next `prepare`
        starts a new incarnation, and every index reseeds."""
        if not self.installed(conn):
            return
        with conn.transaction():
            conn.execute(sql.SQL("DELETE FROM {} WHERE slot = %s").format(self.cursors), (self.slot,))
            conn.execute(sql.SQL("DELETE FROM {} WHERE slot = %s").format(self.changes), (self.slot,))

    def teardown(self, conn: psycopg.Connection) -> None:
        """This slot's triggers, cursor and changes; the schema's objects too once no slot uses them."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('flusso polling install'))")
            for trigger in self.triggers(conn):
                conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                    sql.Identifier(trigger.name), sql.Identifier(*split_table(trigger.table))))
            if not self.installed(conn):
                return
            self.forget(conn)
            (others,) = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self.cursors)).fetchone() or (0,)
            (triggers,) = conn.execute(
                "SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
                "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s AND p.proname = 'record_change'",
                (self.schema,)).fetchone() or (0,)
            if others or triggers:
                return
            conn.execute(sql.SQL("DROP TABLE {}, {}").format(self.changes, self.cursors))
            conn.execute(sql.SQL("DROP FUNCTION {}()").format(self.function))
            conn.execute("SAVEPOINT schema_drop")
            try:  # RESTRICT: anything else someone put in the schema stays, and the schema with it
                conn.execute(sql.SQL("DROP SCHEMA {} RESTRICT").format(sql.Identifier(self.schema)))
            except psycopg.errors.DependentObjectsStillExist:
                conn.execute("ROLLBACK TO SAVEPOINT schema_drop")
