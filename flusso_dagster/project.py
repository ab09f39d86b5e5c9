"""What the definitions need to know when they load: the config's path, its index names and slot,
and the settings read from the environment.

Loading must not need the database, OpenSearch or every secret (the UI should show the partitions
even when a password is missing), so names are read from the YAML with its `${VAR}`s expanded as far
as the environment allows; the engine validates the whole config when a run starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flusso_engine.config import expand_env, read_yaml
from flusso_engine.error import ConfigError, Problem

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "examples" / "bookstore" / "flusso.yaml"


# The environment variables the resource hands to the config's `${VAR}` expansion as secrets.
SECRET_VARS = {
    "pg_dsn": "FLUSSO_PG_DSN",
    "opensearch_url": "OPENSEARCH_URL",
    "opensearch_user": "OPENSEARCH_USER",
    "opensearch_password": "OPENSEARCH_PASSWORD",
}


@dataclass(frozen=True)
class Project:
    """The config file and the names in it that the definitions are built from."""

    config_path: str
    indexes: tuple[str, ...]
    slot: str
    queue: str = "channel"  # queue.type: with kafka, live_capture runs a capture role and `workers` workers
    workers: int = 1  # queue.workers (kafka only)
    heartbeat_s: float = 60.0
    slot_check_s: float = 60.0  # how often slot_health_sensor reads the slot's health
    reseed_cron: str = "0 3 * * 0"
    reseed_indexes: tuple[str, ...] = ()
    verify_sample: int | None = 1000  # documents_match_rows checks this many random ids; None: all of them
    verify_cron: str = "0 4 * * *"

    @classmethod
    def from_env(cls, config_path: str | os.PathLike[str] | None = None,
                 env: Mapping[str, str] | None = None) -> Project:
        env = os.environ if env is None else env
        path = Path(config_path or env.get("FLUSSO_CONFIG") or DEFAULT_CONFIG).resolve()
        names = read_names(path, env)
        reseed = tuple(n.strip() for n in env.get("FLUSSO_RESEED_INDEXES", "").split(",") if n.strip())
        return cls(
            config_path=str(path),
            indexes=names.indexes,
            slot=names.slot,
            queue=names.queue,
            workers=names.workers,
            heartbeat_s=float(env.get("FLUSSO_HEARTBEAT_S") or 60.0),
            slot_check_s=float(env.get("FLUSSO_SLOT_CHECK_S") or 60.0),
            reseed_cron=env.get("FLUSSO_RESEED_CRON") or "0 3 * * 0",
            reseed_indexes=reseed,
            verify_sample=_sample(env.get("FLUSSO_VERIFY_SAMPLE")),
            verify_cron=env.get("FLUSSO_VERIFY_CRON") or "0 4 * * *",
        )


def _sample(value: str | None) -> int | None:
    """FLUSSO_VERIFY_SAMPLE: a number of random ids (default 1000), or `full` (or 0) for every id."""
    if not value:
        return 1000
    if value.strip().lower() in ("full", "0"):
        return None
    try:
        return max(1, int(value))
    except ValueError:
        raise ConfigError([Problem("FLUSSO_VERIFY_SAMPLE", f"{value!r}: a number of ids, or `full`")]) from None


@dataclass(frozen=True)
class Names:
    """What the definitions are built from: the index names, the slot, the queue and its workers."""

    indexes: tuple[str, ...]
    slot: str
    queue: str = "channel"
    workers: int = 1


def read_names(path: Path, env: Mapping[str, str]) -> Names:
    """The index names, the slot and the queue's workers, without validating the rest (a missing
    secret is not an error here)."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(
            [Problem("", f"cannot read {path}: {err.strerror}: set FLUSSO_CONFIG to your flusso.yaml")],
            str(path),
        ) from None
    raw = expand_env(read_yaml(text, str(path)), env, "", [])
    problems = []
    indexes = raw.get("indexes") if isinstance(raw, dict) else None
    source = raw.get("source") if isinstance(raw, dict) else None
    slot = source.get("slot") if isinstance(source, dict) else None
    if not isinstance(indexes, dict) or not indexes:
        problems.append(Problem("indexes", "no index is configured: the search_index asset needs one"))
    if not isinstance(slot, str) or not slot:
        problems.append(Problem("source.slot", "no slot is configured: live_capture needs one"))
    queue = raw.get("queue") if isinstance(raw, dict) else None
    queue = queue if isinstance(queue, dict) else {}
    kind = queue.get("type", "channel")
    workers = queue.get("workers", 1)
    if kind == "kafka" and (isinstance(workers, bool) or not isinstance(workers, int) or not 0 < workers <= 256):
        problems.append(Problem("queue.workers", f"{workers!r} is not a number of workers from 1 to 256: "
                                "live_capture runs that many worker roles, e.g. workers: 2"))
    if problems:
        raise ConfigError(problems, str(path))
    return Names(tuple(str(name) for name in indexes), slot, str(kind), workers if kind == "kafka" else 1)
