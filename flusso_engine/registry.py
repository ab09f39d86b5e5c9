"""Backends by name: the config's `type` picks each part's backend, and nothing else names one.

A backend is a folder below its part (`capture/wal/`, `queue/channel/`, `queue/kafka/`, `documents/sql/`,
`sinks/opensearch/`, `sinks/stdout/`) whose `__init__.py` defines `create(context, ...)`; the
registry imports it by name when the config asks for it, so the engine, the CLI and the Dagster layer
never import a backend (`scripts/check_layout.py` checks that). `register` adds one from elsewhere
(a plugin, a test's fake) under a name of its own.

| part | config key | factory |
| --- | --- | --- |
| capture | `source.capture` | `create(context) -> ChangeCapture` |
| queue | `queue.type` | `create(context, stop) -> Queue` (one per phase; kafka's also `produce=`, `consume=`) |
| documents | (always `sql` for now) | `create(context) -> DocumentBuilder` |
| sinks | `sink.type` | `create(context) -> Sink` |
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .catalog import Catalog
from .changes import Position
from .config import FlussoConfig
from .error import ConfigError, Problem
from .plan import Plan
from .policy import BatchPolicy, FailurePolicies

PARTS = {"capture": "source.capture", "queue": "queue.type", "documents": "documents", "sinks": "sink.type"}

_registered: dict[tuple[str, str], Callable[..., Any]] = {}


@dataclass(frozen=True)
class Context:
    """What a backend's factory may use: the config, the catalog and plan it was read against, the
    run's stop events and policies."""

    config: FlussoConfig
    catalog: Catalog | None  # None in a context for a sink alone (`for_sink`)
    plan: Plan | None
    dsn: str
    stop: threading.Event  # the run's: set on shutdown
    capture_stop: threading.Event  # capture's own, so the worker can still drain, flush and ack
    batch: BatchPolicy
    failures: FailurePolicies
    baseline: Position = 0  # the WAL position read just before the catalog

    @classmethod
    def for_sink(cls, config: FlussoConfig, failures: FailurePolicies | None = None,
                 stop: threading.Event | None = None) -> Context:
        """What a sink's factory needs, without a database: for commands that only read the sink."""
        return cls(config=config, catalog=None, plan=None, dsn="", stop=stop or threading.Event(),
                   capture_stop=threading.Event(), batch=BatchPolicy.from_config(config.batch),
                   failures=failures or FailurePolicies.from_config(config.failures))


def register(part: str, name: str, factory: Callable[..., Any]) -> None:
    """Make `name` a backend of `part` (a test's fake, a plugin): `factory` is its `create`."""
    if part not in PARTS:
        raise ValueError(f"no part {part!r} (parts: {', '.join(PARTS)})")
    _registered[(part, name)] = factory


def unregister(part: str, name: str) -> None:
    _registered.pop((part, name), None)


def available(part: str) -> list[str]:
    """The names `part` can be given: its backend folders and whatever was registered."""
    package = importlib.import_module(f"{__package__}.{part}")
    folders = [m.name for m in pkgutil.iter_modules(package.__path__) if m.ispkg]
    return sorted({*folders, *(name for p, name in _registered if p == part)})


def factory(part: str, name: str) -> Callable[..., Any]:
    """The `create` of `part`'s backend `name`; a ConfigError naming the choices if there is none."""
    found = _registered.get((part, name))
    if found is not None:
        return found
    if name in available(part):
        module = importlib.import_module(f"{__package__}.{part}.{name}")
        create = getattr(module, "create", None)
        if callable(create):
            return create
    choices = ", ".join(n for n in available(part)) or "none"
    raise ConfigError([Problem(PARTS[part], f'no {part} backend "{name}": use one of {choices}')])


def hook(part: str, name: str, attr: str) -> Callable[..., Any] | None:
    """A function a backend's folder offers beside `create` (a queue's `status(config)`), or None."""
    if (part, name) in _registered or name not in available(part):
        return None
    found = getattr(importlib.import_module(f"{__package__}.{part}.{name}"), attr, None)
    return found if callable(found) else None


def create(part: str, name: str, context: Context, *args: Any, **kwargs: Any) -> Any:
    return factory(part, name)(context, *args, **kwargs)
