"""Helpers of `scripts/demo.sh` (`make demo`): the demo database, and a clean stop of the runs.

    python scripts/demo_helpers.py database ADMIN_DSN NAME   # create it if missing; prints new|empty|ready
    python scripts/demo_helpers.py stop-runs                  # terminate in-progress runs, wait for them
    python scripts/demo_helpers.py cancel-queued              # cancel runs that never started
    python scripts/demo_helpers.py slot DSN SLOT              # who holds the slot, where it stands

`dagster dev` stopped by a signal leaves its code server and the live_capture run behind, still
holding the slot: the demo first terminates the runs through the instance (the run launcher sends
the termination that live_capture turns into flush, ack, exit), waits for them to end, and only
then stops `dagster dev`. A run the keeper sensor queued meanwhile never started: it is canceled
once `dagster dev` is gone.
"""

from __future__ import annotations

import sys
import time

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from flusso_dagster.constants import ACTIVE_STATUSES as ACTIVE


def database(admin_dsn: str, name: str) -> str:
    """Create database `name` if missing; `new`, `empty` (no book rows) or `ready`."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return "new"
    dsn = psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('public.book')").fetchone()[0] is None:
            return "empty"
        return "ready" if conn.execute("SELECT EXISTS (SELECT FROM book)").fetchone()[0] else "empty"


def stop_runs(timeout_s: float = 120.0, rounds: int = 3) -> int:
    """Terminate every active run and wait until it ended; returns how many are still active.

    A few rounds: the keeper sensor may request a new live run while the first one stops.
    """
    with DagsterInstance.get() as instance:
        for _ in range(rounds):
            runs = instance.get_runs(RunsFilter(statuses=ACTIVE))
            if not runs:
                return 0
            for run in runs:
                if run.status in (DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED):
                    instance.report_run_canceled(run, "make demo is stopping")
                elif run.status != DagsterRunStatus.CANCELING:
                    print(f"terminating run {run.run_id} ({run.job_name}): flush, ack, exit", flush=True)
                    try:
                        instance.run_launcher.terminate(run.run_id)
                    except Exception as err:  # noqa: BLE001 - the code server may be gone already
                        print(f"  could not terminate it: {err}", flush=True)
            ids = [r.run_id for r in runs]
            deadline = time.monotonic() + timeout_s
            while instance.get_runs(RunsFilter(run_ids=ids, statuses=ACTIVE)):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            time.sleep(1.0)
        return len(instance.get_runs(RunsFilter(statuses=ACTIVE)))


def cancel_queued() -> int:
    """Mark runs that were queued but never launched canceled (no process to stop); returns how many."""
    with DagsterInstance.get() as instance:
        runs = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED]))
        for run in runs:
            instance.report_run_canceled(run, "make demo stopped before this run started")
        return len(runs)


def slot(dsn: str, name: str) -> str:
    import psycopg

    from flusso_engine.capture.wal import read_slot
    from flusso_engine.changes import int_to_lsn

    with psycopg.connect(dsn, autocommit=True) as conn:
        _, info = read_slot(conn, name, wal_dir=False)
    if info is None:
        return f"slot {name}: does not exist"
    pid, confirmed = info.active_pid, info.confirmed_flush_lsn
    held = f"held by server process {pid}" if pid else "not held by anyone"
    return f"slot {name}: {held}, confirmed up to {None if confirmed is None else int_to_lsn(confirmed)}"


def main(argv: list[str]) -> int:
    match argv:
        case ["database", admin_dsn, name]:
            print(database(admin_dsn, name))
        case ["stop-runs"]:
            left = stop_runs()
            if left:
                print(f"{left} run(s) still active", file=sys.stderr)
                return 1
        case ["cancel-queued"]:
            cancel_queued()
        case ["slot", dsn, name]:
            print(slot(dsn, name))
        case _:
            print(__doc__, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
