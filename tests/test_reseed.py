"""Zero-downtime reseeds (issue #12), end to end against the real services: while writers change
every table and a poller counts and searches the alias every 50 ms, a forced reseed (beside a live
`flusso run`, and with none), a definition change, a child and a root TRUNCATE, rebuilds killed at
each failpoint, a live engine killed during a rebuild and the migration of an index made before
generations each leave every poll answered, never a 404, the count within the bound
(reseed_bound.py), the alias on a new generation and the index equal to a fresh build. The helpers
are in `reseed.py`; `reseed_writers.py` is the load.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from opensearchpy import OpenSearch

from flusso_engine.config import load_config

from .conftest import OPENSEARCH_URL
from .e2e import Flusso, current_lsn, flusso, generate, slot_confirmed, sql, wait_converged, write_config
from .reseed import (
    Load,
    Poller,
    Report,
    Writers,
    generations,
    make_concrete_index,
    serving,
    serving_generation,
    settled,
    wait_serving,
)

BOOKS = 1000
SETTLE_S = 1.0  # writes before and after each step, so that every step happens under load


@dataclass
class Store:
    """A bookstore of BOOKS books, its config, the alias, and every `flusso run` a test starts
    (stopped at the end, before the database is dropped)."""

    dsn: str
    config: Path
    alias: str
    runs: list[Flusso] = field(default_factory=list)

    def poller(self) -> Poller:
        return Poller.for_config(self.config)

    def writers(self) -> Writers:
        return Writers(self.dsn)

    def start(self, wait: bool = True, converge: bool = False, **kw) -> Flusso:
        """`flusso run`; with `wait`, until it is live; with `converge`, until the index equals a fresh
        build too (the first backfill's last writes may not be searchable yet when live starts, and
        that is not what these tests measure)."""
        run = Flusso(self.config, **kw)
        self.runs.append(run)
        if wait:
            run.wait_for("live capture started")
        if converge:
            wait_converged(OpenSearch([OPENSEARCH_URL]), self.config)
        return run


@pytest.fixture
def store(request, bookstore_db: str, index_prefix: str, tmp_path: Path) -> Iterator[Store]:
    """The bookstore under live load; captured by the WAL unless a test asks for `polling` (indirect)."""
    generate(bookstore_db, books=BOOKS)
    config = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix,
                          batch={"max_changes": 100, "max_delay_ms": 100}, capture=getattr(request, "param", "wal"))
    store = Store(bookstore_db, config, f"{index_prefix}books")
    try:
        yield store
    finally:
        for run in store.runs:
            run.stop()


def assert_zero_downtime(report: Report) -> None:
    """Every poll answered (no 404), no gap, never below the bound: see reseed.py."""
    if report.problems():
        raise AssertionError(report.summary())


def assert_swapped(opensearch, store: Store, before: int | None, gone: list[str] | tuple = ()) -> None:
    problems = settled(opensearch, store.alias, newer_than=before, gone=gone)
    assert not problems, "; ".join(problems)


def assert_answered_by(report: Report, *indexes: str) -> None:
    """Every search that found a document found it in one of `indexes` (the generation serving before
    and the one serving after): never in one being built."""
    answered = {p.index for p in report.polls if p.index is not None}
    assert answered <= set(indexes), f"searches answered by {sorted(answered)}, not only {sorted(indexes)}"


def assert_loaded(writers: Writers) -> None:
    """The load did what it claims: every table of the tree changed, root rows came and went."""
    tables = {"book", "publisher", "author", "reader", "tag", "book_detail", "book_author", "review", "review_tag"}
    assert writers.tables() >= tables, f"tables never written: {tables - writers.tables()} ({writers.ops})"
    assert writers.inserted and writers.deleted, (writers.inserted, writers.deleted)


def force(store: Store, failpoint: str | None = None):
    env = {**os.environ, "FLUSSO_FAILPOINT": failpoint} if failpoint else None
    return flusso("backfill", "--force", "--index", store.alias, config=store.config, env=env)


# --- the harness itself (passes without the feature: it shows the harness raises no false alarm) ---


def test_harness_live_capture_alone_keeps_the_bound(store: Store, opensearch) -> None:
    """Live capture under the writers, no reseed: every poll answered and within the bound."""
    store.start(converge=True)
    with Load(store.config) as load:
        time.sleep(4 * SETTLE_S)
    report = load.report()
    print(report.summary())
    assert_zero_downtime(report)
    assert_loaded(load.writers)
    wait_converged(opensearch, store.config)


def _mark(opensearch, index: str, generation: int, state: str) -> None:
    meta = opensearch.indices.get_mapping(index=index)[index]["mappings"]["_meta"]
    meta["flusso"].update(generation=generation, state=state)
    opensearch.indices.put_mapping(index=index, body={"_meta": meta})


def test_harness_sees_an_atomic_swap_as_zero_downtime_and_a_recreate_as_a_shortfall(store: Store, opensearch) -> None:
    """Generations made by hand: an `_aliases` swap shows nothing to the poller, `settled` reads the
    states, and an index emptied under the alias is a shortfall."""
    first, second = f"{store.alias}__g1", f"{store.alias}__g2"
    make_concrete_index(opensearch, store.config, first)
    _mark(opensearch, first, 1, "serving")
    opensearch.indices.put_alias(index=first, name=store.alias)
    with store.poller() as poller:
        make_concrete_index(opensearch, store.config, second)
        _mark(opensearch, second, 2, "building")
        assert settled(opensearch, store.alias) == [f"left behind: {first}=serving, {second}=building"]
        opensearch.indices.update_aliases(body={"actions": [{"remove": {"index": first, "alias": store.alias}},
                                                            {"add": {"index": second, "alias": store.alias}}]})
        _mark(opensearch, second, 2, "serving")
        _mark(opensearch, first, 1, "previous")
        time.sleep(SETTLE_S)
    assert_zero_downtime(poller.report())
    assert {p.index for p in poller.polls} == {first, second}
    assert serving_generation(opensearch, store.alias) == 2
    assert settled(opensearch, store.alias, newer_than=1) == []
    assert settled(opensearch, store.alias, newer_than=2, gone=[first]) == [
        "still serving generation 2, not one above 2", f"abandoned generations not deleted: ['{first}']"]

    with store.poller() as poller:
        opensearch.delete_by_query(index=store.alias, body={"query": {"match_all": {}}}, refresh=True)
        time.sleep(0.3)
    report = poller.report()
    assert not report.failures and report.worst() is not None and report.worst()[0].seen == 0, report.summary()


# --- each kind of reseed, beside a live `flusso run` ----------------------------------------------


@pytest.mark.parametrize("store", ["wal", "polling"], indirect=True)
def test_forced_reseed_beside_live_capture(store: Store, opensearch) -> None:
    store.start(converge=True)
    before, before_index = serving_generation(opensearch, store.alias), serving(opensearch, store.alias)
    with Load(store.config) as load:
        time.sleep(SETTLE_S)
        forced = force(store)
        time.sleep(SETTLE_S)
    report = load.report()
    assert_zero_downtime(report)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert_swapped(opensearch, store, before)
    assert_answered_by(report, *before_index, *serving(opensearch, store.alias))
    # index_lifecycle.keep_previous (default true): the generation that served before is kept, as previous
    assert {g.generation: g.state for g in generations(opensearch, store.alias)}.get(before) == "previous"
    assert_loaded(load.writers)
    wait_converged(opensearch, store.config)


def test_forced_reseed_with_no_live_engine_then_live_catches_up(store: Store, opensearch) -> None:
    """No `flusso run` holds the slot: the rebuild needs no handshake, the slot keeps the changes, and
    the next `flusso run` writes them to the generations the sink's state names."""
    run = store.start(converge=True)
    before, before_index = serving_generation(opensearch, store.alias), serving(opensearch, store.alias)
    with Load(store.config) as load:
        time.sleep(SETTLE_S)
        stopped = time.monotonic()
        run.stop()
        forced = force(store)
        store.start()
        back = time.monotonic()
        time.sleep(SETTLE_S)
    report = load.report(frozen=[(stopped, back)])
    assert_zero_downtime(report)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert_swapped(opensearch, store, before)
    assert_answered_by(report, *before_index, *serving(opensearch, store.alias))
    wait_converged(opensearch, store.config)


def test_definition_change_rebuilds_while_the_old_generation_serves(store: Store, opensearch) -> None:
    """`flusso run` restarted with a new field: the old generation serves, frozen, until the swap."""
    run = store.start(converge=True)
    before, before_index = serving_generation(opensearch, store.alias), serving(opensearch, store.alias)
    with Load(store.config) as load:
        time.sleep(SETTLE_S)
        stopped = time.monotonic()
        run.stop()
        raw = yaml.safe_load(store.config.read_text())
        raw["indexes"][store.alias]["fields"]["isbn13"] = "isbn"  # a new field: a new definition hash
        store.config.write_text(yaml.safe_dump(raw, sort_keys=False))
        store.start(wait=False)
        swapped_to = wait_serving(opensearch, store.alias, newer_than=before)
        swapped = time.monotonic()
        time.sleep(SETTLE_S)
    # nothing feeds the old generation from the stop until the swap (then live catches up on the slot)
    report = load.report(frozen=[(stopped, swapped)])
    assert_zero_downtime(report)
    assert swapped_to is not None, f"no new generation served: {generations(opensearch, store.alias)}"
    assert_swapped(opensearch, store, before)
    assert_answered_by(report, *before_index, *serving(opensearch, store.alias))
    assert_loaded(load.writers)
    docs = wait_converged(opensearch, store.config)
    assert docs and all(doc["isbn13"] == doc["isbn"] for doc in docs.values())


@pytest.mark.parametrize("store", ["wal", "polling"], indirect=True)
@pytest.mark.parametrize("statement", ["TRUNCATE review CASCADE", "TRUNCATE book CASCADE"], ids=["child", "root"])
def test_truncate_swaps_generations(statement: str, store: Store, opensearch) -> None:
    """A child TRUNCATE rebuilds beside the serving generation; a root TRUNCATE swaps to an empty one."""
    store.start(converge=True)
    before, before_index = serving_generation(opensearch, store.alias), serving(opensearch, store.alias)
    with Load(store.config) as load:
        time.sleep(SETTLE_S)
        sql(store.dsn, statement)
        truncated = time.monotonic()
        swapped_to = wait_serving(opensearch, store.alias, newer_than=before, timeout=30)
        took = time.monotonic() - truncated
        time.sleep(SETTLE_S)
    report = load.report()
    assert_zero_downtime(report)
    assert swapped_to is not None, f"no new generation served: {generations(opensearch, store.alias)}"
    if statement.startswith("TRUNCATE book"):
        assert took < 5, f"a root TRUNCATE took {took:.1f}s to swap (to an empty generation: at once)"
    assert_swapped(opensearch, store, before)
    assert_answered_by(report, *before_index, *serving(opensearch, store.alias))
    assert_loaded(load.writers)
    wait_converged(opensearch, store.config)


# --- kill -9 of the rebuild, of the live engine ---------------------------------------------------


@pytest.mark.parametrize("failpoint", ["rebuild_before_handshake", "rebuild_backfill_flush:3", "rebuild_before_swap",
                                       "rebuild_after_swap"])
def test_rebuild_killed_then_the_next_one_converges(failpoint: str, store: Store, opensearch) -> None:
    """The rebuild (`flusso backfill --force`) SIGKILLed at a failpoint while `flusso run` is live: the
    serving generation keeps answering; the next rebuild deletes the abandoned one and converges."""
    run = store.start(converge=True)
    before = serving_generation(opensearch, store.alias)
    with Load(store.config) as load:
        time.sleep(SETTLE_S)
        killed = force(store, failpoint)
        at_kill, serving_at_kill = generations(opensearch, store.alias), serving_generation(opensearch, store.alias)
        time.sleep(SETTLE_S)
        again = force(store)
        time.sleep(SETTLE_S)
    assert_zero_downtime(load.report())
    assert killed.returncode == -signal.SIGKILL, f"not killed at {failpoint}: {killed.stderr[-2000:]}"
    abandoned = [g.index for g in at_kill if g.state == "building" and g.generation != serving_at_kill]
    if failpoint == "rebuild_after_swap":
        assert None not in (before, serving_at_kill) and serving_at_kill > before, f"not swapped: {at_kill}"
    else:
        assert serving_at_kill == before, f"the serving generation changed under a killed rebuild: {at_kill}"
        assert abandoned, f"no building generation left by the kill at {failpoint}: {at_kill}"
    assert again.returncode == 0, again.stderr[-3000:]
    assert_swapped(opensearch, store, max(before or 0, serving_at_kill or 0), gone=abandoned)
    wait_converged(opensearch, store.config)
    assert run.proc.poll() is None, f"flusso run died: {run.output()[-3000:]}"


def test_live_engine_killed_during_a_rebuild_resumes_dual_writes(store: Store, opensearch) -> None:
    """`flusso run` SIGKILLed after a flush (live_flush) while a rebuild runs beside it: restarted, it
    writes to the generations the sink's state names, and everything converges exactly.

    The writers start once the building generation exists, so that the live engine's flushes (and
    the kill at its third) fall inside the rebuild; 1000 more books make the rebuild long enough.
    """
    sql(store.dsn, "INSERT INTO book (isbn, title) SELECT 'extra-' || g, 'Extra ' || g FROM generate_series(1, 1000) g")
    # the restarted engine's catch-up batch in one chunk: chunks go by id, new rows have the highest,
    # so a refresh between chunks would show a backlog's root delete before its insert (reseed_bound.py)
    raw = yaml.safe_load(store.config.read_text())
    raw["batch"]["max_changes"] = 5000
    store.config.write_text(yaml.safe_dump(raw, sort_keys=False))
    run = store.start(converge=True, env={"FLUSSO_FAILPOINT": "live_flush:3"})
    before = serving_generation(opensearch, store.alias)
    rebuild: dict = {}
    thread = threading.Thread(target=lambda: rebuild.update(done=force(store)))
    with store.poller() as poller:
        thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and thread.is_alive() and not any(
                g.state == "building" for g in generations(opensearch, store.alias)):
            time.sleep(0.02)
        with store.writers() as writers:
            code = run.proc.wait(60)
            died = time.monotonic()
            at_death = generations(opensearch, store.alias)
            during = serving_generation(opensearch, store.alias) == before and any(
                g.state == "building" for g in at_death)
            store.start()
            # back once the restarted engine has caught up with what was committed while it was dead
            # (its first batch can take seconds on a loaded machine): until then nothing fed the index
            behind, slot = current_lsn(store.dsn), load_config(store.config).source.slot
            caught_up = time.monotonic() + 60
            while (slot_confirmed(store.dsn, slot) or 0) < behind and time.monotonic() < caught_up:
                time.sleep(0.05)
            back = time.monotonic()
            thread.join(120)
            wait_serving(opensearch, store.alias, newer_than=before, timeout=30)
            time.sleep(SETTLE_S)
    # nothing feeds the serving generation from the kill until the restarted engine is live again
    assert_zero_downtime(poller.report(frozen=[(died, back)], deletes=writers.root_deletes))
    assert code == -signal.SIGKILL, f"flusso run exited {code}: {run.output()[-3000:]}"
    assert during, f"the live engine was killed outside the rebuild ({at_death}): it tested no dual writes"
    assert rebuild["done"].returncode == 0, rebuild["done"].stderr[-3000:]
    assert_swapped(opensearch, store, before)
    assert_loaded(writers)
    wait_converged(opensearch, store.config)


# --- migration from an index made before generations ----------------------------------------------


def test_migration_from_a_concrete_index_never_lacks_the_name(store: Store, opensearch) -> None:
    """An install from before generations has a concrete index named `books`: the first start of
    `flusso run` rebuilds it into a generation and swaps in one `_aliases` request."""
    assert make_concrete_index(opensearch, store.config, store.alias) == BOOKS
    assert not serving(opensearch, store.alias)
    with Load(store.config) as load:
        time.sleep(SETTLE_S)
        store.start(wait=False)
        migrated_to = wait_serving(opensearch, store.alias, newer_than=None, timeout=30, concrete_ok=True)
        migrated = time.monotonic()
        time.sleep(SETTLE_S)
    # nothing feeds the concrete index from the start until the swap
    report = load.report(frozen=[(load.poller.start_t, migrated)])
    # The one `_aliases` request deletes the concrete index as it adds the alias: the name never
    # lacks (no 404), but a search already running on the concrete index's shards at that instant
    # fails with "all shards failed" (a generation's swap keeps the old one as `previous`: none does).
    report.excused = [p for p in report.polls if not p.ok and p.status == 503 and abs(p.t - migrated) < 3
                      and "search_phase_execution_exception" in (p.error or "")]
    assert len(report.excused) <= 2, report.summary()
    assert 404 not in report.statuses, report.summary()
    assert_zero_downtime(report)
    assert migrated_to is not None, f"{store.alias} never became an alias: {generations(opensearch, store.alias)}"
    assert_swapped(opensearch, store, None)
    assert_loaded(load.writers)
    wait_converged(opensearch, store.config)


# --- the lock, and the build settings ------------------------------------------------------------


def _sink(store: Store):
    from flusso_engine.config import load_config
    from flusso_engine.policy import FailurePolicies
    from flusso_engine.sinks.opensearch.sink import OpenSearchSink

    cfg = load_config(store.config)
    return OpenSearchSink(cfg.sink, FailurePolicies.from_config(cfg.failures))


def test_a_second_rebuild_of_an_index_is_refused_while_one_runs(store: Store, opensearch) -> None:
    """The rebuild in progress is the index's lock: another one says who holds it and changes nothing."""
    from flusso_engine.generations import Building, Generations, physical

    store.start(converge=True)
    before = serving_generation(opensearch, store.alias)
    gens = Generations(_sink(store))
    held = Building(name=physical(store.alias, 99), generation=99, definition_hash="h", owner="another")  # this pid

    def hold(state):  # noqa: ANN001, ANN202
        state.building = held
        return state

    gens.update(store.alias, hold)
    refused = force(store)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"index {store.alias} is being rebuilt already, into {held.name} by pid {os.getpid()}" in refused.stderr
    assert serving_generation(opensearch, store.alias) == before

    def release(state):  # noqa: ANN001, ANN202
        state.building = None
        return state

    gens.update(store.alias, release)
    done = force(store)
    assert done.returncode == 0, done.stderr[-2000:]
    assert serving_generation(opensearch, store.alias) > before
    wait_converged(opensearch, store.config)


def test_a_generation_builds_without_refreshes_or_replicas_and_serves_with_the_configured_ones(
        store: Store, opensearch) -> None:
    store.start(converge=True)
    killed = force(store, "rebuild_backfill_flush:2")
    assert killed.returncode == -signal.SIGKILL
    building = [g.index for g in generations(opensearch, store.alias) if g.state == "building"]
    assert building, generations(opensearch, store.alias)
    flat = opensearch.indices.get_settings(index=building[0], flat_settings=True)[building[0]]["settings"]
    assert (flat["index.refresh_interval"], flat["index.number_of_replicas"]) == ("-1", "0")
    assert force(store).returncode == 0
    serving_index = next(iter(opensearch.indices.get_alias(name=store.alias)))
    flat = opensearch.indices.get_settings(index=serving_index, flat_settings=True)[serving_index]["settings"]
    assert "index.refresh_interval" not in flat, "the configured (default) refresh interval is back"
    assert flat["index.number_of_replicas"] == "0", "the bookstore's configured number_of_replicas: 0"
    assert not opensearch.indices.exists(index=building[0]), "the abandoned generation is deleted"


def test_without_keep_previous_the_replaced_generation_is_deleted_after_the_swap(store: Store, opensearch) -> None:
    raw = yaml.safe_load(store.config.read_text())
    raw["index_lifecycle"] = {"keep_previous": False}
    store.config.write_text(yaml.safe_dump(raw, sort_keys=False))
    store.start(converge=True)
    first = next(iter(opensearch.indices.get_alias(name=store.alias)))
    with store.poller() as poller:
        done = force(store)
        time.sleep(SETTLE_S)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_zero_downtime(poller.report())
    assert not opensearch.indices.exists(index=first), "the replaced generation is gone"
    states = {g.index: g.state for g in generations(opensearch, store.alias)}
    assert list(states.values()) == ["serving"], states
    wait_converged(opensearch, store.config)
