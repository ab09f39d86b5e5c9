"""Asset checks of `search_index`, one evaluation per partition (index): documents equal root rows,
and the index was created from the config's current definition."""


import warnings
from collections.abc import Iterator

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetsDefinition,
    PreviewWarning,
    StaticPartitionsDefinition,
    multi_asset_check,
)

from .resources import FlussoResource


def build_checks(search_index: AssetsDefinition,
                 partitions: StaticPartitionsDefinition) -> AssetChecksDefinition:
    # Partitioned checks are a preview feature of dagster 1.13, used on purpose: one result per index.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        specs = [
            AssetCheckSpec("documents_match_rows", asset=search_index, partitions_def=partitions,
                           description="documents in the index equal rows in its root table"),
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
        yield AssetCheckResult(
            check_name="documents_match_rows",
            passed=missing == 0,
            severity=AssetCheckSeverity.ERROR,
            description=counted,
            metadata={"documents": status.documents or 0, "rows": status.rows or 0, "seeded": status.seeded},
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
