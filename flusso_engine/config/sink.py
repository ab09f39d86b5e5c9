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
    verify_certs: bool = True
    ca_certs: str | None = None
    timeout_s: float = Field(30.0, gt=0)
    max_bulk_bytes: int = Field(20 * 1024 * 1024, gt=0)
    # flusso's own state (one small document per slot and database: see slotstate.py)
    state_index: str = Field("flusso-state", min_length=1, pattern=r"^[a-z0-9][a-z0-9._-]*$")

    @field_validator("hosts", mode="before")
    @classmethod
    def _one_host(cls, v: Any) -> Any:
        return one_or_many(v)

    @field_validator("username", "ca_certs", "password", mode="before")
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
        report(problems)
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # A host URL may carry `user:password@`: keep it out of repr() and str().
        for name, value in super().__repr_args__():
            yield name, ([redact_dsn(h) for h in value] if name == "hosts" else value)
