"""`source:`: the PostgreSQL database to read, its replication slot and publication."""

from __future__ import annotations

import re

import psycopg
from pydantic import Field, SecretStr, ValidationInfo, field_validator

from .base import Strict
from .messages import suggest

_NAME = re.compile(r"^[a-z0-9_]{1,63}$")  # replication slot and publication names


class SourceConfig(Strict):
    dsn: SecretStr
    capture: str = "wal"  # a backend folder below capture/ (or one registered): see registry.py
    slot: str
    publication: str
    slot_wait_s: float = Field(60.0, ge=0)

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

    @field_validator("slot", "publication")
    @classmethod
    def _name(cls, v: str, info: ValidationInfo) -> str:
        """Names go into SQL and the replication protocol unquoted by some tools: keep them plain."""
        if not _NAME.match(v):
            what = "replication slot" if info.field_name == "slot" else "publication"
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
