"""`capture: polling` as its users meet it: databases without logical replication, long transactions,
a second poller, a trigger dropped by hand, migrations and replica sessions, status and validate.
(The engine's end-to-end and fault tests run for both backends: test_engine_e2e.py, _faults.py, _ops.py.)"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql as pgsql

from flusso_engine.capture.polling.poll import changes_of
from flusso_engine.config import load_config

from .conftest import BOOKSTORE
from .e2e import Flusso, confirmed, flusso, generate, index_docs, sql, wait_converged, write_config
from .pgcluster import PrivateCluster
from .test_engine_faults import pending


def polling_config(tmp_path: Path, dsn: str, index_prefix: str, **source: object) -> Path:
    config = write_config(tmp_path / "flusso.yaml", dsn, index_prefix, capture="polling",
                          batch={"max_changes": 200, "max_delay_ms": 100})
    if source:
        text = config.read_text()
        extra = "".join(f"  {k}: {v}\n" for k, v in source.items())
        config.write_text(text.replace("  poll_interval_ms: 100\n", "  poll_interval_ms: 100\n" + extra, 1))
    return config


# --- the grouping of a poll's rows (pure) --------------------------------------------------------


def test_a_polls_transactions_end_with_markers_and_only_the_last_carries_its_position() -> None:
    rows = [
        ("4294967301", "public.book", "T", None, None),  # xid 5 of epoch 1: a truncating transaction first
        ("4294967301", "public.book", "I", None, {"id": "1"}),
        ("4294967303", "public.review", "U", {"id": "9", "book_id": "1"}, {"id": "9", "book_id": "2"}),
        ("4294967303", "public.other", "D", {"id": "3"}, None),  # a table this config does not read
        ("4294967304", "public.book", "D", {"id": "2"}, None),
    ]
    out = list(changes_of(rows, position=900, before=500, tables={"public.book", "public.review"}))
    assert [(c.op, c.table, c.position, c.xid) for c in out] == [
        ("truncate", "public.book", 900, 5), ("insert", "public.book", 900, 5), ("commit", "", 500, 5),
        ("update", "public.review", 900, 7), ("commit", "", 500, 7),
        ("delete", "public.book", 900, 8), ("commit", "", 900, 8),
    ]
    assert out[3].old == {"id": "9", "book_id": "1"} and out[3].new == {"id": "9", "book_id": "2"}
    assert list(changes_of([], 900, 500, {"public.book"})) == []


# --- against the real services -------------------------------------------------------------------


@pytest.fixture
def bookstore(bookstore_db: str, index_prefix: str, tmp_path: Path) -> tuple[str, Path]:
    generate(bookstore_db, books=100)
    return bookstore_db, polling_config(tmp_path, bookstore_db, index_prefix)


def test_a_transaction_open_across_many_polls_is_delivered_when_it_commits(bookstore, opensearch) -> None:
    dsn, config = bookstore
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        wait_converged(opensearch, config)
        long = psycopg.connect(dsn)  # one transaction, open across every poll below
        long.execute("UPDATE book SET title = 'written first, committed last' WHERE id = 1")
        long.execute("DELETE FROM review WHERE book_id = 2")
        xid = long.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
        before = confirmed(config)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(20):  # later transactions, committed while the long one is open
                conn.execute("UPDATE book SET title = %s WHERE id = %s", (f"later {i}", 10 + i))
                time.sleep(0.1)
        docs = wait_converged(opensearch, config)  # a fresh build does not see the open transaction either
        assert docs["10"]["title"] == "later 0" and docs["1"]["title"] != "written first, committed last"
        # the later transactions were acknowledged past the open one, which the cursor's snapshot
        # still lists as in progress: its changes are delivered by the first poll that sees it committed
        assert confirmed(config) > before
        schema = load_config(config).source.polling_schema
        with psycopg.connect(dsn, autocommit=True) as conn:
            seen = conn.execute(pgsql.SQL("SELECT pg_visible_in_snapshot(%s::xid8, snapshot), "
                                          "%s::xid8 >= pg_snapshot_xmin(snapshot) FROM {} WHERE slot = %s").format(
                pgsql.Identifier(schema, "cursors")), (xid, xid, load_config(config).source.slot)).fetchone()
        assert seen == (False, True)
        long.commit()
        long.close()
        docs = wait_converged(opensearch, config)
        assert docs["1"]["title"] == "written first, committed last"
        assert docs["2"]["reviews"] == [] or not docs["2"].get("reviews")
        deadline = time.monotonic() + 20
        while pending(dsn, config, b"", "book", 1):  # acknowledged, then removed from the log
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.output()[-3000:]


def test_a_second_poller_of_one_slot_waits_then_exits_2(bookstore, opensearch) -> None:
    _, config = bookstore
    config.write_text(config.read_text().replace("  poll_interval_ms: 100\n",
                                                 "  poll_interval_ms: 100\n  slot_wait_s: 2\n", 1))
    first = Flusso(config)
    try:
        first.wait_for("live capture started")
        status = json.loads(flusso("status", "--json", config=config).stdout)
        assert status["active"] is True
        second = Flusso(config)
        assert second.wait(60) == 2
        out = second.output()
        assert "capture: polling for slot" in out and "is in use by another flusso process" in out
    finally:
        first.stop()
    assert first.proc.returncode == 0


def test_a_dropped_trigger_stops_the_engine_and_a_restart_reinstalls_it_and_rebuilds(bookstore, opensearch) -> None:
    dsn, config = bookstore
    slot = load_config(config).source.slot
    run = Flusso(config)
    run.wait_for("live capture started")
    wait_converged(opensearch, config)
    sql(dsn, f"DROP TRIGGER flusso_{slot} ON review", "UPDATE review SET body = 'unrecorded' WHERE book_id = 3")
    assert run.wait(60) == 2, run.output()[-3000:]
    assert f"the trigger flusso_{slot} on public.review was dropped" in run.output()
    assert "it makes the trigger again and rebuilds every index that reads public.review" in run.output()
    restarted = Flusso(config)
    try:
        restarted.wait_for("live capture started")
        assert "did not exist, so changes to it were not recorded" in restarted.output()
        docs = wait_converged(opensearch, config)
        assert any(r["body"] == "unrecorded" for r in docs["3"]["reviews"])
    finally:
        restarted.stop()


def test_writers_are_not_broken_by_migrations_and_replica_sessions_are_captured(bookstore, opensearch) -> None:
    dsn, config = bookstore
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        wait_converged(opensearch, config)
        # a column flusso does not read comes and goes: the trigger names no column, writers go on
        sql(dsn, "ALTER TABLE book ADD COLUMN note text",
            "UPDATE book SET note = 'n', title = 'with note' WHERE id = 5",
            "ALTER TABLE book DROP COLUMN note", "UPDATE book SET title = 'after the migration' WHERE id = 6")
        # pg_restore and replication tools write as replica sessions: ENABLE ALWAYS still records them
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET session_replication_role = replica")
            conn.execute("UPDATE book SET title = 'written as a replica' WHERE id = 7")
        docs = wait_converged(opensearch, config)
        assert (docs["5"]["title"], docs["6"]["title"], docs["7"]["title"]) == (
            "with note", "after the migration", "written as a replica")
    finally:
        run.stop()
    assert run.proc.returncode == 0


def test_status_shows_the_backlog_and_a_long_transaction(bookstore_db: str, index_prefix: str, tmp_path: Path,
                                                         opensearch) -> None:
    generate(bookstore_db, books=30)
    config = polling_config(tmp_path, bookstore_db, index_prefix, long_transaction_warn_s=1)
    assert flusso("run", "--no-live", config=config).returncode == 0
    sql(bookstore_db, "UPDATE book SET title = 'waiting' WHERE id <= 5")
    with psycopg.connect(bookstore_db) as open_one:
        open_one.execute("SELECT pg_current_xact_id()")  # holds an xid: the horizon
        time.sleep(1.5)
        res = flusso("status", "--json", config=config)
        text = flusso("status", config=config)
    assert res.returncode == 3, res.stdout + res.stderr
    status = json.loads(res.stdout)
    assert status["backlog"]["rows"] == 5 and status["backlog"]["transactions"] == 1
    assert status["health"] == "warning"
    assert [r["code"] for r in status["reasons"]] == ["long_transaction"]
    assert "backlog 5 rows in 1 transactions" in text.stdout
    assert "SELECT pg_terminate_backend(" in text.stdout
    # the backlog is delivered by the next run, and the log emptied
    run = Flusso(config)
    try:
        docs = wait_converged(opensearch, config)
        assert docs["1"]["title"] == "waiting"
    finally:
        run.stop()
    assert json.loads(flusso("status", "--json", config=config).stdout)["backlog"]["rows"] == 0


def test_validate_names_what_polling_needs_with_the_fix(bookstore_db: str, index_prefix: str, tmp_path: Path,
                                                        admin_dsn: str) -> None:
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(pgsql.SQL("CREATE ROLE {} LOGIN PASSWORD 'secret-pw'").format(pgsql.Identifier(role)))
    try:
        sql(bookstore_db, f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
            f"REVOKE CREATE ON SCHEMA public FROM {role}")
        dsn = psycopg.conninfo.make_conninfo(bookstore_db, user=role, password="secret-pw")
        config = polling_config(tmp_path, dsn, index_prefix)
        res = flusso("validate", config=config)
        assert res.returncode == 1, res.stdout + res.stderr
        assert f"GRANT TRIGGER ON public.book TO {role}" in res.stderr
        assert "GRANT CREATE ON DATABASE" in res.stderr and f"TO {role}" in res.stderr
        assert "wal_level" not in res.stderr and "REPLICATION" not in res.stderr
        assert "secret-pw" not in res.stdout + res.stderr
    finally:
        with psycopg.connect(bookstore_db, autocommit=True) as db:
            db.execute(pgsql.SQL("DROP OWNED BY {}").format(pgsql.Identifier(role)))
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(pgsql.SQL("DROP ROLE {}").format(pgsql.Identifier(role)))


def test_a_role_without_replication_on_wal_level_replica_runs_end_to_end(index_prefix: str, tmp_path: Path,
                                                                         opensearch) -> None:
    cluster = PrivateCluster({"wal_level": "replica", "max_wal_senders": "0", "max_replication_slots": "0"}).start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE ROLE app LOGIN NOREPLICATION NOSUPERUSER")
            conn.execute("CREATE DATABASE shop OWNER app")
        dsn = f"postgresql://app@127.0.0.1:{cluster.port}/shop"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute((BOOKSTORE / "schema.sql").read_text())
            assert conn.execute("SHOW wal_level").fetchone()[0] == "replica"
            assert not conn.execute("SELECT rolreplication FROM pg_roles WHERE rolname = 'app'").fetchone()[0]
        generate(dsn, books=80)
        wal = write_config(tmp_path / "wal.yaml", dsn, index_prefix)
        refused = flusso("validate", config=wal)
        assert refused.returncode == 1 and "wal_level" in refused.stderr  # what wal capture would need
        config = polling_config(tmp_path, dsn, index_prefix)
        ok = flusso("validate", config=config)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        run = Flusso(config)
        try:
            run.wait_for("live capture started")
            sql(dsn, "UPDATE book SET title = 'no replication here' WHERE id = 1", "DELETE FROM book WHERE id = 2",
                "INSERT INTO review (book_id, reader_id, rating, body) VALUES (3, 1, 4, 'polled')")
            docs = wait_converged(opensearch, config)
            assert docs["1"]["title"] == "no replication here" and "2" not in docs
            assert any(r["body"] == "polled" for r in docs["3"]["reviews"])
        finally:
            run.stop()
        assert run.proc.returncode == 0, run.output()[-3000:]
        assert len(index_docs(opensearch, next(iter(load_config(config).indexes)))) == 79
    finally:
        cluster.stop()


def test_postgres_crash_under_polling_reconnects_and_converges(index_prefix: str, tmp_path: Path,
                                                               opensearch) -> None:
    """On a private cluster, so that the shared one keeps running: an immediate stop while writers run."""
    cluster = PrivateCluster({"wal_level": "replica"}).start()
    try:
        dsn = cluster.create_database("shop")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute((BOOKSTORE / "schema.sql").read_text())
        generate(dsn, books=60)
        config = polling_config(tmp_path, dsn, index_prefix)
        run = Flusso(config)
        try:
            run.wait_for("live capture started")
            sql(dsn, "UPDATE book SET title = 'before the crash' WHERE id <= 10")
            cluster.restart(mode="immediate")
            sql(dsn, "UPDATE book SET title = 'after the crash' WHERE id <= 5")
            docs = wait_converged(opensearch, config, timeout=90)
            assert docs["1"]["title"] == "after the crash" and docs["9"]["title"] == "before the crash"
            assert "reconnecting" in run.output()
        finally:
            run.stop()
        assert run.proc.returncode == 0, run.output()[-3000:]
    finally:
        cluster.stop()


def test_a_database_refusing_new_connections_for_a_while_is_waited_out(bookstore, opensearch,
                                                                        admin_dsn: str) -> None:
    """The poll's own connection stays up while the database refuses new ones (as during a crash
    restart): the schema watch, which connects on its own every 5 s, fails to connect, and that is
    a reconnect like a lost poll, not the end of the run."""
    dsn, config = bookstore
    database = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        wait_converged(opensearch, config)
        sql(admin_dsn, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            run.wait_for("reconnecting", timeout=30)
        finally:
            sql(admin_dsn, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        sql(dsn, "UPDATE book SET title = 'after the refusals' WHERE id = 3")
        docs = wait_converged(opensearch, config)
        assert docs["3"]["title"] == "after the refusals"
        assert run.proc.poll() is None, run.output()[-3000:]
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.output()[-3000:]


def test_switching_an_index_from_wal_to_polling_reseeds_it_and_follows_changes(bookstore, opensearch) -> None:
    """The polling cursor is a new incarnation: the index is rebuilt from rows (its versions are WAL
    positions either way), and the replication slot left behind is named with the way to drop it."""
    dsn, polling = bookstore
    prefix = next(iter(load_config(polling).indexes)).removesuffix("books")
    wal = write_config(polling.with_name("wal.yaml"), dsn, prefix)
    wal.write_text(wal.read_text().replace(f"slot: {load_config(wal).source.slot}",
                                           f"slot: {load_config(polling).source.slot}"))
    first = flusso("run", "--no-live", config=wal)
    assert first.returncode == 0, first.stderr[-3000:]
    sql(dsn, "UPDATE book SET title = 'while nothing captured' WHERE id = 1")
    run = Flusso(polling)
    try:
        run.wait_for("live capture started")
        out = run.output()
        assert "replication slot" in out and "pg_drop_replication_slot" in out
        assert "__g2" in json.dumps(json.loads(flusso("status", "--json", config=polling).stdout))
        sql(dsn, "UPDATE book SET title = 'polled after the switch' WHERE id = 2")
        docs = wait_converged(opensearch, polling)
        assert (docs["1"]["title"], docs["2"]["title"]) == ("while nothing captured", "polled after the switch")
    finally:
        run.stop()


def test_writers_need_no_privilege_on_the_change_log(bookstore, opensearch, admin_dsn: str) -> None:
    """The trigger function is SECURITY DEFINER: an application role with DML rights on its tables only
    is recorded, and cannot read or write flusso's change log itself."""
    dsn, config = bookstore
    schema = load_config(config).source.polling_schema
    role = f"app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(pgsql.SQL("CREATE ROLE {} LOGIN PASSWORD 'app-pw'").format(pgsql.Identifier(role)))
    run = Flusso(config)
    try:
        sql(dsn, f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
        run.wait_for("live capture started")
        app = psycopg.conninfo.make_conninfo(dsn, user=role, password="app-pw")
        sql(app, "UPDATE book SET title = 'written by the app role' WHERE id = 4")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), psycopg.connect(app) as conn:
            conn.execute(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(schema, "changes")))
        assert wait_converged(opensearch, config)["4"]["title"] == "written by the app role"
    finally:
        run.stop()
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute(pgsql.SQL("DROP OWNED BY {}").format(pgsql.Identifier(role)))
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(pgsql.SQL("DROP ROLE {}").format(pgsql.Identifier(role)))


def test_prepare_is_idempotent_and_a_trigger_recording_other_columns_reseeds(bookstore, opensearch) -> None:
    dsn, config = bookstore
    source = load_config(config).source
    first = flusso("run", "--no-live", config=config)
    assert first.returncode == 0, first.stderr[-3000:]
    again = flusso("--log-level", "INFO", "run", "--no-live", config=config)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "will be rebuilt" not in again.stderr and "installed capture: polling" not in again.stderr
    # a trigger as an older config made it, recording only the key: old rows it recorded cannot find
    # their book, so the indexes reading review are rebuilt, and the trigger made right
    sql(dsn, f"CREATE OR REPLACE TRIGGER flusso_{source.slot} AFTER INSERT OR UPDATE OR DELETE ON review "
             f"FOR EACH ROW EXECUTE FUNCTION {source.polling_schema}.record_change('{source.slot}', "
             "'public.review', 'id')")
    third = flusso("--log-level", "INFO", "run", "--no-live", config=config)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "recorded other columns (the config changed)" in third.stderr and "will be rebuilt" in third.stderr
    with psycopg.connect(dsn, autocommit=True) as conn:
        (args,) = conn.execute("SELECT encode(tgargs, 'escape') FROM pg_trigger WHERE tgname = %s "
                               "AND tgrelid = 'review'::regclass", (f"flusso_{source.slot}",)).fetchone()
    assert "book_id" in args
    wait_converged(opensearch, config)


def test_a_dropped_change_log_stops_the_engine_and_a_restart_reinstalls_and_reseeds(bookstore, opensearch) -> None:
    """A DBA drops flusso's schema under a running engine: the poll fails, nothing more is
    acknowledged, the message says to start again; the restart reinstalls and rebuilds every index."""
    dsn, config = bookstore
    schema = load_config(config).source.polling_schema
    run = Flusso(config)
    run.wait_for("live capture started")
    wait_converged(opensearch, config)
    sql(dsn, f"DROP SCHEMA {schema} CASCADE", "UPDATE book SET title = 'while the log was gone' WHERE id = 8")
    assert run.wait(60) == 2, run.output()[-3000:]
    assert "nothing after the last flush was acknowledged" in run.output()
    restarted = Flusso(config)
    try:
        restarted.wait_for("live capture started")
        assert "installed capture: polling" in restarted.output()
        assert wait_converged(opensearch, config)["8"]["title"] == "while the log was gone"
    finally:
        restarted.stop()


def test_a_column_the_config_reads_renamed_under_capture_stops_naming_the_fix(bookstore, opensearch) -> None:
    dsn, config = bookstore
    run = Flusso(config)
    run.wait_for("live capture started")
    wait_converged(opensearch, config)
    sql(dsn, "ALTER TABLE review RENAME COLUMN book_id TO the_book",
        "UPDATE review SET body = 'after the rename' WHERE id = 1")  # writers are not broken
    assert run.wait(60) == 2, run.output()[-3000:]
    out = run.output()
    assert "fix flusso.yaml or the table, then start `flusso run` again" in out, out[-3000:]
    assert "book_id" in out
