"""`sink:`: where documents go (OpenSearch, or stdout to look at them), and how to reach it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from ..redact import redact_dsn
from .base import Loc, Strict, one_or_many, report


class SinkConfig(Strict):
    type: Literal["opensearch", "stdout"]
    hosts: list[str] = Field(default_factory=list)
    username: str | None = None
    password: SecretStr | None = None
    verify_certs: bool = True  # false only with a loud warning at every start
    ca_certs: str | None = None
    # a client certificate (PEM), for a cluster that asks for one; the key may be in client_cert's file
    client_cert: str | None = None
    client_key: str | None = None
    # basic: username and password (or none); aws_sigv4: requests signed with the standard AWS
    # credential chain (environment, profile, instance role) for aws_region and aws_service
    auth: Literal["basic", "aws_sigv4"] = "basic"
    aws_region: str | None = None
    aws_service: Literal["es", "aoss"] = "es"
    timeout_s: float = Field(30.0, gt=0)
    max_bulk_bytes: int = Field(20 * 1024 * 1024, gt=0)
    # flusso's own state (one small document per slot and database: see slotstate.py)
    state_index: str = Field("flusso-state", min_length=1, pattern=r"^[a-z0-9][a-z0-9._-]*$")

    @field_validator("hosts", mode="before")
    @classmethod
    def _one_host(cls, v: Any) -> Any:
        return one_or_many(v)

    @field_validator("username", "ca_certs", "password", "client_cert", "client_key", "aws_region", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        """`${OPENSEARCH_USER:-}` expands to "": no credentials, not an empty user name."""
        return None if v == "" else v

    @model_validator(mode="after")
    def _hosts_and_credentials(self) -> SinkConfig:
        """Hosts for OpenSearch and both credentials or neither: all reported together."""
        problems: list[tuple[Loc, str]] = []
        if self.type == "opensearch" and not self.hosts:
            problems.append((("hosts",), 'the opensearch sink needs hosts: add e.g. ["http://127.0.0.1:9200"]'))
        for i, host in enumerate(self.hosts):
            if not host.strip():
                problems.append((("hosts", i), "is empty: give a URL like http://127.0.0.1:9200"))
        if (self.username is None) != (self.password is None):
            have, lack = ("username", "password") if self.username is not None else ("password", "username")
            problems.append(((lack,), f"{have} is set but {lack} is not: set both, or neither"))
        if self.client_key is not None and self.client_cert is None:
            problems.append((("client_key",), "is set but client_cert is not: set client_cert too"))
        if self.auth == "aws_sigv4":
            if self.aws_region is None:
                problems.append((("aws_region",), "auth: aws_sigv4 signs for a region: set it, e.g. eu-west-1"))
            if self.username is not None or self.password is not None:
                problems.append((("auth",), "aws_sigv4 signs with AWS credentials: remove username and password "
                                            "(or use auth: basic)"))
        elif self.aws_region is not None:
            problems.append((("aws_region",), "is only used with auth: aws_sigv4: set auth, or remove it"))
        report(problems)
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # A host URL may carry `user:password@`: keep it out of repr() and str().
        for name, value in super().__repr_args__():
            yield name, ([redact_dsn(h) for h in value] if name == "hosts" else value)
