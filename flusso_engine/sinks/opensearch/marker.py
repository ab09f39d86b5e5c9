"""Where OpenSearch keeps the seeded marker: the index mapping's `_meta`, read and written whole.

What `_meta.flusso` holds, and every change to it, is `flusso_engine/sinks/marker.py`'s; this part
only reads an index's `_meta` freshly and puts it back. `seeded` is written only by `mark_seeded`.
"""

from __future__ import annotations

from opensearchpy.exceptions import NotFoundError

from ...error import SinkError
from .. import marker as flusso_meta
from ..marker import SeedMarker
from .client import Requests


class Markers(Requests):
    """The sink's part that reads and writes the seeded marker of an index."""

    def is_seeded(self, index: str, expected: SeedMarker) -> bool:
        """Marker present and `expected`'s definition (also the one the index was created with), slot
        and database; the position is not compared."""
        return flusso_meta.is_seeded(self._meta(index), expected)

    def seed_marker(self, index: str) -> SeedMarker | None:
        """The stored marker (with the position the seeding ran at), or None."""
        return flusso_meta.seed_of(self._meta(index))

    def definition_hash(self, index: str) -> str | None:
        """The definition hash the live index was created with; None if missing or not flusso's."""
        return flusso_meta.definition_hash(self._meta(index))

    def mark_seeded(self, index: str, marker: SeedMarker) -> None:
        meta = self._meta(index)
        if meta is None:
            raise SinkError(f"cannot mark {index} seeded: the index does not exist at {self.where}")
        self._put_meta(index, flusso_meta.with_seed(meta, marker))

    def mark_unseeded(self, index: str) -> None:
        """Remove the marker; a missing index is unseeded already."""
        meta = flusso_meta.without_seed(self._meta(index))
        if meta is None:
            return
        try:
            self._put_meta(index, meta)
        except NotFoundError:
            return  # deleted meanwhile (another process recreating it for a backfill): unseeded as well

    def _meta(self, index: str) -> dict | None:
        """The index's whole `_meta` (freshly read), or None if it is missing."""
        try:
            reply = self._call(f"reading the mapping of {index}", self.client.indices.get_mapping,
                               index=index)
        except NotFoundError:
            return None
        mappings = next(iter(reply.values()), {}).get("mappings", {})
        return dict(mappings.get("_meta") or {})

    def _put_meta(self, index: str, meta: dict) -> None:
        self._call(f"writing the _meta of {index}", self.client.indices.put_mapping, index=index,
                   body={"_meta": meta})
