"""The OpenSearch client as flusso uses it: its arguments, the retries of every request, no password shown.

The transport's own retries are off: `FailurePolicies` alone decides how often and how patiently a
request is retried, with backoff and interruptibly (`Retries`, one budget per operation). A round
trip that fails as a whole (connection refused, timeout, 429, 5xx) is transient; anything else is
the caller's to classify.

No message or log line carries a password: hosts are shown without their userinfo (`redact_url`),
and every error text is scrubbed of the configured passwords (`Requests._scrub`), whatever a
library put in it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as TransportConnectionError
from opensearchpy.exceptions import NotFoundError, TransportError

from ...config import SinkConfig
from ...error import ConfigError, Problem, SinkError
from ...policy import FailurePolicies
from ...redact import scrub, secrets_in
from .refusals import refusal


def client_kwargs(config: SinkConfig, connections: int = 1) -> dict[str, Any]:
    """The `OpenSearch(...)` arguments for a sink config, with a pool of `connections` per host.

    The transport's own retries are off (`max_retries=0`): `FailurePolicies` alone decides how often
    and how patiently a request is retried, with backoff, and interruptibly. The pool holds one
    connection per thread that may send at once (urllib3 keeps one by default, and discards the
    others with a "Connection pool is full" warning, reopening them on the next request).
    """
    kwargs: dict[str, Any] = {
        "hosts": list(config.hosts),
        "use_ssl": any(urlsplit(h).scheme == "https" for h in config.hosts),
        "verify_certs": config.verify_certs,
        "ssl_show_warn": config.verify_certs,
        "timeout": config.timeout_s,
        "max_retries": 0,
        "retry_on_timeout": False,
        "pool_maxsize": max(1, connections),
    }
    if config.ca_certs:
        kwargs["ca_certs"] = config.ca_certs
    if config.client_cert:
        kwargs["client_cert"] = config.client_cert
    if config.client_key:
        kwargs["client_key"] = config.client_key
    if config.auth == "aws_sigv4":
        kwargs["http_auth"] = aws_auth(config)
    elif config.username:
        password = config.password.get_secret_value() if config.password else ""
        kwargs["http_auth"] = (config.username, password)
    return kwargs


def aws_auth(config: SinkConfig) -> Any:
    """opensearch-py's SigV4 signer for the config's region and service, with the credentials of the
    standard AWS chain (botocore: environment, shared profile, container or instance role)."""
    try:
        import boto3
    except ImportError as err:
        raise ConfigError([Problem("sink.auth", "aws_sigv4 needs boto3: pip install 'flusso[aws]' "
                                                "(or pip install boto3)")]) from err
    from opensearchpy import Urllib3AWSV4SignerAuth  # the signer for the urllib3 connection flusso uses

    credentials = boto3.Session().get_credentials()
    if credentials is None:
        raise ConfigError([Problem("sink.auth", "aws_sigv4 found no AWS credentials in the standard chain: set "
                                                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or "
                                                "run with an instance or task role")])
    return Urllib3AWSV4SignerAuth(credentials, config.aws_region, config.aws_service)


def secrets_of(config: SinkConfig) -> frozenset[str]:
    """Every password the config holds (in a host's userinfo, or `sink.password`), and with aws_sigv4 the
    AWS secret key and session token, from the environment or wherever the standard chain found them
    (a shared profile, a container or instance role): never shown."""
    aws = _aws_secrets() if config.auth == "aws_sigv4" else ()
    return secrets_in(config.hosts, config.password.get_secret_value() if config.password else None, *aws)


def _aws_secrets() -> tuple[str | None, ...]:
    found: list[str | None] = [os.environ.get("AWS_SECRET_ACCESS_KEY"), os.environ.get("AWS_SESSION_TOKEN")]
    try:
        import boto3

        credentials = boto3.Session().get_credentials()
        frozen = credentials.get_frozen_credentials() if credentials is not None else None
    except Exception:  # noqa: BLE001 - no boto3, or no credentials: `aws_auth` says so
        frozen = None
    if frozen is not None:
        found += [frozen.secret_key, frozen.token]
    return tuple(found)


def describe(err: TransportError) -> str:
    """A failed request in a line: the network's own words for a connection error or a timeout, else
    the server's."""
    if isinstance(err, TransportConnectionError):
        return str(err.info)
    return str(err)


def retryable(status: Any) -> bool:
    return isinstance(status, int) and (status == 429 or status >= 500)


def transient(err: TransportError) -> bool:
    """A round trip failed as a whole for a reason that may pass: worth a retry."""
    return isinstance(err, TransportConnectionError) or retryable(err.status_code)


class Retries:
    """One operation's retry budget: every failed round trip spends one, with a backoff wait first."""

    def __init__(self, policies: FailurePolicies, stop: threading.Event, where: str, log: logging.Logger,
                 scrub: Callable[[str], str]) -> None:
        self.policies = policies
        self.stop = stop
        self.where = where
        self.log = log
        self.scrub = scrub
        self.failures = 0

    def wait(self, what: str, error: str, fix: str | None = None) -> None:
        """Wait before the next retry of `what`, or raise `SinkError` when the budget or the run is over.

        `fix` is what the user does about `error` (by default: check that OpenSearch is up)."""
        error = self.scrub(error)
        self.failures += 1
        retries = self.policies.retries
        if self.failures > retries:
            raise SinkError(
                f"{what} at {self.where} failed after {self.failures} attempts (1 + {retries} retries); "
                f"last error: {error}. Nothing was acknowledged past the last good flush: "
                f"{fix or 'check that OpenSearch is up and reachable'}, then start again."
            )
        delay = self.policies.backoff(self.failures)
        self.log.warning("%s at %s failed (%s); retry %d of %d in %.2fs",
                         what, self.where, error, self.failures, retries, delay)
        if self.stop.wait(delay):
            raise SinkError(
                f"{what} at {self.where} failed ({error}) and the run was stopped before retry "
                f"{self.failures} of {retries}; nothing past the last good flush was acknowledged."
            )


class Requests:
    """The sink's part that talks to the client: administrative requests retried like a flush, and
    scrubbing. `OpenSearchSink.__init__` sets these attributes; `policies` may be replaced at any time
    (every operation reads it when it starts)."""

    client: OpenSearch
    config: SinkConfig
    policies: FailurePolicies
    where: str  # the hosts, redacted: for messages
    _stop: threading.Event
    _log: logging.Logger
    _secrets: frozenset[str]

    def _retries(self) -> Retries:
        """A fresh retry budget for one operation."""
        return Retries(self.policies, self._stop, self.where, self._log, self._scrub)

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """An administrative request, retried like a flush; a 404 is the caller's to handle."""
        retries = self._retries()
        while True:
            try:
                return fn(**kwargs)
            except NotFoundError:
                raise
            except TransportError as err:
                refused = refusal(err, self.config)
                if refused is not None:  # no retry cures a certificate, credentials or a missing privilege
                    cause, fix = refused
                    raise SinkError(f"{what} at {self.where} failed: OpenSearch refused flusso: "
                                    f"{self._scrub(cause)}. Fix: {fix}") from err
                if not transient(err):
                    raise SinkError(f"{what} at {self.where} failed: {self._scrub(describe(err))}") from err
                retries.wait(what, describe(err))

    def _scrub(self, text: str) -> str:
        """`text` with every password taken out, whatever a library put in it."""
        return scrub(text, self._secrets)
