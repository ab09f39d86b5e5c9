"""The resources: where the config is and which secrets it expands, and `FlussoResource`, whose
methods run the engine's phases for the assets, checks, jobs and sensors.

Every method runs the engine on a worker thread while the op's thread only waits: Dagster delivers
a run's termination as an exception raised in the op's main thread at any bytecode (even inside a
flush), so the engine must never run there. The waiting thread turns that exception into the
engine's stop event, waits for the engine to flush and acknowledge, then re-raises it: the run
ends CANCELED and nothing was lost.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from dagster import (
    AssetExecutionContext,
    AssetObservation,
    ConfigurableResource,
    Failure,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
)

from flusso_engine import roles
from flusso_engine.capture.slots import SlotHealth
from flusso_engine.changes import int_to_lsn
from flusso_engine.config import FlussoConfig, load_config
from flusso_engine.engine import Engine, IndexStatus, slot_health, unseeded_indexes
from flusso_engine.error import FlussoError
from flusso_engine.observer import BackfillReport, LoggingObserver, Observer
from flusso_engine.verify import IndexCheck, RepairReport

from .constants import LIVE_ASSET
from .observer import DagsterObserver
from .process import Worker
from .project import SECRET_VARS

T = TypeVar("T")

SEEDED_REASON = "the index is seeded: nothing was written (materialize with run config force: true to reseed)"


class FlussoConfigResource(ConfigurableResource):
    """The flusso.yaml path and the secrets its `${VAR}`s expand to.

    Give the secrets as `EnvVar`s: Dagster then shows and stores the variable's name, never its
    value. A secret left unset falls back to the process environment (and the config's defaults).
    """

    path: str
    pg_dsn: str | None = None
    opensearch_url: str | None = None
    opensearch_user: str | None = None
    opensearch_password: str | None = None

    def env(self) -> dict[str, str]:
        secrets = {var: getattr(self, field) for field, var in SECRET_VARS.items()}
        return {**os.environ, **{k: v for k, v in secrets.items() if v is not None}}

    def load(self) -> FlussoConfig:
        try:
            return load_config(self.path, env=self.env())
        except FlussoError as err:
            raise Failure(description=str(err)) from None


class FlussoResource(ConfigurableResource):
    """Runs the engine's phases for Dagster: backfill of one index, the live loop, status, seeding state."""

    config: FlussoConfigResource
    heartbeat_s: float = 60.0
    progress_every_s: float = 5.0

    @contextmanager
    def engine(self, stop: threading.Event | None = None,
               observer: Observer | None = None) -> Iterator[Engine]:
        """An engine on the config, closed afterwards; engine errors become a `Failure` with its message."""
        try:
            engine = Engine(self.config.load(), stop=stop, observer=observer, lag_every=self.heartbeat_s).open()
        except FlussoError as err:
            raise Failure(description=str(err)) from None
        try:
            yield engine
        except FlussoError as err:
            raise Failure(description=str(err)) from None
        finally:
            engine.close()

    # --- for the search_index asset and its checks ----------------------------------------

    def backfill(self, context: AssetExecutionContext | OpExecutionContext, index: str, force: bool = False,
                 stop: threading.Event | None = None) -> MaterializeResult:
        """`flusso backfill --index INDEX [--force]`: slot first, mapping, then the backfill if the sink
        says the index is unseeded (or `force`). Progress goes to the run's log every few seconds."""
        stop = stop or threading.Event()
        observer = DagsterObserver(context.log, every=self.progress_every_s)

        def work() -> BackfillReport:
            with self.engine(stop, observer) as engine:
                created = engine.prepare()  # the slot exists before the snapshot starts
                (report,) = engine.backfill_unseeded(created, [index], force=force)
                return report

        report = supervise(work, stop, log=context.log, name=f"flusso-backfill-{index}")
        if report.skipped and stop.is_set():
            raise Failure(description=f"the backfill of {index} was stopped before it finished; "
                                      "the index stays unseeded")
        if report.skipped:
            context.log.info("%s: %s", index, SEEDED_REASON)
            return MaterializeResult(metadata={"seeded": MetadataValue.text(SEEDED_REASON),
                                               "documents_written": 0, "forced": force})
        metadata: dict = {
            "documents_written": MetadataValue.int(report.documents),
            "root_rows": MetadataValue.int(report.rows),
            "duration_s": MetadataValue.float(round(report.seconds, 3)),
            "documents_per_s": MetadataValue.float(round(report.rate, 1)),
            "rejected": MetadataValue.int(report.rejected),
            "forced": force,
        }
        if report.generation is not None:  # zero-downtime: built beside the serving one, then swapped
            metadata.update({
                "alias": MetadataValue.text(index),
                "generation": MetadataValue.int(report.generation),
                "physical_index": MetadataValue.text(report.physical or ""),
                "previous_generation": MetadataValue.text(report.previous or "none"),
                "swapped_at": MetadataValue.text(report.swapped_at or ""),
                "serving_while_building": MetadataValue.text(
                    "frozen: the definition changed, so the replaced generation was not written meanwhile"
                    if report.frozen else "kept current by live capture (written to both generations)"),
            })
        return MaterializeResult(metadata=metadata)

    def status(self, index: str) -> IndexStatus:
        """Documents in the index (refreshed first), rows in its root table, seeded, definition current."""
        with self.engine(observer=LoggingObserver()) as engine:
            return engine.index_status(index, refresh=True)

    def verify(self, index: str, sample: int | None) -> IndexCheck:
        """`flusso verify --index INDEX [--sample N]`: the drift of one index; writes nothing."""
        with self.engine(observer=LoggingObserver()) as engine:
            (check,) = engine.verify([index], sample=sample)
            return check

    def verify_repair(self, indexes: list[str] | None) -> tuple[list[IndexCheck], RepairReport | None]:
        """`flusso verify --full --repair`: every id of `indexes` (all: None) checked, the drifted
        ones rebuilt (never over a newer document) and checked again."""
        with self.engine(observer=LoggingObserver()) as engine:
            checks = engine.verify(indexes)
            if not any(c.findings for c in checks):
                return checks, None
            return checks, engine.repair(checks)

    def unseeded(self) -> list[str]:
        """The indexes the sink says need a backfill; all of them while the slot is missing or lost
        (whichever run creates it next, changes were missed)."""
        try:
            return unseeded_indexes(self.config.load())  # no whole engine per sensor tick
        except FlussoError as err:
            raise Failure(description=str(err)) from None

    def seeded_outside(self, indexes: list[str]) -> dict[str, dict]:
        """For each of `indexes` that the sink says is seeded: the metadata of a materialization
        reporting it (for an index seeded by `flusso backfill`, or before Dagster ran)."""
        out: dict[str, dict] = {}
        with self.engine(observer=LoggingObserver()) as engine:
            for index in indexes:
                marker = engine.seeded_at(index)
                if marker is None:
                    continue
                status = engine.index_status(index, refresh=True)
                out[index] = {
                    "seeded": MetadataValue.text("seeded outside Dagster (flusso backfill or flusso run); "
                                                 "reported from the index's seeded marker"),
                    "documents": MetadataValue.int(status.documents or 0),
                    "root_rows": MetadataValue.int(status.rows or 0),
                    "seeded_at_lsn": MetadataValue.text(int_to_lsn(marker.position)),
                    "definition_hash": MetadataValue.text(marker.definition_hash),
                }
        return out

    def slot_health(self) -> SlotHealth:
        """The slot's health as `flusso status` judges it, without validating the whole config (it must
        answer while live_capture is down, and cheaply, on every tick of its sensor)."""
        config = self.config.load()
        try:
            return slot_health(config)
        except FlussoError as err:
            raise Failure(description=f"cannot read the health of slot {config.source.slot}: {err}. "
                                      "Check that PostgreSQL is up and source.dsn is right") from None

    # --- for the live_capture job ---------------------------------------------------------

    def run_live(self, context: OpExecutionContext, role: str = "live", stop: threading.Event | None = None) -> None:
        """Mapping first, then the live loop (no backfill) until the run is terminated or `stop` is set.

        `role` (Kafka's queue, `flusso_engine.roles`): `capture` prepares the slot and streams it into
        the topic; `worker` consumes, builds and flushes; `live` (the default) does both in this
        process, as `flusso run` does. The op's thread records a heartbeat every `heartbeat_s` as an
        observation of `flusso_live`, with the slot's lag (capture, live) and the throughput: as long
        as the run's process is alive, whatever the engine is busy with, so a stale heartbeat means a
        dead process.
        """
        stop = stop or threading.Event()
        observer = DagsterObserver(context.log, every=self.progress_every_s)
        heartbeat = Heartbeat(context, observer, self.heartbeat_s, role)

        def work() -> None:
            with self.engine(stop, observer) as engine:
                if role == "worker":
                    roles.check_role_queue(engine)
                    heartbeat.state = "live"
                    roles.run_worker(engine)  # holds no slot: attaches to the state the capture role adopted
                    return
                if role == "capture":
                    roles.check_role_queue(engine)  # before the slot is made: a channel cannot take this role
                engine.prepare()
                heartbeat.state = "live"
                engine.report_lag()
                if role == "capture":
                    roles.run_capture(engine)
                else:
                    engine.live()
                _released(engine)
                engine.report_lag()  # where the slot stands after the last ack

        heartbeat.beat()
        try:
            supervise(work, stop, on_wait=heartbeat.maybe_beat, log=context.log, name=f"flusso-{role}")
        finally:
            heartbeat.state = "stopped"
            heartbeat.last_beat()


def _released(engine: Engine, timeout_s: float = 5.0) -> None:
    """Wait (briefly) for the server to let go of the slot: its confirmed position is final then."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = engine.slot_info()
        if info is None or not info.active:
            return
        time.sleep(0.1)


class Heartbeat:
    """live_capture's heartbeat: an `AssetObservation` of `flusso_live` from the op's own thread."""

    def __init__(self, context: OpExecutionContext, observer: DagsterObserver, every: float,
                 role: str = "live") -> None:
        self.context = context
        self.role = role
        self.observer = observer
        self.every = every
        self.state = "starting"
        self._last = (time.monotonic(), 0, 0)
        self._lag_seen = 0.0
        self._worker = Worker.current().metadata()  # for the keeper, to end this process if it goes stale

    def maybe_beat(self) -> None:
        """Beat when the engine has measured the lag again (every `every` s), or `every` s passed
        without it (the engine is busy: the process is still alive)."""
        lag_at = self.observer.snapshot()[3]
        if time.monotonic() - self._last[0] >= self.every or (lag_at or 0) > self._lag_seen:
            self.beat()

    def last_beat(self) -> None:
        """The final observation, where the slot stands after the last ack; best effort."""
        try:
            self.beat()
        except Exception as err:  # noqa: BLE001 - must not hide why the run ended
            self.context.log.warning("could not record the last heartbeat: %s", err)

    def beat(self) -> None:
        now = time.monotonic()
        documents, changes, lag, lag_at = self.observer.snapshot()
        then, documents_then, changes_then = self._last
        seconds = max(now - then, 1e-9)
        self._last = (now, documents, changes)
        metadata: dict[str, object] = {
            "state": self.state,
            "role": self.role,
            "heartbeat": MetadataValue.timestamp(time.time()),
            "documents_per_s": round((documents - documents_then) / seconds, 1),
            "changes_per_s": round((changes - changes_then) / seconds, 1),
            "documents_total": documents,
            **self._worker,
        }
        if lag is not None and lag_at is not None:
            self._lag_seen = lag_at
            metadata |= {
                "slot": lag.slot,
                "lag_bytes": MetadataValue.int(lag.lag_bytes) if lag.lag_bytes is not None else "unknown",
                "confirmed_lsn": lag.confirmed_lsn or "unknown",
                "lag_measured_s_ago": round(time.time() - lag_at, 1),
            }
            if lag.backlog_rows is not None:  # capture: polling: its change log, and what holds it back
                metadata |= {
                    "backlog_rows": MetadataValue.int(lag.backlog_rows),
                    "oldest_unacked_s": round(lag.oldest_unacked_s or 0.0, 1),
                    "oldest_open_transaction_s": (round(lag.horizon_s, 1) if lag.horizon_s is not None else "none"),
                }
        self.context.log_event(AssetObservation(asset_key=LIVE_ASSET, metadata=metadata))


def supervise(work: Callable[[], T], stop: threading.Event, *, on_wait: Callable[[], None] | None = None,
              log: logging.Logger | None = None, name: str = "flusso-engine", poll_s: float = 0.5) -> T:
    """Run `work` on a worker thread while this thread waits (calling `on_wait` between waits).

    Whatever interrupts the wait (Dagster's `DagsterExecutionInterruptedError` on termination, a
    `KeyboardInterrupt`) sets `stop`, waits for `work` to return (the engine flushes and acks), and is
    re-raised. A second interruption during that wait gives up on it: the thread is a daemon.
    """
    outcome: dict[str, object] = {}
    # Waited on instead of Thread.join: an exception raised inside join() (the interruption itself)
    # leaves CPython 3.11 believing the thread has ended (bpo-45274's fix), and the second join()
    # would return at once, while the engine is still flushing.
    finished = threading.Event()

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as err:  # noqa: BLE001 - handed to the waiting thread, which raises it
            outcome["error"] = err
        finally:
            finished.set()

    threading.Thread(target=target, name=name, daemon=True).start()
    try:
        while not finished.wait(poll_s):
            if on_wait is not None:
                on_wait()
    except BaseException:
        stop.set()
        finished.wait()
        if "error" in outcome and log is not None:
            log.error("the engine failed while stopping: %s", outcome["error"])
        raise
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
