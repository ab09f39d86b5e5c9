"""The stdout sink: each flushed write as one JSON line, for trying a config without OpenSearch.

It keeps no state across runs, so an index is seeded only once this process has marked it: every
run backfills. Its "index" is the set of ids it has written and not deleted, in memory, so that
`count` answers what OpenSearch would.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from ...changes import DocId
from .. import FlushReport, SeedMarker, WriteBuffer
from ..marker import mapping_definition_hash


class StdoutSink:
    """Writes `{"index", "id", "op", "version", "doc"}` lines on flush (`doc` is null for a delete)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self._buffer = WriteBuffer()
        self._ids: dict[str, set[DocId]] = {}
        self._hashes: dict[str, str | None] = {}
        self._markers: dict[str, SeedMarker] = {}
        self._state: dict[str, tuple[dict, int]] = {}

    def ensure_index(self, index: str, mapping: dict) -> None:
        if index not in self._ids:
            self._ids[index] = set()
            self._hashes[index] = mapping_definition_hash(mapping)

    def is_seeded(self, index: str, expected: SeedMarker) -> bool:
        marker = self._markers.get(index)
        return marker is not None and marker.same_seed(expected)

    def seed_marker(self, index: str) -> SeedMarker | None:
        return self._markers.get(index)

    def definition_hash(self, index: str) -> str | None:
        return self._hashes.get(index)

    def mark_seeded(self, index: str, marker: SeedMarker) -> None:
        self._markers[index] = marker

    def mark_unseeded(self, index: str) -> None:
        self._markers.pop(index, None)

    def recreate(self, index: str, mapping: dict) -> None:
        for state in (self._ids, self._hashes, self._markers):
            state.pop(index, None)
        self.ensure_index(index, mapping)

    def read_state(self, key: str) -> tuple[dict, Any] | None:
        stored = self._state.get(key)
        return None if stored is None else (dict(stored[0]), stored[1])

    def write_state(self, key: str, doc: dict, token: Any) -> Any | None:
        """Compare-and-set in memory (the token is a counter), like the OpenSearch sink's."""
        stored = self._state.get(key)
        if (stored[1] if stored is not None else None) != token:
            return None
        version = (token or 0) + 1
        self._state[key] = (dict(doc), version)
        return version

    def refresh(self, index: str) -> None:
        """Nothing to do: what was flushed is counted at once."""

    def count(self, index: str) -> int:
        return len(self._ids.get(index, ()))

    def write(self, index: str, doc_id: DocId, doc: dict | str | None, version: int,
              routing: str | None = None) -> None:
        self._buffer.add(index, doc_id, doc, version, routing)

    def flush(self) -> FlushReport:
        started = time.monotonic()
        report = FlushReport()
        writes = self._buffer.writes()
        if not writes:
            return report
        lines = [
            json.dumps({"index": w.index, "id": w.doc_id, "op": "index" if w.doc is not None else "delete",
                        "version": w.version, **({"routing": w.routing} if w.routing is not None else {}),
                        "doc": json.loads(w.doc) if isinstance(w.doc, str) else w.doc},
                       ensure_ascii=False)
            for w in writes
        ]
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        for w in writes:
            ids = self._ids.setdefault(w.index, set())
            if w.doc is None:
                ids.discard(w.doc_id)
                report.deleted += 1
            else:
                ids.add(w.doc_id)
                report.written += 1
        self._buffer.clear()
        report.requests = 1
        report.seconds = time.monotonic() - started
        return report

    def close(self) -> None:
        """Nothing to release: the stream is the caller's."""
