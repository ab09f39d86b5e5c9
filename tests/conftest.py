"""Fixtures for tests against the real services that `make services` starts.

Every test that touches PostgreSQL gets a database of its own (`fresh_db`), and every test that
touches OpenSearch gets index names of its own (`index_prefix`), so tests never depend on order.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
PG_DSN = os.environ.get("FLUSSO_TEST_PG_DSN", "postgresql://postgres:postgres@127.0.0.1:5432/postgres")
OPENSEARCH_URL = os.environ.get("FLUSSO_TEST_OPENSEARCH_URL", "http://127.0.0.1:9200")
BOOKSTORE = ROOT / "examples" / "bookstore"


def dsn_for(database: str) -> str:
    return psycopg.conninfo.make_conninfo(PG_DSN, dbname=database)


@pytest.fixture(scope="session")
def admin_dsn() -> str:
    try:
        with psycopg.connect(PG_DSN, connect_timeout=5):
            pass
    except psycopg.OperationalError as err:
        pytest.fail(f"PostgreSQL is not reachable at 127.0.0.1:5432 ({err}); run `make services` first")
    return PG_DSN


def _drop_database(name: str) -> None:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        for (slot,) in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (name,)
        ).fetchall():
            conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE slot_name = %s AND active_pid IS NOT NULL",
                (slot,),
            )
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def fresh_db(admin_dsn: str) -> Iterator[str]:
    """A new, empty database for one test; yields its DSN and drops it (and its slots) afterwards."""
    name = f"flusso_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield dsn_for(name)
    finally:
        _drop_database(name)


@pytest.fixture
def bookstore_db(fresh_db: str) -> str:
    """A fresh database holding the bookstore schema (no rows)."""
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute((BOOKSTORE / "schema.sql").read_text())
    return fresh_db


@pytest.fixture(scope="session")
def opensearch():
    from opensearchpy import OpenSearch

    client = OpenSearch([OPENSEARCH_URL], timeout=60)
    try:
        client.cluster.health(wait_for_status="yellow")
    except Exception as err:  # noqa: BLE001
        pytest.fail(f"OpenSearch is not reachable at {OPENSEARCH_URL} ({err}); run `make services` first")
    return client


@pytest.fixture
def index_prefix(request) -> Iterator[str]:
    """A prefix unique to this test for OpenSearch index names; the indexes are deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    yield prefix
    try:
        from opensearchpy import OpenSearch

        OpenSearch([OPENSEARCH_URL], timeout=60).indices.delete(index=f"{prefix}*", ignore=[404])
    except Exception:  # noqa: BLE001
        pass


KAFKA_PORT = int(os.environ.get("KAFKA_PORT", "9092"))


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The local Kafka broker, started the way a user does (`bash services/kafka.sh up`, idempotent).

    Only the tests that need Kafka start it. Where it cannot start (no Java 17, no Maven, no network
    for the first fetch) they skip with the script's output; under CI (`CI` set) they fail instead.
    """
    import subprocess

    # FLUSSO_KAFKA_SH: another checkout's script, whose broker a worktree's tests then share
    script = os.environ.get("FLUSSO_KAFKA_SH") or str(ROOT / "services" / "kafka.sh")
    proc = subprocess.run(["bash", script, "up"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        why = f"Kafka could not be started by services/kafka.sh up:\n{proc.stdout}{proc.stderr}"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return f"127.0.0.1:{KAFKA_PORT}"


def pytest_runtest_setup(item: pytest.Item) -> None:
    from .e2e import STARTED

    STARTED.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed test shows the end of the log of every `flusso run` it started (`e2e.Flusso`), so that
    a failure seen once in CI can be read without running it again."""
    from .e2e import STARTED

    report = yield
    if report.failed:
        for run in STARTED:
            try:
                tail = run.output()[-6000:]
            except OSError:
                continue
            report.sections.append((f"flusso run log {run.log.name} (last 6000 characters)", tail))
    return report
