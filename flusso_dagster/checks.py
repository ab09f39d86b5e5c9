"""Asset checks of `search_index`, one evaluation per partition (index): documents equal their rows
(`flusso verify`: sampled by default, every id when configured), and the index was created from the
config's current definition."""


import warnings
from collections.abc import Iterator

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetObservation,
    AssetsDefinition,
    PreviewWarning,
    StaticPartitionsDefinition,
    multi_asset_check,
)

from . import drift
from .resources import FlussoResource


def build_checks(search_index: AssetsDefinition, partitions: StaticPartitionsDefinition,
                 sample: int | None = 1000) -> AssetChecksDefinition:
    """`sample`: how many random ids `documents_match_rows` verifies (None: every id)."""
    # Partitioned checks are a preview feature of dagster 1.13, used on purpose: one result per index.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        specs = [
            AssetCheckSpec("documents_match_rows", asset=search_index, partitions_def=partitions,
                           description="every document equals a fresh build of its rows (flusso verify, "
                                       + (f"{sample} random ids" if sample else "every id")
                                       + "): none missing, extra or stale"),
            AssetCheckSpec("definition_current", asset=search_index, partitions_def=partitions,
                           description="the alias exists and serves a generation built from the config's "
                                       "current definition"),
        ]

    @multi_asset_check(specs=specs, name="search_index_checks")
    def search_index_checks(context: AssetCheckExecutionContext,
                            flusso: FlussoResource) -> Iterator[AssetCheckResult]:
        index = context.partition_key
        status = flusso.status(index)
        missing = (status.rows or 0) - (status.documents or 0)
        if missing == 0:
            counted = f"{status.documents} documents, {status.rows} rows in the root table"
        else:
            counted = (
                f"{status.documents} documents in {index} but {status.rows} rows in its root table "
                f"({abs(missing)} {'missing' if missing > 0 else 'too many'}): is live_capture running? "
                "Rejected documents are in the dead-letter index; a forced materialization rebuilds it"
            )
        found = flusso.verify(index, sample) if status.definition_current else None
        counts = drift.counts([found]) if found is not None else {}
        if found is None:
            verdict, passed = "not verified: the index is missing or from another definition", missing == 0
        elif counts["drift_total"]:
            verdict, passed = (", ".join(f"{v} {k[6:]}" for k, v in counts.items() if v and k != "drift_total")
                               + f" (verify, {found.mode}): the verify_repair job rebuilds exactly those"), False
        else:
            verdict, passed = f"no drift (verify, {found.mode})", True
        metadata = {"documents": status.documents or 0, "rows": status.rows or 0, "seeded": status.seeded}
        if found is not None:
            metadata.update(drift.metadata([found]))
            context.op_execution_context.log_event(AssetObservation(
                asset_key=search_index.key, partition=index, metadata=counts))
        yield AssetCheckResult(
            check_name="documents_match_rows",
            passed=passed,
            severity=AssetCheckSeverity.ERROR,
            description=f"{counted}; {verdict}",
            metadata=metadata,
        )
        state = status.generations
        serving = status.target  # what a search of the name finds now, not what the state last recorded
        if serving is None:
            passed, why = False, (f"there is no index or alias named {index}: searches of it fail; "
                                  "materialize the partition to build it")
        elif not status.definition_current:
            passed, why = False, (f"{index} serves {serving}, built from another definition than the config's "
                                  "(a stale mapping): materialize the partition to rebuild it beside the serving "
                                  "one and swap")
        else:
            passed, why = True, f"{index} serves {serving}, built from the config's definition"
        building = state.building.name if state is not None and state.building is not None else "none"
        yield AssetCheckResult(
            check_name="definition_current",
            passed=passed,
            severity=AssetCheckSeverity.ERROR,
            description=why,
            metadata={"seeded": status.seeded, "serving": serving or "missing", "building": building},
        )

    return search_index_checks
