"""The `slot_health` check of `flusso_live`, and `slot_health_sensor`, which evaluates it on a cadence
of its own.

The slot pins WAL whether or not live_capture runs, and the heartbeat only exists while it runs: so
the check is not evaluated inside the live run. The sensor reads the slot's health every
`FLUSSO_SLOT_CHECK_S` seconds (a cheap query, no run launched) and records it without a run: a
check evaluation (red with the slot's numbers when the slot is inactive and lagging, at risk or
lost) and an observation of `flusso_live` carrying lag and safe_wal_size, which the UI plots. The
check can also be executed by hand from the UI, through the same judgement.
"""

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetObservation,
    DagsterInstance,
    DefaultSensorStatus,
    Failure,
    MetadataValue,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    asset_check,
    sensor,
)

from flusso_engine.capture.slots import SlotHealth

from .constants import LIVE_ASSET
from .project import Project
from .resources import FlussoResource

SLOT_CHECK = "slot_health"


def check_fields(health: SlotHealth) -> dict:
    """passed, severity, description and metadata of the check, from the slot's health."""
    problems = [r for r in health.reasons if r.level in ("warning", "critical")]
    advice = [r for r in health.reasons if r.level == "advice"]
    lines = [health.summary(), *(f"{r.level}: {r.message}. Fix: {r.fix}" for r in problems + advice)]
    return {
        "passed": health.ok,
        "severity": AssetCheckSeverity.ERROR if health.level == "critical" else AssetCheckSeverity.WARN,
        "description": "\n".join(lines),
        "metadata": {**observation_metadata(health), "reasons": [r.code for r in health.reasons]},
    }


def observation_metadata(health: SlotHealth) -> dict:
    """The slot's numbers as metadata: numbers only where known, so the UI can plot them."""
    info, server, disk = health.info, health.server, health.disk
    metadata: dict = {"slot": health.slot, "health": health.level, "slot_exists": info is not None}
    if info is not None:
        metadata |= {"active": info.active, "wal_status": info.wal_status or "unknown"}
        if info.lag_bytes is not None:
            metadata["lag_bytes"] = MetadataValue.int(info.lag_bytes)
        if info.safe_wal_size is not None:
            metadata["safe_wal_size"] = MetadataValue.int(info.safe_wal_size)
        if info.retained_bytes is not None:
            metadata["retained_bytes"] = MetadataValue.int(info.retained_bytes)
    if server is not None and server.max_slot_wal_keep_size is not None:
        metadata["max_slot_wal_keep_size"] = MetadataValue.int(server.max_slot_wal_keep_size)
    if disk.free_bytes is not None:
        metadata["disk_free_bytes"] = MetadataValue.int(disk.free_bytes)
    backlog = health.backlog
    if backlog is not None:  # capture: polling: the change log instead of the WAL
        metadata |= {"backlog_rows": MetadataValue.int(backlog.rows),
                     "change_log_bytes": MetadataValue.int(backlog.bytes)}
        if backlog.oldest_s is not None:
            metadata["oldest_unacked_s"] = round(backlog.oldest_s, 1)
        if backlog.horizon_s is not None:
            metadata["oldest_open_transaction_s"] = round(backlog.horizon_s, 1)
    return metadata


def build_slot_check() -> AssetChecksDefinition:
    @asset_check(asset=LIVE_ASSET, name=SLOT_CHECK, description=(
        "The replication slot is not pinning WAL unnoticed: it fails when the slot is inactive with lag above "
        "slot.warn_lag, close to max_slot_wal_keep_size, unreserved or lost (invalidated); with capture: polling, "
        "when the change log grows with nobody polling it or a long transaction holds back its horizon. "
        "slot_health_sensor evaluates it on a schedule of its own, whether or not live_capture runs."
    ))
    def slot_health(context: AssetCheckExecutionContext, flusso: FlussoResource) -> AssetCheckResult:
        health = flusso.slot_health()
        context.log.info(health.summary())
        context.op_execution_context.log_event(
            AssetObservation(asset_key=LIVE_ASSET, metadata=observation_metadata(health))
        )
        return AssetCheckResult(**check_fields(health))

    return slot_health


def evaluate(instance: DagsterInstance, flusso: FlussoResource) -> SlotHealth | str:
    """Read the slot's health and record it without a run: a check evaluation and an observation.

    A database that cannot be read fails the check too (the UI shows it red); returns what was recorded.
    """
    try:
        health = flusso.slot_health()
    except Failure as err:
        instance.report_runless_asset_event(AssetCheckEvaluation(
            asset_key=AssetKey(LIVE_ASSET), check_name=SLOT_CHECK, passed=False,
            severity=AssetCheckSeverity.ERROR, description=err.description,
        ))
        return err.description or "cannot read the slot"
    instance.report_runless_asset_event(AssetObservation(asset_key=LIVE_ASSET, metadata=observation_metadata(health)))
    instance.report_runless_asset_event(
        AssetCheckEvaluation(asset_key=AssetKey(LIVE_ASSET), check_name=SLOT_CHECK, **check_fields(health))
    )
    return health


def build_slot_health_sensor(project: Project) -> SensorDefinition:
    @sensor(
        name="slot_health_sensor",
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=max(1, int(project.slot_check_s)),
        description=f"Every {project.slot_check_s:.0f}s (FLUSSO_SLOT_CHECK_S), reads the health of slot "
                    f"{project.slot} and records the slot_health check of flusso_live and an observation with "
                    "lag and safe_wal_size, without a run and whether or not live_capture runs.",
    )
    def slot_health_sensor(context: SensorEvaluationContext, flusso: FlussoResource) -> SkipReason:
        outcome = evaluate(context.instance, flusso)
        if isinstance(outcome, str):
            return SkipReason(f"slot_health failed: {outcome}")
        return SkipReason(f"slot_health {outcome.level}: {outcome.summary()}")

    return slot_health_sensor
