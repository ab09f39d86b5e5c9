"""The names the Dagster layer shares between its modules (and with `dagster.yaml` and the demo):
run tags, asset keys, metadata keys read back, and the sets of run statuses each piece looks for."""

from __future__ import annotations

from dagster import DagsterRunStatus

INDEX_TAG = "flusso/index"
"""Run tag naming the index a run backfills: `dagster.yaml` allows one run per value."""
SLOT_TAG = "flusso/slot"
"""Run tag naming the slot a live_capture run reads (`<slot>/worker-<i>` for Kafka's worker i):
`dagster.yaml` allows one run per value."""
LIVE_TAG = "flusso/live"
"""Run tag of every live_capture run of a slot, whatever its role: what stopping live capture filters on."""
ROLE_TAG = "flusso/role"
"""Run tag saying what a live_capture run runs: `live` (one process), `capture` or `worker` (Kafka)."""
REPLACES_TAG = "flusso/replaces"
"""Run tag of a live_capture run the keeper started in place of stale ones (their run ids)."""
PARTITION_TAG = "dagster/partition"

LIVE_ASSET = "flusso_live"
"""The observable asset whose observations are live_capture's heartbeats (lag, throughput)."""

# The heartbeat's metadata that says which process the worker is (read back by the keeper).
WORKER_KEYS = ("worker_machine", "worker_pid", "worker_started")

ACTIVE_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
"""A run that is, or may still become, in progress: one backfill of an index at a time."""
KEEPER_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
"""live_capture runs the keeper waits for (or replaces, when STARTED or CANCELING and stale)."""
RUNNING_STATUSES = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]
"""Runs that hold an index now: a check waits for them to end before it counts."""
