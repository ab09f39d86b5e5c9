"""`source:`: the PostgreSQL database to read, and how its changes are captured: a replication slot
and publication (`capture: wal`), or triggers and a change log in a schema of flusso's own
(`capture: polling`), whose cursor the slot's name names."""

from __future__ import annotations

import re

import psycopg
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from .base import Strict
from .messages import suggest

_NAME = re.compile(r"^[a-z0-9_]{1,63}$")  # replication slot, publication and schema names
POLLING_SLOT_MAX = 56  # `flusso_` + the slot names polling's triggers, within PostgreSQL's 63 bytes


class SourceConfig(Strict):
    dsn: SecretStr
    capture: str = "wal"  # a backend folder below capture/ (or one registered): see registry.py
    slot: str  # the replication slot (wal); the change log's cursor and triggers' name (polling)
    publication: str | None = None  # wal only (required there)
    slot_wait_s: float = Field(60.0, ge=0)
    poll_interval_ms: int = Field(200, ge=10, le=60_000)  # polling: how often the change log is read
    polling_schema: str = "flusso"  # polling: the schema of flusso's own that holds the change log
    long_transaction_warn_s: float = Field(300.0, gt=0)  # polling: a transaction open this long is a warning

    @field_validator("capture")
    @classmethod
    def _backend(cls, v: str) -> str:
        """One of the capture backends there are (`capture/<name>/`, or registered)."""
        from ..registry import available  # the registry reads the config's types: imported when used

        choices = available("capture")
        if v not in choices:
            fix = f"use {choices[0]}" if len(choices) == 1 else "use one of them"
            raise ValueError(f'"{v}" is not one of {", ".join(choices)}{suggest(v, choices)}: {fix}')
        return v

    @field_validator("dsn")
    @classmethod
    def _connection_string(cls, v: SecretStr) -> SecretStr:
        """Say so now rather than at the first connect, without ever quoting the value."""
        dsn = v.get_secret_value()
        if not dsn.strip():
            raise ValueError("is empty: set it, e.g. postgresql://user:password@host:5432/dbname")
        if not _parses(dsn):
            raise ValueError(
                "is not a PostgreSQL connection string: write "
                "postgresql://user:password@host:5432/dbname or host=... dbname=... user=..."
            )
        return v

    @model_validator(mode="after")
    def _capture_needs(self) -> SourceConfig:
        """A slot's publication is the WAL's; polling names its triggers after the slot (63 bytes)."""
        if self.capture == "wal" and self.publication is None:
            raise ValueError(f'capture: wal needs a publication: add e.g. `publication: {self.slot}`')
        if self.capture == "polling" and len(self.slot) > POLLING_SLOT_MAX:
            raise ValueError(
                f'slot "{self.slot}" is {len(self.slot)} characters long: with capture: polling it names the '
                f'triggers flusso_<slot>, so use at most {POLLING_SLOT_MAX}'
            )
        return self

    @field_validator("slot", "publication", "polling_schema")
    @classmethod
    def _name(cls, v: str | None, info: ValidationInfo) -> str | None:
        """Names go into SQL and the replication protocol unquoted by some tools: keep them plain."""
        if v is None:
            return v
        if not _NAME.match(v):
            what = {"slot": "replication slot", "publication": "publication"}.get(info.field_name, "schema")
            fixed = re.sub(r"[^a-z0-9_]", "_", v.lower())[:63] or "flusso"
            raise ValueError(
                f'"{v}" is not a valid {what} name (lower-case letters, digits and _ only, at most 63): '
                f'use e.g. "{fixed}"'
            )
        return v


def _parses(dsn: str) -> bool:
    """Whether libpq's parser reads `dsn`.

    psycopg's message may quote the password, so it is dropped here rather than kept as the cause
    of the problem raised above: a config error's traceback must not show the secret either.
    """
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return False
    return True
