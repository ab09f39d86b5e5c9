"""The stdout backend of the sink part: each flushed write as one JSON line (see `sink.py`)."""

from __future__ import annotations

from typing import Any

from .sink import StdoutSink

__all__ = ["StdoutSink", "create"]


def create(context: Any) -> StdoutSink:
    """The registry's factory (`sink.type: stdout`); it needs nothing of the run's `context`."""
    return StdoutSink()
