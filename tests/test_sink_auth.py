"""The sink's other ways in (issue #18): a client certificate (nginx asking for one, `tests/tls.py`) and
AWS SigV4 signing, checked against a local endpoint that records the headers (real AWS is not
reachable from here)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError

from flusso_engine.config import SinkConfig
from flusso_engine.policy import FailurePolicies
from flusso_engine.sinks.opensearch import OpenSearchSink

from .e2e import flusso, generate, index_docs, write_config
from .tls import Certs, TlsProxy

SINK_PASSWORD = "os-Client-5e6f7"
AWS_SECRET = "aws-Secr3t-0a1b2c3d4e5f"


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs")).make()


@pytest.fixture(scope="module")
def mtls_proxy(certs: Certs) -> Iterator[TlsProxy]:
    px = TlsProxy(certs, {"writer": SINK_PASSWORD}, client_certs=True).start()
    try:
        yield px
    finally:
        px.stop()


def test_client_certificate(bookstore_db, mtls_proxy, certs, index_prefix, tmp_path: Path, opensearch) -> None:
    """With client_cert and client_key a backfill goes through a cluster that requires them; without,
    the start is refused before anything runs, naming the setting."""
    generate(bookstore_db, books=20)
    sink = {"username": "writer", "password": SINK_PASSWORD, "ca_certs": str(certs.ca),
            "client_cert": str(certs.client_cert), "client_key": str(certs.client_key)}
    config = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix, hosts=[mtls_proxy.url()], sink=sink)
    done = flusso("run", "--no-live", config=config)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(index_docs(opensearch, f"{index_prefix}books")) == 20

    bare = {k: v for k, v in sink.items() if not k.startswith("client_")}
    config = write_config(tmp_path / "bare.yaml", bookstore_db, index_prefix, hosts=[mtls_proxy.url()], sink=bare)
    done = flusso("run", "--no-live", config=config)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "requires a client certificate" in out and "set sink.client_cert" in out, out
    assert SINK_PASSWORD not in out


class _Recorder(BaseHTTPRequestHandler):
    """Answers like a cluster's root and index endpoints, and keeps each request's headers."""

    seen: list[dict[str, str]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        type(self).seen.append({"method": self.command, "path": self.path, **dict(self.headers.items())})
        body = json.dumps({"version": {"number": "2.19.6", "distribution": "opensearch"}, "result": "created",
                           "_id": "1", "_version": 1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = _answer  # noqa: N815 - http.server's names

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_aws_sigv4_signs_every_request(recorder: str, monkeypatch) -> None:
    """auth: aws_sigv4 signs with the standard chain's credentials for the configured region and service;
    the secret key goes into no header and no message."""
    pytest.importorskip("boto3", reason="boto3 is in the dev extra (pip install -e '.[dev]')")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFLUSSOTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    config = SinkConfig(type="opensearch", hosts=[recorder], auth="aws_sigv4", aws_region="eu-west-1",
                        aws_service="es")
    sink = OpenSearchSink(config, FailurePolicies(retries=1, backoff_s=0.01, max_backoff_s=0.05))
    try:
        sink.preflight()
        sink.client.index(index="books", id="1", body={"title": "signed"})
    finally:
        sink.close()
    assert [r["method"] for r in _Recorder.seen] == ["GET", "PUT"]
    for request in _Recorder.seen:
        auth = request.get("Authorization", "")
        assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDFLUSSOTEST/"), request
        assert "/eu-west-1/es/aws4_request" in auth and "Signature=" in auth and "SignedHeaders=" in auth
        assert request.get("X-Amz-Date") and request.get("X-Amz-Content-SHA256")
        assert AWS_SECRET not in json.dumps(request)
    assert AWS_SECRET in sink._secrets  # scrubbed from any message, like a password


def test_aws_secrets_from_a_shared_profile_are_scrubbed_too(tmp_path: Path, monkeypatch) -> None:
    """Credentials the standard chain reads from a profile (not the environment) are secrets as well."""
    pytest.importorskip("boto3", reason="boto3 is in the dev extra (pip install -e '.[dev]')")
    from flusso_engine.sinks.opensearch.client import secrets_of

    profile_secret = "aws-Pr0file-Secr3t-9f8e"
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[flusso]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = {profile_secret}\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "flusso")
    config = SinkConfig(type="opensearch", hosts=["https://search.example"], auth="aws_sigv4",
                        aws_region="eu-west-1", aws_service="es")
    assert profile_secret in secrets_of(config)


def test_aws_sigv4_config_needs_a_region_and_no_password() -> None:
    with pytest.raises(ValidationError) as err:
        SinkConfig(type="opensearch", hosts=["https://search.example"], auth="aws_sigv4", username="u",
                   password="pw-not-shown")
    text = str(err.value)
    assert "aws_region" in text and "remove username and password" in text and "pw-not-shown" not in text
