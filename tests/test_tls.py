"""flusso over TLS on both sides, with authentication (issue #18): PostgreSQL with `sslmode=verify-full`
and scram for a role that is not a superuser, OpenSearch behind HTTPS and basic auth (`tests/tls.py`)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from .e2e import BOOKSTORE, Flusso, generate, sql, wait_converged, write_config
from .tls import Certs, TlsCluster, TlsProxy

PG_PASSWORD = "pg-Secr3t-7f3a9"  # distinctive, so a leak is found by a grep
SINK_PASSWORD = "os-Secr3t-b41c2"
READER_PASSWORD = "os-Reader-9d0e1"


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs")).make()


@pytest.fixture(scope="module")
def cluster(certs: Certs) -> Iterator[TlsCluster]:
    pg = TlsCluster(certs).start()
    try:
        pg.role("flusso", PG_PASSWORD)
        pg.role("noreplication", PG_PASSWORD, replication=False)
        yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="module")
def proxy(certs: Certs) -> Iterator[TlsProxy]:
    px = TlsProxy(certs, {"writer": SINK_PASSWORD, "reader": READER_PASSWORD}).start()
    try:
        yield px
    finally:
        px.stop()


@pytest.fixture
def secure(cluster: TlsCluster, proxy: TlsProxy, certs: Certs, index_prefix: str, tmp_path: Path,
           request) -> tuple[str, Path]:
    """A bookstore database owned by `flusso` (its schema loaded as flusso, over TLS) and a config that
    reaches both sides over verify-full TLS with passwords."""
    name = f"db_{request.node.name[-20:].lower().strip('_')}".replace("[", "_").replace("]", "_")
    cluster.database(name, "flusso")
    dsn = cluster.tls_dsn(name, "flusso", PG_PASSWORD)
    sql(dsn, (BOOKSTORE / "schema.sql").read_text())
    generate(dsn, books=100)
    config = write_config(tmp_path / "flusso.yaml", dsn, index_prefix, hosts=[proxy.url()],
                          sink={"username": "writer", "password": SINK_PASSWORD, "ca_certs": str(certs.ca)})
    return dsn, config


def _replication_over_tls(dsn: str) -> list[tuple]:
    """Each walsender of the slot's database: (ssl, user), as the server sees it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT s.ssl, r.usename FROM pg_stat_replication r JOIN pg_stat_ssl s ON s.pid = r.pid"
        ).fetchall()


def test_end_to_end_over_tls_with_auth(secure, opensearch) -> None:
    """Backfill, live changes and a restart, over TLS on both sides; the replication connection too."""
    dsn, config = secure
    first = Flusso(config)
    try:
        first.wait_for("live capture started", timeout=120)
        wait_converged(opensearch, config)
        sql(dsn, "UPDATE book SET title = 'over tls' WHERE id = 1", "DELETE FROM review WHERE book_id = 2",
            "UPDATE publisher SET name = 'tls press' WHERE id = 1")
        docs = wait_converged(opensearch, config)
        assert docs["1"]["title"] == "over tls"
        assert _replication_over_tls(dsn) == [(True, "flusso")]
    finally:
        first.signal(signal.SIGTERM)
        assert first.wait(60) == 0, first.output()[-3000:]
    sql(dsn, "UPDATE book SET title = 'while stopped' WHERE id = 3", "DELETE FROM book_author WHERE book_id = 4")
    second = Flusso(config)
    try:
        second.wait_for("live capture started", timeout=120)
        docs = wait_converged(opensearch, config)
        assert docs["3"]["title"] == "while stopped"
    finally:
        second.stop()
    for run in (first, second):
        out = run.output()
        assert PG_PASSWORD not in out and SINK_PASSWORD not in out
