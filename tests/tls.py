"""TLS endpoints for tests, started on demand and never by restarting the shared services.

- `Certs`: a throwaway CA made with `openssl`, a server certificate for `localhost` only (so a
  connection to 127.0.0.1 is a hostname mismatch), and a second CA nobody trusts.
- `TlsCluster`: a private PostgreSQL cluster (`pgcluster.PrivateCluster`) with `ssl=on`, where the role
  `flusso` may only connect over TLS with scram-sha-256 (`hostssl`), plain connections refused.
- `TlsProxy`: nginx, run as a user process with a config, pid file and port of its own, terminating
  HTTPS with basic auth in front of the shared OpenSearch (`proxy_pass http://127.0.0.1:9200`). The
  user `writer` may do anything; `reader` only reads (a 403 with OpenSearch's security_exception body
  for any write), as a sink user without index privileges sees it.

nginx comes from Debian (`nginx`), installed with apt-get when missing (`ensure_nginx`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from .pgcluster import PrivateCluster, _free_port

OPENSEARCH_URL = os.environ.get("FLUSSO_TEST_OPENSEARCH_URL", "http://127.0.0.1:9200")


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"openssl {' '.join(args)}: {done.stderr}"


class Certs:
    """A CA, a server certificate signed by it for DNS:localhost, a client certificate, and an
    unrelated CA (`other_ca`) to stand for an untrusted one."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self.dir / "ca.crt"
        self.other_ca = self.dir / "other-ca.crt"
        self.server_cert = self.dir / "server.crt"
        self.server_key = self.dir / "server.key"
        self.client_cert = self.dir / "client.crt"
        self.client_key = self.dir / "client.key"

    def make(self) -> Certs:
        d = self.dir
        for name in ("ca", "other-ca"):
            _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", f"{name}.key",
                     "-out", f"{name}.crt", "-subj", f"/CN=flusso test {name}", cwd=d)
        (d / "server.ext").write_text("subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n")
        (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
        for name, cn in (("server", "localhost"), ("client", "flusso")):
            _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                     "-subj", f"/CN={cn}", cwd=d)
            _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                     "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)
        for key in d.glob("*.key"):
            key.chmod(0o600)
        return self


class TlsCluster(PrivateCluster):
    """A private cluster with `ssl=on`; `flusso` (and other roles made by `role`) reach it only over TLS
    with scram-sha-256; postgres keeps trust over the unix socket for the test's own set-up."""

    def __init__(self, certs: Certs) -> None:
        super().__init__({})
        self.certs = certs

    def start(self) -> TlsCluster:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        for src in (self.certs.server_cert, self.certs.server_key, self.certs.ca):
            dst = self.dir / src.name
            shutil.copy(src, dst)
            dst.chmod(0o600)
            if os.geteuid() == 0:
                shutil.chown(dst, "postgres", "postgres")
        self.settings = {
            "ssl": "on", "ssl_cert_file": f"'{self.dir / 'server.crt'}'",
            "ssl_key_file": f"'{self.dir / 'server.key'}'", "ssl_ca_file": f"'{self.dir / 'ca.crt'}'",
            "password_encryption": "'scram-sha-256'", "listen_addresses": "'127.0.0.1'",
        }
        super().start()
        (self.data / "pg_hba.conf").write_text(
            "# tests/tls.py: TLS and scram for everyone but postgres over the unix socket\n"
            "local all postgres trust\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
            "hostnossl all all 0.0.0.0/0 reject\n"
        )
        with self.admin() as conn:
            conn.execute("SELECT pg_reload_conf()")
        return self

    def admin(self, database: str = "postgres") -> psycopg.Connection:
        """postgres over the unix socket (trust): for the test's set-up only."""
        return psycopg.connect(host=str(self.dir), port=self.port, user="postgres", dbname=database,
                               autocommit=True)

    def role(self, name: str, password: str, *, replication: bool = True, superuser: bool = False) -> None:
        """A login role with a scram password (a superuser only when asked)."""
        attrs = [sql.SQL("LOGIN"), sql.SQL("REPLICATION" if replication else "NOREPLICATION"),
                 sql.SQL("SUPERUSER" if superuser else "NOSUPERUSER")]
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} {} PASSWORD {}").format(
                sql.Identifier(name), sql.SQL(" ").join(attrs), sql.Literal(password)))

    def database(self, name: str, owner: str) -> None:
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))

    def tls_dsn(self, database: str, user: str, password: str, *, host: str = "localhost",
                rootcert: Path | None = None, sslmode: str = "verify-full") -> str:
        """A DSN over TLS as a user writes it: verify-full against the test CA by default."""
        return psycopg.conninfo.make_conninfo(
            host=host, port=self.port, dbname=database, user=user, password=password, sslmode=sslmode,
            sslrootcert=str(rootcert or self.certs.ca),
        )


def _nginx() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def ensure_nginx() -> str:
    """The nginx binary, installed from Debian's packages if missing (as `make test` may need); the
    test is skipped, saying why, only where apt-get cannot run at all."""
    found = _nginx()
    if found:
        return found
    if not shutil.which("apt-get"):
        pytest.skip("nginx is not installed and there is no apt-get to install it: install nginx for the HTTPS tests")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if sudo and not shutil.which("sudo"):
        pytest.skip("nginx is not installed, and apt-get needs root (no sudo): install nginx for the HTTPS tests")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    errors = ""
    for attempt in ([["apt-get", "install", "-y", "-q", "nginx"]],
                    [["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "nginx"]]):
        for cmd in attempt:
            done = subprocess.run([*sudo, *cmd], capture_output=True, text=True, env=env, timeout=600)
            errors += done.stderr[-1000:]
        if _nginx():
            return _nginx() or ""
    if sudo:
        pytest.skip(f"nginx is not installed and sudo apt-get could not install it: {errors[-500:]}")
    raise AssertionError(f"nginx is missing and apt-get could not install it: {errors[-2000:]}")


# what OpenSearch's security plugin answers a user without the index privilege
_DENIED = ('{"error":{"type":"security_exception","reason":"no permissions for [indices:data/write] '
           'and User [name=reader]"},"status":403}')
_NGINX_CONF = """
{user}worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
daemon on;
events {{ worker_connections 256; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 100m;
    map "$remote_user:$request_method" $readonly {{
        default 0;
        "~^reader:(PUT|POST|DELETE)$" 1;
    }}
    map "$remote_user $uri" $outside {{
        default 0;
{scopes}    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        {client_auth}auth_basic "flusso test";
        auth_basic_user_file {dir}/htpasswd;
        location / {{
            default_type application/json;
            if ($outside) {{
                return 403 '{outside}';
            }}
            if ($readonly) {{
                return 403 '{denied}';
            }}
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "";
        }}
    }}
}}
"""


class TlsProxy:
    """nginx terminating HTTPS with basic auth in front of the shared OpenSearch, on a port of its own."""

    def __init__(self, certs: Certs, users: dict[str, str], *, client_certs: bool = False,
                 scopes: dict[str, list[str]] | None = None) -> None:
        self.certs = certs
        self.users = users
        # user -> the index names (aliases) it may touch, as the README's grants put it: `<name>`,
        # `<name>__g*`, `<name>-deadletter`, and `flusso-state`; any other path is a 403
        self.scopes = scopes or {}
        self.client_certs = client_certs  # require a client certificate signed by the test CA
        self.dir = Path(tempfile.mkdtemp(prefix="flusso-nginx-", dir="/var/tmp"))
        self.port = _free_port()
        self.nginx = ensure_nginx()

    def url(self, host: str = "localhost") -> str:
        return f"https://{host}:{self.port}"

    def _scopes(self) -> str:
        """nginx map entries: a scoped user's request outside its indexes (and the few cluster-level
        endpoints flusso uses: `/`, `_bulk`, `_aliases`, `_alias/<name>`, and `_search` and
        `_search/point_in_time` for a point in time over its indexes: `flusso verify`) is outside."""
        rules = []
        for user, names in self.scopes.items():
            alt = "|".join(re.escape(n) for n in names)
            inside = (rf"(|_bulk|_aliases|_alias/({alt})|_search|_search/point_in_time)$"
                      rf"|(({alt})(__g[0-9*]*|-deadletter)?|flusso-state)(/|$)")
            rules.append(f'        "~^{re.escape(user)} /({inside})" 0;\n        "~^{re.escape(user)} " 1;\n')
        return "".join(rules)

    def start(self) -> TlsProxy:
        lines = []
        for user, password in self.users.items():
            hashed = subprocess.run(["openssl", "passwd", "-apr1", "-stdin"], input=password, capture_output=True,
                                    text=True, check=True).stdout.strip()
            lines.append(f"{user}:{hashed}\n")
        (self.dir / "htpasswd").write_text("".join(lines))
        conf = self.dir / "nginx.conf"
        conf.write_text(_NGINX_CONF.format(
            user="user root;\n" if os.geteuid() == 0 else "", dir=self.dir, scopes=self._scopes(),
            outside=_DENIED.replace("indices:data/write", "this index or action"), client_auth=(
                f"ssl_client_certificate {self.certs.ca};\n        ssl_verify_client on;\n        "
                if self.client_certs else ""), port=self.port, denied=_DENIED,
            cert=self.certs.server_cert, key=self.certs.server_key, upstream=OPENSEARCH_URL))
        done = subprocess.run([self.nginx, "-c", str(conf), "-p", str(self.dir), "-e", str(self.dir / "error.log")],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
        deadline = time.monotonic() + 10
        while not (self.dir / "nginx.pid").exists():
            assert time.monotonic() < deadline, "nginx wrote no pid file"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        pidfile = self.dir / "nginx.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text().strip())
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        shutil.rmtree(self.dir, ignore_errors=True)
