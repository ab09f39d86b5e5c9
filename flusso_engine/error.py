"""The error types: each says which side is at fault, so the CLI can pick an exit code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class FlussoError(Exception):
    """Base of every error flusso raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where it is in the file and what would fix it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(FlussoError):
    """A config that cannot run: lists every problem at once (exit 1)."""

    def __init__(self, problems: Sequence[Problem], source: str = "flusso.yaml") -> None:
        self.problems = list(problems)
        self.source = source
        n = len(self.problems)
        lines = [f"{source}: {n} problem{'s' if n != 1 else ''}"]
        lines += [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class SourceError(FlussoError):
    """The database: settings, privileges, a lost connection, a slot held by someone else."""


class QueueError(FlussoError):
    """The durable queue (Kafka): unreachable, refusing a write, or holding a message flusso cannot
    read; nothing past what it confirmed was acknowledged."""


class Refused(FlussoError):
    """An endpoint refused flusso before anything ran (its certificate, the credentials, a privilege):
    exit 1, with the endpoint, the cause and the fix."""


class SinkError(FlussoError):
    """The sink kept failing after its retries: nothing past the last good flush was acked."""


class RejectedItem(SinkError):
    """The sink rejected a document and the policy is `fail`."""

    def __init__(self, index: str, doc_id: str, reason: str) -> None:
        self.index = index
        self.doc_id = doc_id
        self.reason = reason
        super().__init__(
            f"{index}/{doc_id} was rejected: {reason}. The run stopped unacknowledged; fix the data or "
            f"the mapping, or set failures.item_rejection to skip or dead_letter."
        )
