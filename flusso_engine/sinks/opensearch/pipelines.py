"""Ingest pipelines an index names (`pipeline:`): put from the config's body, or looked up.

A pipeline given with its body is flusso's: it is put (`PUT _ingest/pipeline/<name>`, which
creates or replaces it) before the index is created, at every start, so the cluster runs what the
config says. One given by name only is the operator's: flusso never changes it, and refuses to
start (and `flusso validate` reports) when it does not exist, since every write through a missing
default pipeline would be refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opensearchpy.exceptions import NotFoundError

from .client import Requests


class Pipelines(Requests):
    """The sink's part that puts and finds ingest pipelines."""

    def put_pipeline(self, name: str, body: dict[str, Any]) -> None:
        """Create or replace the ingest pipeline `name`."""
        self._call(f"putting ingest pipeline {name}", self.client.ingest.put_pipeline, id=name, body=body)

    def missing_pipelines(self, names: Iterable[str]) -> list[str]:
        """Those of `names` that no ingest pipeline of the cluster has."""
        missing = []
        for name in dict.fromkeys(names):
            try:
                self._call(f"reading ingest pipeline {name}", self.client.ingest.get_pipeline, id=name)
            except NotFoundError:
                missing.append(name)
        return missing
