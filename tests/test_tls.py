"""flusso over TLS on both sides, with authentication (issue #18): PostgreSQL with `sslmode=verify-full`
and scram for a role that is not a superuser, OpenSearch behind HTTPS and basic auth (`tests/tls.py`)."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from flusso_engine.config import load_config

from .e2e import BOOKSTORE, Flusso, flusso, generate, sql, wait_converged, write_config
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


def _bookstore(cluster: TlsCluster, owner: str, books: int) -> str:
    """A new database owned by `owner`, the bookstore's schema loaded as that role over TLS: its DSN."""
    name = f"db_{uuid.uuid4().hex[:10]}"
    cluster.database(name, owner)
    dsn = cluster.tls_dsn(name, owner, PG_PASSWORD)
    sql(dsn, (BOOKSTORE / "schema.sql").read_text())
    generate(dsn, books=books)
    return dsn


@pytest.fixture
def scoped_proxy(certs: Certs, index_prefix: str) -> Iterator[TlsProxy]:
    """HTTPS and basic auth where the user `flusso` may touch only what the README grants it: the
    index's alias, its generations and dead letters, the state index (a 403 for anything else)."""
    px = TlsProxy(certs, {"flusso": SINK_PASSWORD}, scopes={"flusso": [f"{index_prefix}books"]}).start()
    try:
        yield px
    finally:
        px.stop()


@pytest.fixture
def secure(cluster: TlsCluster, scoped_proxy: TlsProxy, certs: Certs, index_prefix: str,
           tmp_path: Path) -> tuple[str, Path]:
    """A bookstore database owned by the role `flusso` (REPLICATION, not a superuser) and a config that
    reaches both sides over verify-full TLS with passwords, as the least-privileged users."""
    dsn = _bookstore(cluster, "flusso", books=100)
    db = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    # the URL form, password in the userinfo (the key=value form is the refusals')
    url = (f"postgresql://flusso:{PG_PASSWORD}@localhost:{cluster.port}/{db}"
           f"?sslmode=verify-full&sslrootcert={certs.ca}")
    config = write_config(tmp_path / "flusso.yaml", url, index_prefix, hosts=[scoped_proxy.url()],
                          sink={"username": "flusso", "password": SINK_PASSWORD, "ca_certs": str(certs.ca)})
    return dsn, config


def _replication_over_tls(dsn: str) -> list[tuple]:
    """Each walsender of the slot's database: (ssl, user), as the server sees it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT s.ssl, r.usename FROM pg_stat_replication r JOIN pg_stat_ssl s ON s.pid = r.pid"
        ).fetchall()


def test_end_to_end_over_tls_with_auth(secure, opensearch, cluster, scoped_proxy, certs, index_prefix) -> None:
    """Backfill, live changes and a restart, over TLS on both sides, the replication connection too, as
    a role that is not a superuser and a sink user limited to the README's grants; then every output,
    log and document flusso wrote is searched for the passwords."""
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
    assert " 403 " not in (scoped_proxy.dir / "access.log").read_text(), "flusso needed more than the README grants"
    _no_secret_anywhere(config, [first.output(), second.output()], opensearch, cluster, index_prefix)


def _no_secret_anywhere(config: Path, outputs: list[str], opensearch, cluster: TlsCluster, prefix: str) -> None:
    """The passwords are in no output of flusso's commands, no log, no document it wrote (its indexes,
    dead letters, state documents), and not in the server's log."""
    for args in (("status", "--json"), ("status",), ("dead-letters",), ("validate",)):
        done = flusso(*args, config=config, timeout=120)
        assert done.returncode in (0, 3), done.stdout + done.stderr
        outputs.append(done.stdout + done.stderr)
    opensearch.indices.refresh(index=f"{prefix}*,flusso-state", ignore_unavailable=True)
    for index in (f"{prefix}*", "flusso-state"):
        hits = opensearch.search(index=index, body={"size": 10000, "query": {"match_all": {}}},
                                 ignore_unavailable=True)
        outputs.append(json.dumps(hits))
        outputs.append(json.dumps(opensearch.indices.get_mapping(index=index, ignore_unavailable=True)))
    outputs.append(cluster.log())
    for text in outputs:
        assert PG_PASSWORD not in text and SINK_PASSWORD not in text


def _slots(cluster: TlsCluster) -> list[str]:
    with cluster.admin() as conn:
        return [name for (name,) in conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall()]


# (name, how the DSN differs, how the sink differs, exit code, what the message must say)
REFUSALS = [
    ("pg wrong password", {"password": "not-the-pg-password"}, {}, 1,
     ["PostgreSQL at localhost:", "user flusso", "password authentication failed", "correct the password in "
      "source.dsn"]),
    ("pg untrusted ca", {"rootcert": "other"}, {}, 1,
     ["PostgreSQL at localhost:", "certificate verify failed", "other-ca.crt", "set sslrootcert in source.dsn"]),
    ("pg hostname mismatch", {"host": "127.0.0.1"}, {}, 1,
     ["PostgreSQL at 127.0.0.1:", 'does not match host name "127.0.0.1"', "a host name the certificate holds"]),
    ("pg without tls", {"sslmode": "disable"}, {}, 1,
     ["PostgreSQL at localhost:", "no encryption", "add sslmode=verify-full"]),
    ("pg role without replication", {"user": "noreplication"}, {}, 1,
     ["checked against PostgreSQL at localhost:", "user noreplication",
      'role "noreplication" may not use replication slots', "ALTER ROLE noreplication REPLICATION"]),
    ("sink wrong password", {}, {"password": "not-the-sink-password"}, 1,
     ["OpenSearch at https://localhost:", "refused the credentials of user writer (401)",
      "check sink.username and sink.password"]),
    ("sink untrusted ca", {}, {"ca_certs": "other"}, 1,
     ["OpenSearch at https://localhost:", "not signed by a CA in sink.ca_certs", "certificate verify failed",
      "set sink.ca_certs to the CA certificate"]),
    ("sink hostname mismatch", {}, {"host": "127.0.0.1"}, 1,
     ["OpenSearch at https://127.0.0.1:", "does not name the host", "IP address mismatch",
      "a host name the certificate holds"]),
    ("sink user without index privileges", {}, {"username": "reader", "password": READER_PASSWORD}, 2,
     ["at https://localhost:", "user reader may not do this", "security_exception",
      'grant user reader the privileges listed in the README']),
]


@pytest.mark.parametrize(("pg", "sink", "code", "says"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_name_endpoint_cause_and_fix(pg, sink, code, says, cluster, proxy, certs, index_prefix,
                                               tmp_path) -> None:
    """Each refusal exits 1 before anything runs (no slot left behind) or 2 while running, with the
    endpoint, the cause and the fix, and never a password."""
    user = pg.pop("user", "flusso")
    dsn = _bookstore(cluster, user, books=5)
    db = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    rootcert = certs.other_ca if pg.pop("rootcert", None) else certs.ca
    dsn = cluster.tls_dsn(db, user, pg.pop("password", PG_PASSWORD), rootcert=rootcert, **pg)
    host = sink.pop("host", "localhost")
    ca = certs.other_ca if sink.pop("ca_certs", None) else certs.ca
    sink_cfg = {"username": "writer", "password": SINK_PASSWORD, "ca_certs": str(ca), **sink}
    config = write_config(tmp_path / "flusso.yaml", dsn, index_prefix, hosts=[proxy.url(host)], sink=sink_cfg,
                          failures={"flush_error": {"retries": 1, "backoff_ms": 50, "max_backoff_ms": 100}})
    slots = _slots(cluster)
    checked = flusso("validate", config=config, timeout=120)  # validate refuses what run refuses before it runs
    assert checked.returncode == (1 if code == 1 else 0), checked.stdout + checked.stderr
    done = flusso("run", "--no-live", config=config, timeout=120)
    out = done.stdout + done.stderr + checked.stdout + checked.stderr
    assert done.returncode == code, out
    for phrase in says:
        assert phrase in out, f"{phrase!r} not in:\n{out}"
    for secret in (PG_PASSWORD, SINK_PASSWORD, READER_PASSWORD, "not-the-pg-password", "not-the-sink-password"):
        assert secret not in out
    assert "Traceback" not in out
    if code == 1:
        assert _slots(cluster) == slots, "a refusal before anything runs created a slot"


def test_the_scoped_sink_user_is_refused_outside_its_grants(scoped_proxy, certs, index_prefix) -> None:
    """The least-privilege run above proves something only if the user is limited: another index is a 403."""
    from opensearchpy import OpenSearch
    from opensearchpy.exceptions import AuthorizationException, NotFoundError

    client = OpenSearch([scoped_proxy.url()], http_auth=("flusso", SINK_PASSWORD), ca_certs=str(certs.ca))
    with pytest.raises(AuthorizationException):
        client.indices.get_mapping(index=f"{index_prefix}other")
    with pytest.raises(NotFoundError):  # its own index: allowed, not there yet
        client.indices.get_mapping(index=f"{index_prefix}books__g1")


def test_a_role_that_owns_nothing(cluster: TlsCluster, scoped_proxy, certs, index_prefix, tmp_path, opensearch) -> None:
    """The README's second variant: another role owns the tables and prepares the publication and the
    replica identity; flusso's role has REPLICATION, USAGE and SELECT only, and runs end to end."""
    with cluster.admin() as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'app'").fetchone()
    if not exists:
        cluster.role("app", PG_PASSWORD, replication=False)
    app = _bookstore(cluster, "app", books=30)
    db = psycopg.conninfo.conninfo_to_dict(app)["dbname"]
    dsn = cluster.tls_dsn(db, "flusso", PG_PASSWORD)
    config = write_config(tmp_path / "flusso.yaml", dsn, index_prefix, hosts=[scoped_proxy.url()],
                          sink={"username": "flusso", "password": SINK_PASSWORD, "ca_certs": str(certs.ca)})
    publication = load_config(config).source.publication
    tables = ", ".join(sorted(load_config(config).tables()))
    sql(app, f"CREATE PUBLICATION {publication} FOR TABLE {tables}",
        "ALTER TABLE public.review REPLICA IDENTITY FULL",
        "GRANT USAGE ON SCHEMA public TO flusso", "GRANT SELECT ON ALL TABLES IN SCHEMA public TO flusso")
    checked = flusso("validate", config=config)  # flusso could not turn publish_via_partition_root on itself
    assert checked.returncode == 1 and "SET (publish_via_partition_root = true) as its owner" in checked.stderr
    sql(app, f"ALTER PUBLICATION {publication} SET (publish_via_partition_root = true)")
    checked = flusso("validate", config=config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    run = Flusso(config)
    try:
        run.wait_for("live capture started", timeout=120)
        wait_converged(opensearch, config)
        sql(app, "UPDATE book SET title = 'owned by app' WHERE id = 5")
        assert wait_converged(opensearch, config)["5"]["title"] == "owned by app"
    finally:
        run.stop()


def test_verify_certs_false_works_and_warns_loudly(cluster, proxy, certs, index_prefix, tmp_path, opensearch) -> None:
    """An untrusted certificate goes through with verify_certs: false, and every start says what that costs."""
    dsn = _bookstore(cluster, "flusso", books=5)
    config = write_config(tmp_path / "flusso.yaml", dsn, index_prefix, hosts=[proxy.url()],
                          sink={"username": "writer", "password": SINK_PASSWORD, "verify_certs": False})
    done = flusso("run", "--no-live", config=config, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "sink.verify_certs is false" in out and "NOT checked" in out and "Set verify_certs: true" in out
    assert SINK_PASSWORD not in out


def test_dagster_keeps_no_secret(cluster, scoped_proxy, certs, index_prefix, tmp_path, monkeypatch) -> None:
    """A partition materialized over TLS, its secrets given as environment variables (`EnvVar`s), and one
    refused for a wrong password: Dagster's storage, logs, metadata and run config hold neither password."""
    import yaml
    from dagster import instance_for_test, materialize

    from flusso_dagster.assets import build_search_index, index_partitions
    from flusso_dagster.checks import build_checks
    from flusso_dagster.factory import flusso_resource
    from flusso_dagster.project import Project

    dsn = _bookstore(cluster, "flusso", books=20)
    config = write_config(tmp_path / "flusso.yaml", "${FLUSSO_PG_DSN}", index_prefix, hosts=[scoped_proxy.url()],
                          sink={"username": "flusso", "password": "${OPENSEARCH_PASSWORD}", "ca_certs": str(certs.ca)})
    raw = yaml.safe_load(config.read_text())
    assert raw["source"]["dsn"] == "${FLUSSO_PG_DSN}"
    monkeypatch.setenv("FLUSSO_PG_DSN", dsn)
    home = tmp_path / "dagster_home"
    home.mkdir()
    texts: list[str] = []
    with instance_for_test(temp_dir=str(home)) as instance:
        for password in (SINK_PASSWORD, "os-Wrong-4c3b2a"):
            monkeypatch.setenv("OPENSEARCH_PASSWORD", password)
            project = Project.from_env(config, env={"FLUSSO_HEARTBEAT_S": "1"})
            partitions = index_partitions(project)
            asset = build_search_index(partitions)
            result = materialize([asset, build_checks(asset, partitions)], partition_key=project.indexes[0],
                                 resources={"flusso": flusso_resource(project)}, instance=instance,
                                 raise_on_error=False)
            assert result.success == (password == SINK_PASSWORD)
            for event in instance.all_logs(result.run_id):
                texts.append(repr(event))
            run = instance.get_run_by_id(result.run_id)
            texts.append(repr(run.run_config) + repr(run.tags))
        assert "refused the credentials of user flusso" in "".join(texts)
    stored = [path for path in home.rglob("*") if path.is_file()]
    assert any(path.suffix == ".db" for path in stored), stored  # the run and event storage, on disk
    texts += [path.read_bytes().decode("utf-8", "replace") for path in stored]
    for text in texts:
        for secret in (PG_PASSWORD, SINK_PASSWORD, "os-Wrong-4c3b2a"):
            assert secret not in text
