"""Set-up and inspection: the publication, replica identity and the slot; positions; teardown.

`prepare` is idempotent and repairs what it finds wrong (a publication dropped or narrowed, an
identity set back, a slot invalidated), recording in `Repairs` what may have let changes by, so
that the engine reseeds what they feed.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import errors, sql

from ...changes import Position, int_to_lsn, lsn_to_int
from ...config import qualify, split_table
from ...error import SourceError
from .. import refresh
from .base import Repairs, WalBase, first_line, sql_errors
from .health import SlotHealth, slot_health
from .schema import read_state
from .slot import SlotInfo, WalServer, move_slot, read_slot, remove_slot

PUBLISH = "insert, update, delete, truncate"


class Setup(WalBase):
    """The part of `WalCapture` that sets up, inspects and tears down what capture needs."""

    def prepare(self, tables: Sequence[str]) -> bool:
        """Create what capture needs, idempotently: the publication for exactly `tables`, REPLICA
        IDENTITY FULL on the `full_identity` tables, and the slot. True iff the slot had to be
        created (the caller then treats every index as unseeded: changes may have been missed).

        The publication comes first: pgoutput reads it through the slot's historic snapshot, so a
        publication created after the slot would be missing for the WAL in between.
        """
        wanted = list(dict.fromkeys(qualify(t) for t in tables))
        if not wanted and not self._matviews:
            raise ValueError("prepare() needs at least one table to publish")
        self.repairs = Repairs()
        self._tables = wanted
        with self._sql() as conn:
            (level,) = conn.execute("SHOW wal_level").fetchone() or ("",)
            if level != "logical":
                raise SourceError(
                    f"wal_level is {level!r}, but capture needs 'logical': set wal_level = logical in "
                    "postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and restart PostgreSQL"
                )
            self._ensure_publication(conn, wanted)
            self._ensure_identity(conn)
            created = self._ensure_slot(conn)
            if self.repairs.publication_created and not created:
                self._skip_unpublished(conn)
            self._catalog_state = read_state(conn, self.publication, wanted)
            self._refreshes = refresh.fingerprints(conn, self._matviews)  # the watch's baseline
            return created

    def _skip_unpublished(self, conn: psycopg.Connection) -> None:
        """The publication was just created for a slot that already existed: PostgreSQL (up to 17)
        cannot decode the slot's WAL from before the publication with it ("publication does not
        exist" on every start), and what changed in between was never captured anyway. So the slot
        moves to the current WAL position (its changes from here on are all decodable) and the engine
        reseeds every index from rows read after that: exact, and no slot drop."""
        (lsn,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone() or ("0/0",)
        try:
            advanced = move_slot(conn, self.slot, lsn, tries=100)  # waits for a crashed run's walsender
        except psycopg.Error as err:
            raise SourceError(
                f"publication {self.publication} had to be created for the existing slot {self.slot}, "
                f"and the slot could not be moved past the changes it cannot decode ({first_line(err)}): "
                "run `flusso run --recreate-slot` (or `flusso teardown`, then `flusso run`): every index "
                "is reseeded"
            ) from err
        if not advanced:
            raise SourceError(
                f'replication slot "{self.slot}" stays in use: it could not be moved past the WAL from before '
                f"publication {self.publication} was created; stop its other consumer, then start again"
            )
        self.repairs.slot_advanced = True
        self._log.warning(
            "publication %s did not exist (dropped?): moved slot %s to %s, past the WAL it cannot decode; "
            "the changes in between were not captured, so every index is reseeded",
            self.publication, self.slot, lsn,
        )

    def _ensure_publication(self, conn: psycopg.Connection, tables: list[str]) -> None:
        name = sql.Identifier(self.publication)
        targets = sql.SQL(", ").join(sql.Identifier(*split_table(t)) for t in tables)
        row = conn.execute(
            "SELECT oid, puballtables, pubinsert AND pubupdate AND pubdelete AND pubtruncate, pubviaroot "
            "FROM pg_publication WHERE pubname = %s",
            (self.publication,),
        ).fetchone()
        with sql_errors(f"publication {self.publication}"):
            if row is not None and row[1]:
                conn.execute(sql.SQL("DROP PUBLICATION {}").format(name))
                self._log.info("publication %s was FOR ALL TABLES; recreating it for flusso's tables", name)
                row = None
            if row is None:
                try:
                    conn.execute(
                        sql.SQL(
                            "CREATE PUBLICATION {} {} WITH (publish = {}, publish_via_partition_root = true)"
                        ).format(name, sql.SQL("FOR TABLE {}").format(targets) if tables else sql.SQL(""),
                                 sql.Literal(PUBLISH))
                    )  # no table: every index reads materialized views alone (the slot still gives positions)
                except (errors.DuplicateObject, errors.UniqueViolation):  # the latter when both CREATEs overlap
                    # created a moment ago by a concurrent start (two Dagster partitions at once) for
                    # the same config: it is there now, as it should be
                    self._log.debug("publication %s was created concurrently", self.publication)
                    return
                self._log.info("created publication %s for %d tables", self.publication, len(tables))
                self.repairs.publication_created = True
                return
            oid, _, all_actions, via_root = row
            current = conn.execute(
                "SELECT n.nspname || '.' || c.relname, pr.prattrs IS NOT NULL OR pr.prqual IS NOT NULL "
                "FROM pg_publication_rel pr JOIN pg_class c ON c.oid = pr.prrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE pr.prpubid = %s",
                (oid,),
            ).fetchall()
            (schemas,) = conn.execute(
                "SELECT count(*) FROM pg_publication_namespace WHERE pnpubid = %s", (oid,)
            ).fetchone() or (0,)
            narrowed = any(filtered for _, filtered in current)
            self.repairs.tables_added = set(tables) - {t for t, _ in current}
            if not tables and current:
                gone = sql.SQL(", ").join(sql.Identifier(*split_table(t)) for t, _ in current)
                conn.execute(sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(name, gone))
            elif {t for t, _ in current} != set(tables) or schemas or narrowed:
                conn.execute(sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(name, targets))
                self._log.info(
                    "publication %s now covers exactly flusso's %d tables", self.publication, len(tables)
                )
            if not (all_actions and via_root):
                options = sql.SQL("ALTER PUBLICATION {} SET (publish = {}, publish_via_partition_root = on)")
                conn.execute(options.format(name, sql.Literal(PUBLISH)))
                self._log.info("publication %s now publishes %s", self.publication, PUBLISH)

    def _ensure_identity(self, conn: psycopg.Connection) -> None:
        if not self._full_identity:
            return
        # every partition too: PostgreSQL does not pass a partitioned table's identity down, and a
        # change through a root publication carries the old row its partition's identity logged
        rows = conn.execute(
            "WITH RECURSIVE tree(top, relid, level) AS ("
            " SELECT n.nspname || '.' || c.relname, c.oid, 0 FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p') AND n.nspname || '.' || c.relname = ANY(%s)"
            " UNION ALL SELECT tree.top, i.inhrelid, tree.level + 1 FROM pg_inherits i"
            " JOIN tree ON i.inhparent = tree.relid JOIN pg_class k ON k.oid = i.inhrelid AND k.relispartition) "
            "SELECT tree.top, pn.nspname, pc.relname, pc.relreplident FROM tree "
            "JOIN pg_class pc ON pc.oid = tree.relid JOIN pg_namespace pn ON pn.oid = pc.relnamespace "
            "ORDER BY 1, tree.level, 3",
            (sorted(self._full_identity),),
        ).fetchall()
        missing = sorted(self._full_identity - {r[0] for r in rows})
        if missing:
            raise SourceError(f"cannot set REPLICA IDENTITY FULL: table {', '.join(missing)} does not exist")
        for table, schema, name, ident in rows:
            if ident == "f":
                continue
            what = table if f"{schema}.{name}" == table else f"partition {schema}.{name} of {table}"
            with sql_errors(what):
                target = sql.Identifier(schema, name)
                conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(target))
            self.repairs.identity_set.add(table)
            self._log.info(
                "set REPLICA IDENTITY FULL on %s: its old rows are needed to find the documents it leaves",
                what,
            )

    def _ensure_slot(self, conn: psycopg.Connection) -> bool:
        _, info = read_slot(conn, self.slot, wal_dir=False)
        if info is not None:
            kind, plugin, wal_status = info.slot_type, info.plugin, info.wal_status
            (database,) = conn.execute("SELECT current_database()").fetchone() or ("",)
            if kind != "logical" or plugin != "pgoutput" or info.database != database:
                raise SourceError(
                    f'replication slot "{self.slot}" exists but is not a pgoutput logical slot of this '
                    f"database ({kind}, plugin {plugin}): choose another source.slot, or drop it"
                )
            if wal_status != "lost":
                return False
            self._log.warning(
                "replication slot %s was invalidated by PostgreSQL (wal_status lost: the WAL it still "
                "needed was removed, see max_slot_wal_keep_size), so the changes since its last confirmed "
                "position are gone: dropping and recreating it; every index it feeds is rebuilt",
                self.slot,
            )
            self._drop_slot(conn)
        try:
            with sql_errors(f"replication slot {self.slot}"):
                conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (self.slot,))
        except SourceError as err:
            if isinstance(err.__cause__, errors.DuplicateObject):
                return False  # created concurrently by another start
            raise
        self._log.info("created logical replication slot %s (pgoutput)", self.slot)
        return True

    def system_identifier(self) -> int:
        """The cluster's identity: a restored or different server has another one."""
        with self._sql() as conn:
            row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        assert row is not None
        return int(row[0])

    def timeline(self) -> int:
        """The WAL timeline the server writes on now (a point-in-time restore or a promotion starts a
        new one). Read from the current WAL file's name: `pg_control_checkpoint()` lags behind a
        promotion until the next checkpoint."""
        with self._sql() as conn:
            row = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
        assert row is not None
        return int(row[0][:8], 16)

    def current_position(self) -> Position:
        with self._sql() as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return lsn_to_int(row[0])

    def slot_info(self) -> SlotInfo | None:
        """The slot as the server sees it, or None if it does not exist."""
        return self.wal_state()[1]

    def wal_state(self) -> tuple[WalServer, SlotInfo | None]:
        """The server's WAL settings and the slot, for health reports (`read_slot`)."""
        with self._sql() as conn:
            return read_slot(conn, self.slot)

    def health(self, warn_lag: int) -> SlotHealth:
        """The slot's health (`health.judge`): ok, warning or critical, each reason with its fix."""
        with self._sql() as conn:
            return slot_health(conn, self._dsn, self.slot, warn_lag)

    def teardown(self) -> None:
        """Drop the slot (ending the server process that holds it, if any) and the publication."""
        with self._sql() as conn:
            self._drop_slot(conn)
            conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(self.publication)))
            self._log.info("dropped replication slot %s and publication %s", self.slot, self.publication)

    def _drop_slot(self, conn: psycopg.Connection) -> None:
        remove_slot(conn, self.slot)

    def table_fingerprints(self, tables: Sequence[str]) -> dict[str, list]:
        """What the seeded marker records of `tables`: OIDs, partitions and their storage (`schema.py`),
        and of materialized views what a REFRESH changes (`capture/refresh.py`)."""
        views = [t for t in tables if qualify(t) in self._matviews]
        with self._sql() as conn:
            state = read_state(conn, self.publication, [t for t in tables if t not in views])
            refreshes = refresh.fingerprints(conn, views)
        return {**{name: t.fingerprint() for name, t in state.tables.items() if t is not None}, **refreshes}

    def drop_slot(self) -> None:
        """Drop the slot (ending the server process that holds it): `flusso run --recreate-slot`."""
        with self._sql() as conn:
            self._drop_slot(conn)

    def _advance_slot(self, position: Position) -> None:
        """Move an inactive slot's confirmed position with SQL (after stream() has returned)."""
        lsn = int_to_lsn(position)
        try:
            with self._sql() as conn:
                # waits while our walsender is still exiting; False: someone else streams from it
                if move_slot(conn, self.slot, lsn, tries=30):
                    self._sent = max(self._sent, position)
                    return
        except (psycopg.Error, SourceError) as err:
            self._log.warning(
                "could not advance slot %s to %s (%s): changes after its confirmed position will be "
                "delivered again on the next start",
                self.slot, lsn, first_line(err),
            )
            return
        self._log.warning("slot %s is in use elsewhere; its position was not advanced to %s", self.slot, lsn)

