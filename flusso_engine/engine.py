"""The Engine: mapping first, then backfill of what the sink says is unseeded, then the live loop.

It owns the order of things and the guarantees of DESIGN.md §4; the machinery (threads, queue,
worker) is in `pipeline/`, the backends behind their protocols.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass

import psycopg
from psycopg import sql

from . import registry, roles
from .capture import ChangeCapture
from .catalog import read_catalog
from .changes import Position, int_to_lsn, lsn_to_int
from .config import FlussoConfig, qualify, split_table
from .documents import DocumentBuilder
from .documents.plugins import PluginBuilder
from .error import ConfigError, Problem, SourceError
from .generations import Generations, IndexState
from .observer import BackfillReport, LagReport, LoggingObserver, Observer
from .pipeline import CaptureThread, Worker, drive
from .plan import make_plan
from .policy import BatchPolicy, FailurePolicies
from .refusals import connect_failure, endpoint
from .registry import Context
from .reseeds import Reseeds
from .routing import Routing, wait_for
from .sinks import GenerationSink, SeedMarker, Sink
from .slotidentity import SlotIdentity
from .slotstate import SlotGuard
from .validate import put_pipelines, validate

log = logging.getLogger(__name__)

IDLE_RAISE_S = 5.0  # how often, at most, an idle stream's keepalive positions raise the slot's bound


@dataclass
class IndexStatus:
    index: str
    seeded: bool
    documents: int | None
    rows: int | None
    definition_current: bool
    generations: IndexState | None = None  # a sink with generations: serving, building, previous
    # the physical index the name resolves to in the sink now (the alias's generation, the name itself
    # for a concrete index), None when neither exists and searches of it fail; the state document's
    # `serving` is what flusso last recorded, this is what a search finds
    target: str | None = None


class Engine(Reseeds, SlotIdentity):
    def __init__(
        self,
        config: FlussoConfig,
        *,
        stop: threading.Event | None = None,
        observer: Observer | None = None,
        lag_every: float = 60.0,
    ) -> None:
        self.config = config
        self.stop = stop or threading.Event()
        self.observer: Observer = observer or LoggingObserver()
        self.lag_every = lag_every
        self.batch = BatchPolicy.from_config(config.batch)
        self.failures = FailurePolicies.from_config(config.failures)
        # capture stops on its own event, so that on shutdown the engine can still drain, flush and ack
        self._capture_stop = threading.Event()
        self.started = False
        self._dsn = config.source.dsn.get_secret_value()
        self._opened = False
        self._covered: dict[str, Position] = {}  # table -> its indexes were all seeded at or after this
        self._observed: tuple[str | None] | None = None  # the incarnation seen without adopting the slot
        self.routing: Routing | None = None  # live capture's write set (a sink with generations)
        # rebuilds running beside live capture: index -> (thread, its cancel event)
        self._rebuilding: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self.rebuild_errors: list[BaseException] = []
        self._emptied: dict[str, Position] = {}  # index -> the truncate that emptied it last

    def open(self, *, check: bool = True) -> Engine:
        """Connect, validate the config against the database (unless `check` is False: for a quick
        look that runs nothing), read the catalog and derive each index's plan, once; then make the
        parts. Idempotent; `close` (or leaving `with engine:`) releases them."""
        if self._opened:
            return self
        self._connect_check()
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            # before the catalog: a table's definition changed at or before this position is in it
            baseline = lsn_to_int(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])
            self.catalog = read_catalog(conn, self.config.tables())
            if check:
                where = f"flusso.yaml, checked against {endpoint(self._dsn)}"
                validate(self.config, conn, self.catalog).raise_for_problems(where)
            self.system_identifier = str(
                conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]
            )
        self.plan = make_plan(self.config, self.catalog)
        self.context = Context(config=self.config, catalog=self.catalog, plan=self.plan, dsn=self._dsn,
                               stop=self.stop, capture_stop=self._capture_stop, batch=self.batch,
                               failures=self.failures, baseline=baseline)
        self.builder: DocumentBuilder = PluginBuilder.wrap(registry.create("documents", "sql", self.context),
                                                           self.config)
        self.capture: ChangeCapture = registry.create("capture", self.config.source.capture, self.context)
        self.sink: Sink = registry.create("sinks", self.config.sink.type, self.context)
        preflight = getattr(self.sink, "preflight", None)  # a sink may refuse flusso before anything runs
        if preflight is not None:
            try:
                preflight()
            except BaseException:
                for part in (self.capture, self.builder, self.sink):
                    getattr(part, "close", lambda: None)()
                raise
        self.slot_guard = SlotGuard(self.sink, self.config.source.slot, self.system_identifier,
                                    on_limit=self.capture.set_limit)
        self.capture.verify_slot = self._verify_slot
        self.generations = Generations(self.sink) if isinstance(self.sink, GenerationSink) else None
        self._opened = True
        return self

    def __enter__(self) -> Engine:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- construction -----------------------------------------------------------------------

    def _connect_check(self) -> None:
        try:
            with psycopg.connect(self._dsn, connect_timeout=10):
                pass
        except psycopg.OperationalError as err:
            raise SourceError(connect_failure(self._dsn, err)) from err

    def close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        for part in (self.capture, self.builder, self.sink):
            close = getattr(part, "close", None)
            if close is not None:
                close()

    # --- the phases -------------------------------------------------------------------------

    def index_names(self, only: Collection[str] | None = None) -> list[str]:
        names = list(self.config.indexes)
        if only:
            unknown = sorted(set(only) - set(names))
            if unknown:
                raise ConfigError(
                    [Problem("indexes", f'no index named "{u}" (indexes: {", ".join(names)})') for u in unknown]
                )
            names = [n for n in names if n in only]
        return names

    def marker(self, index: str, position: int = 0, tables: dict | None = None) -> SeedMarker:
        return SeedMarker(
            definition_hash=self.builder.definition_hash(index),
            slot=self.config.source.slot,
            system_identifier=self.system_identifier,
            position=position,
            tables=tables or {},
            slot_incarnation=self.slot_incarnation,
        )

    def index_tables(self, index: str) -> set[str]:
        """Every table an index reads: its root, its relations' tables and their join tables."""
        return set(self.plan.index(index).tables)

    def prepare(self, recreate_slot: bool = False) -> bool:
        """The slot and publication first (so nothing committed during a backfill is missed), then
        every index's mapping, then the slot's identity (slotstate.py). Returns True when every index
        must be backfilled: the slot had to be created, or it is not the one the indexes were fed
        from (recreated or moved by someone else, a restored or failed-over database).

        What `prepare` had to repair (a table missing from the publication, replica identity set
        again) and tables changed since an index was seeded (replaced, partitions attached, detached
        or truncated) mean changes may have been missed: those indexes are unseeded, and say why.
        """
        if recreate_slot:
            self.capture.drop_slot()
            what = "polling cursor" if self.config.source.capture == "polling" else "replication slot"
            log.warning("dropped %s %s (--recreate-slot): every index will be reseeded", what, self.config.source.slot)
        created = self.capture.prepare(self.plan.captured(self.config.captured_tables()))
        missed = {} if created else self._missed(self.capture.repairs)
        put_pipelines(self.config, self.sink)  # before any index that names one is created
        for index in self.config.indexes:
            if self.generations is not None:
                self.generations.reconcile(index)  # a rebuild killed earlier: its generation goes
            else:
                self.sink.ensure_index(index, self.builder.mapping(index))
        verdict = self._adopt_slot(created)
        if not verdict.same:
            if self.capture.repairs.publication_created:  # prepare moved the slot itself: say why
                log.warning("every index will be rebuilt: publication %s had to be created again for the existing "
                            "slot, so changes made without it were not captured (the slot was moved past them)",
                            self.config.source.publication)
            elif verdict.kind == "created":
                log.info("%s", verdict.reason)
            elif verdict.kind == "unknown" and self.config.sink.type == "stdout":
                log.debug("%s", verdict.reason)  # the stdout sink keeps nothing: every run backfills
            else:
                log.warning("%s", verdict.reason)
            for index in self.config.indexes:
                # durably: the run that adopted the slot may not be the one that backfills (Dagster);
                # the new incarnation alone unseeds them, this keeps each index's _meta saying so too
                self.sink.mark_unseeded(index)
        else:
            for index in self.config.indexes:
                if missed.get(index) and self.sink.is_seeded(index, self.marker(index)):
                    log.warning("index %s will be rebuilt: %s", index, "; ".join(missed[index]))
                    self.sink.mark_unseeded(index)
        self.started = True
        return not verdict.same

    def raise_bounds(self, confirm: Position, version: Position) -> None:
        """The worker's `guard`: the slot's bounds raised before a flush (slotstate.py)."""
        self.slot_guard.raise_to(confirm=confirm, version=version)

    def _ack(self, position: Position) -> None:
        """Raise the slot's bound (usually the batch's build did already), then acknowledge."""
        self.slot_guard.raise_to(confirm=position)
        self.capture.ack(position)

    def live(self) -> None:
        """Follow the slot until the stop event is set; then flush, ack, return."""
        self._capture_stop.clear()
        queue = registry.create("queue", self.config.queue.type, self.context, self._capture_stop)
        tell = wait_for(self.sink, [i for i, c in self.config.indexes.items() if c.refresh == "wait_for"])
        tell({i: i for i in self.config.indexes})  # without generations, the index is its name
        if self.generations is not None:
            hashes = {i: self.builder.definition_hash(i) for i in self.config.indexes}
            self.routing = Routing(self.generations, hashes, owner=uuid.uuid4().hex,
                                   position=self.capture.current_position, on_refresh=tell)
            self.routing.refresh()
        worker = Worker(self.builder, self.sink, self.batch.max_changes, self.observer,
                        on_truncate=self._on_truncate, on_resync=self._on_resync, in_flight=self.batch.in_flight,
                        guard=self.raise_bounds, routing=self.routing)
        thread = CaptureThread(self.capture.stream, queue, self._capture_stop)
        thread.start()
        log.info("live capture started on slot %s", self.config.source.slot)
        last = [time.monotonic(), 0]
        idle_raised = [0.0]
        # a durable queue (kafka) holds what it confirmed: the slot is acked to that, not after flushes
        held, acked = getattr(queue, "confirmed", None), [0]

        def tick() -> None:
            if self.rebuild_errors:
                raise self.rebuild_errors.pop(0)
            if held is not None and (position := held()) > acked[0]:
                self._ack(position)
                acked[0] = position
            if self.routing is not None:
                self.routing.maybe_refresh()
            now = time.monotonic()
            bound = self.slot_guard.state
            if bound is not None and self.capture.idle > bound.confirmed_bound and (
                now - idle_raised[0] >= IDLE_RAISE_S
            ):
                self.slot_guard.raise_to(confirm=self.capture.idle)  # lets the idle keepalives through
                idle_raised[0] = now
            if now - last[0] < self.lag_every:
                return
            self.report_lag(worker_changes=thread.count - last[1], seconds=now - last[0])
            last[0], last[1] = now, thread.count

        try:
            drive(worker, queue, thread, self.stop, self._capture_stop, self.batch.max_changes,
                  self.batch.max_delay, ack=self._ack, on_tick=tick, on_batch=getattr(queue, "batch_done", None))
        finally:
            self._capture_stop.set()
            worker.close()
            thread.join(timeout=30)
            getattr(queue, "close", lambda: None)()
            for rebuild, _ in list(self._rebuilding.values()):
                rebuild.join(timeout=30)
        if held is not None and (position := held()) > acked[0]:
            self._ack(position)  # what the queue took while stopping

    def report_lag(self, worker_changes: int = 0, seconds: float = 0.0) -> LagReport:
        info = self.capture.slot_info()
        reader = getattr(self.capture, "backlog", None)  # a capture with a change log of its own (polling)
        backlog = reader() if callable(reader) else None
        report = LagReport(
            slot=self.config.source.slot,
            lag_bytes=info.lag_bytes if info else None,
            confirmed_lsn=int_to_lsn(info.confirmed_flush_lsn) if info and info.confirmed_flush_lsn else None,
            changes_per_s=worker_changes / seconds if seconds > 0 else 0.0,
            backlog_rows=backlog.rows if backlog else None,
            oldest_unacked_s=backlog.oldest_s if backlog else None,
            horizon_s=backlog.horizon_s if backlog else None,
        )
        self.observer.lag(report)
        return report

    def run(self, *, live: bool = True, backfill: bool = True, only: Collection[str] | None = None,
            force: bool = False, recreate_slot: bool = False, role: str | None = None) -> list[BackfillReport]:
        """With live capture, an index that has a serving generation is rebuilt beside it (the
        serving one answering meanwhile); one with nothing to serve yet is filled first. A `role`
        (`roles.py`) runs only capture or only a worker of a durable queue."""
        if role is not None:
            roles.check_role_queue(self)
            if role == "worker":
                roles.run_worker(self)
                return []
        created = self.prepare(recreate_slot=recreate_slot)
        if not backfill:
            names: list[str] = []
        elif force:
            names = self.index_names(only)
        else:
            names = self.unseeded(created, only)
        beside = [n for n in names if live and self.generations is not None and self.sink.alias_target(n)]
        first = [n for n in self.index_names(only) if n not in beside]
        reports = self.backfill_unseeded(created, first, force) if first and backfill else []
        if live and not self.stop.is_set():
            for index in beside:
                self.start_rebuild(index, self._why_reseed(index, force))
            if role == "capture":
                roles.run_capture(self)
            else:
                self.live()
        return reports

    # --- verification (verify/) ---------------------------------------------------------------

    def verify(self, only: Collection[str] | None = None, sample: int | None = None,
               settle_s: float = 30.0):  # noqa: ANN201 - list[verify.IndexCheck]
        """Compare every document (or `sample` random ones) with a fresh build of its rows; writes
        nothing. Documents changed while it runs are not reported (`verify/check.py`)."""
        from .verify import verify

        return verify(self, only, sample, settle_s)

    def repair(self, checks, settle_s: float = 30.0):  # noqa: ANN001, ANN201 - verify.IndexCheck -> RepairReport
        """Rebuild exactly the drifted ids of `checks` through the build and flush path, never over a
        newer document, and check them again."""
        from .verify import repair

        return repair(self, checks, settle_s)

    # --- status -----------------------------------------------------------------------------

    def count_rows(self, table: str) -> int:
        schema, name = split_table(table)
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            return conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))
            ).fetchone()[0]

    def slot_info(self):  # noqa: ANN201 - the capture's SlotInfo (or None: no slot)
        return self.capture.slot_info()

    def needs_backfill(self, only: Collection[str] | None = None) -> list[str]:
        """The indexes the sink says are unseeded; all of them while the slot is missing or lost
        (whichever run creates it next, changes were missed). Changes nothing."""
        info = self.capture.slot_info()
        return self.unseeded(created=info is None or info.wal_status == "lost", only=only)

    def teardown(self) -> None:
        """Drop what capture set up (the slot and the publication)."""
        self.capture.teardown()

    def seeded_at(self, index: str) -> SeedMarker | None:
        """The marker of a seeded index (what seeded it, at which position); None if it is unseeded."""
        marker = self.sink.seed_marker(index)
        return marker if marker is not None and index not in self.needs_backfill([index]) else None

    def slot_health(self):  # noqa: ANN201 - the capture's health report (`capture.wal.health.SlotHealth`)
        """Is the slot about to fill the database's disk, or lost? With the fix for each finding."""
        return self.capture.health(self.config.slot.warn_lag)

    def index_status(self, index: str, refresh: bool = False) -> IndexStatus:
        """`seeded` is false while the slot is gone, lost or not the one the index was fed from.
        With `refresh`, the index is refreshed first, so the count includes the latest writes."""
        if refresh and self.sink.definition_hash(index) is not None:
            self.sink.refresh(index)
        marker = self.marker(index)
        return IndexStatus(
            index=index,
            seeded=marker.slot_incarnation is not None and self.sink.is_seeded(index, marker),
            documents=self.sink.count(index),
            rows=self.count_rows(qualify(self.config.indexes[index].table)),
            definition_current=self.sink.definition_hash(index) == marker.definition_hash,
            generations=self.generations.load(index)[0] if self.generations is not None else None,
            target=self.sink.alias_target(index) if isinstance(self.sink, GenerationSink) else index,
        )


def unseeded_indexes(config: FlussoConfig, only: Collection[str] | None = None) -> list[str]:
    """`Engine.needs_backfill` without validating the config first: a cheap look for a sensor's tick."""
    with Engine(config).open(check=False) as engine:
        return engine.needs_backfill(only)


def slot_health(config: FlussoConfig):  # noqa: ANN201 - see Engine.slot_health
    """`Engine.slot_health` without validating the config first: for a sensor's tick and `status`."""
    with Engine(config).open(check=False) as engine:
        return engine.slot_health()
