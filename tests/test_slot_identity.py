"""The slot's identity (issue #10 items 4 and 8), against the real services: a slot recreated or
advanced by hand, a slot gone, a database that went back in time, each ends with the index equal
to a fresh build; and the pure judgement and the bounds' bookkeeping without a server."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from opensearchpy import OpenSearch

from flusso_engine.config import load_config
from flusso_engine.sinks.stdout import StdoutSink
from flusso_engine.slotstate import SlotGuard, SlotState, judge, state_key

from .e2e import BOOKSTORE, Flusso, current_lsn, flusso, generate, slot_confirmed, sql, wait_converged, write_config

# --- the judgement, pure ----------------------------------------------------------------------------

STATE = SlotState("s", "sys", "inc-1", timeline=1, confirmed_bound=1000, version_bound=2000)


def verdict(state: SlotState | None = STATE, *, created: bool = False, confirmed: int = 900, current: int = 3000,
            timeline: int = 1, floor: int = 0):
    return judge(state, slot="s", created=created, confirmed=confirmed, current=current, timeline=timeline,
                 floor=floor)


def test_a_slot_confirmed_within_the_bound_is_the_one_followed() -> None:
    assert verdict().same
    assert verdict(confirmed=1000).same, "a slot confirmed exactly up to the bound is flusso's"


def test_a_slot_confirmed_beyond_the_bound_was_moved_by_someone_else() -> None:
    v = verdict(confirmed=1001)
    assert v.kind == "moved"
    assert "dropped and recreated, or advanced, by someone else" in v.reason


def test_a_server_behind_what_flusso_reached_was_restored() -> None:
    assert verdict(current=1999).kind == "restored", "below the versions written"
    assert verdict(current=2500, floor=2600).kind == "restored", "below a seeded marker's position"
    assert "restored from a backup" in verdict(current=5).reason


def test_a_changed_timeline_is_a_restore_or_a_promotion_even_ahead() -> None:
    v = verdict(timeline=2, current=10**9)
    assert v.kind == "timeline" and "timeline 2" in v.reason and "timeline 1" in v.reason


def test_a_created_slot_or_no_record_cannot_be_vouched_for() -> None:
    assert verdict(created=True).kind == "created"
    assert verdict(None).kind == "unknown"


def test_state_round_trip_and_a_foreign_document_is_no_state() -> None:
    assert SlotState.from_doc(STATE.as_doc()) == STATE
    assert SlotState.from_doc({"slot": "s"}) is None
    assert SlotState.from_doc("nonsense") is None


# --- the bounds' bookkeeping, on the stdout sink's in-memory store ------------------------------------


def adopted(sink: StdoutSink, limits: list[int] | None = None, confirmed: int = 100,
            created: bool = True) -> SlotGuard:
    guard = SlotGuard(sink, "s", "sys", on_limit=None if limits is None else limits.append)
    guard.adopt(created=created, read_slot=lambda: confirmed, read_current=lambda: 150, timeline=1)
    return guard


def test_bounds_are_written_only_when_they_grow_and_the_capture_limit_follows() -> None:
    sink, limits = StdoutSink(io.StringIO()), []
    guard = adopted(sink, limits)
    assert guard.state.confirmed_bound == 100 and limits == [100]
    writes = guard.writes
    guard.raise_to(confirm=100, version=150)
    assert guard.writes == writes, "nothing grew: no write"
    guard.raise_to(confirm=120, version=400)
    assert guard.writes == writes + 1 and limits[-1] == 120
    stored = SlotState.from_doc(sink.read_state(state_key("s", "sys"))[0])
    assert (stored.confirmed_bound, stored.version_bound) == (120, 400)


def test_two_engines_on_one_slot_never_lower_each_others_bounds() -> None:
    sink = StdoutSink(io.StringIO())
    first = adopted(sink)
    second = adopted(sink, created=False)
    assert second.incarnation == first.incarnation, "the second start adopts the slot as it is"
    first.raise_to(confirm=500, version=900)
    second.raise_to(confirm=300, version=200)  # its cached state is stale: compare-and-set re-reads
    stored = SlotState.from_doc(sink.read_state(state_key("s", "sys"))[0])
    assert (stored.confirmed_bound, stored.version_bound) == (500, 900)
    assert second.state.confirmed_bound == 500


def test_a_slot_moved_past_the_stored_bound_gets_a_new_incarnation() -> None:
    sink = StdoutSink(io.StringIO())
    before = adopted(sink).incarnation
    again = SlotGuard(sink, "s", "sys")
    v = again.adopt(created=False, read_slot=lambda: 101, read_current=lambda: 150, timeline=1)
    assert v.kind == "moved" and again.incarnation != before
    assert again.state.confirmed_bound == 101, "the new incarnation vouches for where the slot is now"
    third = SlotGuard(sink, "s", "sys")
    assert third.adopt(created=False, read_slot=lambda: 101, read_current=lambda: 150, timeline=1).same


# --- against the real services -------------------------------------------------------------------------


@pytest.fixture
def bookstore(bookstore_db: str, index_prefix: str, tmp_path: Path) -> tuple[str, Path]:
    generate(bookstore_db, books=100)
    return bookstore_db, write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix,
                                      batch={"max_changes": 100, "max_delay_ms": 100})


def seeded(config: Path) -> None:
    done = flusso("run", "--no-live", config=config)
    assert done.returncode == 0, done.stderr[-3000:]


def status(config: Path) -> dict:
    res = flusso("status", "--json", config=config)
    assert res.returncode in (0, 3), res.stderr[-3000:]  # 3: the slot needs attention (gone, lost)
    return json.loads(res.stdout)


def release(conn: psycopg.Connection, slot: str) -> None:
    """End whatever holds the slot and wait until it is free."""
    deadline = time.monotonic() + 30
    while True:
        row = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
        if row is None or row[0] is None:
            return
        conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        assert time.monotonic() < deadline, f"slot {slot} stays active"
        time.sleep(0.05)


def recreate_by_hand(dsn: str, slot: str, *between: str) -> None:
    """What an operator does: drop the slot, (the application commits), create it again by name."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        release(conn, slot)
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        for statement in between:
            conn.execute(statement)
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))


@pytest.mark.parametrize("how", ["recreated", "advanced"])
def test_a_slot_recreated_or_advanced_by_hand_is_reseeded_on_the_next_start(how: str, bookstore, opensearch) -> None:
    dsn, config = bookstore
    slot = load_config(config).source.slot
    index = next(iter(load_config(config).indexes))
    seeded(config)
    missed = ["UPDATE book SET title = 'missed by the slot' WHERE id = 1", "DELETE FROM book WHERE id = 2"]
    if how == "recreated":
        recreate_by_hand(dsn, slot, *missed)
    else:
        sql(dsn, *missed)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_replication_slot_advance(%s, pg_current_wal_lsn())", (slot,))
    assert status(config)["indexes"][index]["seeded"] is False, "status already says what the next start does"
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        assert "by someone else" in run.output() and "every index" in run.output()
        docs = wait_converged(opensearch, config)
        assert docs["1"]["title"] == "missed by the slot" and "2" not in docs
        sql(dsn, "UPDATE book SET title = 'live again' WHERE id = 3")
        assert wait_converged(opensearch, config)["3"]["title"] == "live again"
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.output()[-3000:]
    assert status(config)["indexes"][index]["seeded"] is True


def test_an_unchanged_slot_is_not_reseeded_on_restart(bookstore, opensearch) -> None:
    dsn, config = bookstore
    index = next(iter(load_config(config).indexes))
    seeded(config)
    created = next(iter(opensearch.indices.get_settings(index=index).values()))["settings"]["index"]["creation_date"]
    sql(dsn, "UPDATE book SET title = 'while stopped' WHERE id = 1")
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        assert wait_converged(opensearch, config)["1"]["title"] == "while stopped"
        assert "rebuilt" not in run.output()
    finally:
        run.stop()
    after = next(iter(opensearch.indices.get_settings(index=index).values()))["settings"]["index"]["creation_date"]
    assert after == created, "the slot is the one followed: the index was not recreated"


def test_a_slot_recreated_under_a_running_engine_stops_it_unacked_then_a_restart_reseeds(bookstore,
                                                                                        opensearch) -> None:
    dsn, config = bookstore
    slot = load_config(config).source.slot
    run = Flusso(config)
    run.wait_for("live capture started")
    wait_converged(opensearch, config)
    recreate_by_hand(dsn, slot, "UPDATE book SET title = 'committed while no slot' WHERE id = 5")
    assert run.wait(60) == 2, run.output()[-3000:]
    assert "by someone else" in run.output() and "flusso run" in run.output()
    restarted = Flusso(config)
    try:
        restarted.wait_for("live capture started")
        assert wait_converged(opensearch, config)["5"]["title"] == "committed while no slot"
    finally:
        restarted.stop()


def test_status_says_no_index_is_seeded_while_the_slot_is_gone(bookstore, opensearch) -> None:
    dsn, config = bookstore
    slot = load_config(config).source.slot
    seeded(config)
    assert all(i["seeded"] for i in status(config)["indexes"].values())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    after = status(config)
    assert after["slot_exists"] is False
    assert [i["seeded"] for i in after["indexes"].values()] == [False] * len(after["indexes"])


def _state(opensearch: OpenSearch, config: Path) -> tuple[str, dict]:
    cfg = load_config(config)
    with psycopg.connect(cfg.source.dsn.get_secret_value()) as conn:
        (system_identifier,) = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
    key = state_key(cfg.source.slot, str(system_identifier))
    return key, opensearch.get(index=cfg.sink.state_index, id=key)["_source"]


@pytest.mark.parametrize("where", ["versions", "marker", "timeline"])
def test_a_database_behind_the_index_is_detected_and_reseeded_from_empty(where: str, bookstore, opensearch) -> None:
    """Simulated: the database does not go back in time here. Instead the index and flusso's own
    records are put where they would be after a restore: documents at versions far above the
    server's position with the state's version bound saying flusso wrote them (`versions`), a
    seeded marker at a position the server has not reached (`marker`), or the state of another WAL
    timeline (`timeline`). Without the detection, the change below would be a silent 409."""
    dsn, config = bookstore
    cfg = load_config(config)
    index = next(iter(cfg.indexes))
    seeded(config)
    ahead = current_lsn(dsn) + (1 << 36)
    opensearch.index(index=index, id="1", body={"title": "from the future"}, version=ahead,
                     version_type="external", refresh=True)
    key, state = _state(opensearch, config)
    if where == "versions":
        state["version_bound"] = ahead
    elif where == "timeline":
        state["timeline"] += 1
    else:
        meta = next(iter(opensearch.indices.get_mapping(index=index).values()))["mappings"]["_meta"]
        meta["flusso"]["seeded"]["position"] = ahead
        opensearch.indices.put_mapping(index=index, body={"_meta": meta})
    if where != "marker":
        opensearch.index(index=cfg.sink.state_index, id=key, body=state, refresh=True)
    sql(dsn, "UPDATE book SET title = 'after the restore' WHERE id = 1")
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        out = run.output()
        assert ("restored from a backup" in out) if where != "timeline" else ("timeline" in out), out[-3000:]
        docs = wait_converged(opensearch, config)
        assert docs["1"]["title"] == "after the restore"
        version = opensearch.get(index=index, id="1")["_version"]
        assert version < ahead, "the index was recreated: no version from before the restore is left"
        sql(dsn, "UPDATE book SET title = 'and live' WHERE id = 1")
        assert wait_converged(opensearch, config)["1"]["title"] == "and live"
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.output()[-3000:]


def test_the_slot_is_never_confirmed_past_the_recorded_bound(bookstore, opensearch) -> None:
    dsn, config = bookstore
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(20):
                conn.execute("UPDATE book SET pages = %s WHERE id = %s", (i, 1 + i))
        wait_converged(opensearch, config)
        slot = load_config(config).source.slot
        confirmed = slot_confirmed(dsn, slot)
        _, state = _state(opensearch, config)
        assert confirmed is not None and confirmed <= state["confirmed_bound"]
    finally:
        run.stop()
    _, state = _state(opensearch, config)
    assert slot_confirmed(dsn, load_config(config).source.slot) <= state["confirmed_bound"]


# --- a lost slot: needs a server setting, so a private PostgreSQL of the test's own --------------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_pg(*cmd: str) -> None:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *cmd], check=True, capture_output=True, cwd="/")


@pytest.fixture
def tiny_wal_pg(tmp_path: Path) -> Iterator[str]:
    """A PostgreSQL 15 of this test alone (1 MB WAL segments, max_slot_wal_keep_size = 2MB, trust
    on loopback), stopped and removed afterwards; the shared server is never reconfigured."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 server binaries not found")
    base = Path(tempfile.mkdtemp(prefix="flusso-tinywal-", dir="/var/tmp"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    data, port = base / "data", _free_port()
    try:
        _as_pg(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--wal-segsize=1")
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{base}'\n"
                       "wal_level = logical\nmax_slot_wal_keep_size = 2MB\nmin_wal_size = 2MB\n"
                       "max_wal_size = 4MB\nshared_buffers = 16MB\nfsync = off\n")
        _as_pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "start")
        dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute((BOOKSTORE / "schema.sql").read_text())
        yield dsn
    finally:
        if (data / "postmaster.pid").exists():
            _as_pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


def lose_the_slot(dsn: str, slot: str) -> None:
    """Write WAL past max_slot_wal_keep_size and checkpoint: PostgreSQL invalidates the slot."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS filler (x int)")
        for _ in range(6):
            conn.execute("INSERT INTO filler SELECT generate_series(1, 1000)")
            conn.execute("SELECT pg_switch_wal()")
        conn.execute("CHECKPOINT")
        (status,) = conn.execute("SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s",
                                 (slot,)).fetchone()
    assert status == "lost"


def test_a_lost_slot_is_said_loudly_then_recreated_and_every_index_rebuilt(tiny_wal_pg: str, index_prefix: str,
                                                                           tmp_path: Path, opensearch) -> None:
    generate(tiny_wal_pg, books=50)
    config = write_config(tmp_path / "flusso.yaml", tiny_wal_pg, index_prefix)
    cfg = load_config(config)
    index = next(iter(cfg.indexes))
    seeded(config)
    sql(tiny_wal_pg, "UPDATE book SET title = 'in the WAL the slot lost' WHERE id = 1")
    lose_the_slot(tiny_wal_pg, cfg.source.slot)
    assert status(config)["indexes"][index]["seeded"] is False
    run = Flusso(config)
    try:
        run.wait_for("live capture started")
        assert "invalidated by PostgreSQL (wal_status lost" in run.output()
        assert wait_converged(opensearch, config)["1"]["title"] == "in the WAL the slot lost"
        sql(tiny_wal_pg, "UPDATE book SET title = 'live on the new slot' WHERE id = 2")
        assert wait_converged(opensearch, config)["2"]["title"] == "live on the new slot"
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.output()[-3000:]
