"""The `seeded` check of search_index, and what seed_sensor records when an index stops (or starts
again) being seeded (issue #12, item 7).

A partition of search_index stays "Materialized" in Dagster after the sink stops vouching for it
(its alias deleted, the slot recreated or lost, a definition changed, a backfill cut short): nothing
in Dagster's own records changes. So on each change of any index's seeded state, and only then,
seed_sensor records without a run:

- an evaluation of the `seeded` check, failed while any index is unseeded, naming each with why
  (red on the asset's page, in its Checks tab and on its node in the lineage graph);
- for an index Dagster shows as materialized that became unseeded: an observation of its partition
  whose `seeded: no: ...` the partitions page shows above the latest materialization's metadata;
- for an index seeded again with no materialization since Dagster saw it unseeded (reseeded by
  `flusso backfill` or `flusso run`): a runless materialization with the marker's metadata
  (`sensors.report_seeded`), as for an index seeded before Dagster ran.

The check covers the whole asset, not one partition: Dagster 1.13 stores a second runless
evaluation of the same partition of a partitioned check as a duplicate (a unique-constraint error
in `asset_check_executions`), and the sensor must record one per change. The state last shown is
kept in the sensor's cursor (`{"<index>": {"seeded": bool, "at": epoch s}}`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetObservation,
    AssetRecordsFilter,
    AssetsDefinition,
    DagsterInstance,
    MetadataValue,
    asset_check,
)

from flusso_engine.engine import IndexStatus

from .assets import SEARCH_INDEX
from .resources import FlussoResource

SEEDED_CHECK = "seeded"


def why_unseeded(status: IndexStatus) -> str:
    """Why the sink says `status.index` needs a backfill, in the words the UI shows."""
    index, target = status.index, status.target
    if target is None:
        return f"there is no index or alias named {index}: searches of it fail"
    if target == index:
        return f"{index} is a concrete index from before generations: a materialization migrates it"
    if not status.definition_current:
        return f"{index} serves {target}, built from another definition than the config's"
    return (f"{index} serves {target}, whose seeded marker does not name this slot's incarnation and this "
            "database: the slot was recreated, moved or lost, a table changed while flusso did not watch, "
            "or a backfill did not finish")


def check_fields(indexes: Collection[str], unseeded: Mapping[str, IndexStatus]) -> dict:
    """passed, severity, description and metadata of the `seeded` check."""
    if not unseeded:
        return {"passed": True, "severity": AssetCheckSeverity.ERROR,
                "description": f"every index is seeded: {', '.join(indexes)}",
                "metadata": {"unseeded": MetadataValue.text("none")}}
    lines = [f"{index}: {why_unseeded(status)}." for index, status in unseeded.items()]
    return {
        "passed": False,
        "severity": AssetCheckSeverity.ERROR,
        "description": " ".join([*lines, "The sink says they need a backfill: seed_sensor materializes their "
                                         "partitions (built beside what serves, then swapped)."]),
        "metadata": {"unseeded": MetadataValue.text(", ".join(sorted(unseeded)))},
    }


def build_seeded_check(search_index: AssetsDefinition) -> AssetChecksDefinition:
    @asset_check(asset=search_index, name=SEEDED_CHECK, description=(
        "Every index is seeded: its serving generation's marker names the config's definition, this slot and "
        "this database, so live capture keeps it exact. seed_sensor evaluates it whenever that changes; it "
        "can be executed by hand too."
    ))
    def seeded(flusso: FlussoResource) -> AssetCheckResult:
        unseeded = flusso.unseeded()
        return AssetCheckResult(**check_fields(indexes_of(search_index),
                                               {i: flusso.status(i) for i in unseeded}))

    return seeded


def indexes_of(search_index: AssetsDefinition) -> list[str]:
    assert search_index.partitions_def is not None
    return list(search_index.partitions_def.get_partition_keys())


def load_cursor(cursor: str | None) -> dict[str, dict]:
    try:
        shown = json.loads(cursor) if cursor else {}
    except ValueError:
        return {}
    return shown if isinstance(shown, dict) else {}


def materialized_since(instance: DagsterInstance, index: str, at: float | None) -> bool:
    """Has Dagster a materialization of the partition (after `at`, when given)?"""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=SEARCH_INDEX, asset_partitions=[index], after_timestamp=at), limit=1)
    return bool(records.records)


def report_changes(instance: DagsterInstance, flusso: FlussoResource, indexes: Collection[str],
                   unseeded: Collection[str], shown: dict[str, dict],
                   now: float | None = None) -> tuple[list[str], list[str]]:
    """Record what changed since `shown` (updated in place; see the module's doc). Returns the lines
    saying what changed, and the indexes seeded again without a materialization since."""
    now = time.time() if now is None else now
    changed = {i: shown.get(i) for i in indexes
               if not isinstance(shown.get(i), dict) or shown[i].get("seeded") != (i not in unseeded)}
    if not changed:
        return [], []
    statuses = {i: flusso.status(i) for i in indexes if i in unseeded}
    instance.report_runless_asset_event(AssetCheckEvaluation(
        asset_key=SEARCH_INDEX, check_name=SEEDED_CHECK, **check_fields(indexes, statuses)))
    lines, reseeded_outside = [], []
    for index, before in changed.items():
        shown[index] = {"seeded": index not in unseeded, "at": now}
        if index in statuses:
            why = why_unseeded(statuses[index])
            lines.append(f"{index} is unseeded: {why}")
            if materialized_since(instance, index, None):  # Dagster shows it materialized: say it is not
                instance.report_runless_asset_event(AssetObservation(
                    asset_key=SEARCH_INDEX, partition=index, description=f"unseeded: {why}",
                    metadata=observation_metadata(statuses[index], why)))
        elif before is not None:
            at = before.get("at")
            if not materialized_since(instance, index, at if isinstance(at, int | float) else None):
                reseeded_outside.append(index)
            lines.append(f"{index} is seeded again")
    return lines, reseeded_outside


def observation_metadata(status: IndexStatus, why: str) -> dict:
    return {"seeded": MetadataValue.text(f"no: {why}"),
            "serving": MetadataValue.text(status.target or "missing"),
            "documents": MetadataValue.int(status.documents or 0),
            "root_rows": MetadataValue.int(status.rows or 0)}
