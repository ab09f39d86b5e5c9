"""The seeded marker, and the one code that reads and writes an index's `_meta.flusso`.

An index's `_meta.flusso` holds flusso's state of it:

```json
{"definition_hash": "<the definition the index was created with>",
 "fingerprint": {"field": "_flusso_hash", "of": "..."},
 "seeded": {"definition_hash": "...", "slot": "...", "system_identifier": "...", "position": 123,
            "tables": {...}, "slot_incarnation": "..."}}
```

The documents part puts the definition hash into the mapping it derives (`index_meta`); a sink
creates the index with it, never with a `seeded` marker (`unseeded_mapping`), which only
`with_seed` adds once a backfill is done. OpenSearch replaces `_meta` whole on a mapping update, so
`with_seed` and `without_seed` take the index's whole `_meta` and return all of it, other keys kept.
Everything here is pure: where `_meta` is stored, and how it is read and written, is the sink's.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

KEY = "flusso"  # flusso's key in `_meta`; the rest of `_meta` belongs to whoever put it there


@dataclass(frozen=True)
class SeedMarker:
    """What `_meta.flusso.seeded` records: which definition, slot and database an index was seeded from.

    `position` is the WAL position the seeding ran at: a server whose current position is below it
    was restored from an older backup, and every later write would lose its version check.
    `tables` is each of the index's tables as the catalog said then (its OID, and its partitions'
    OIDs and storage): a table replaced under the same name, or partitions attached, detached or
    truncated since, changed rows without a change reaching the slot.

    `slot_incarnation` names the slot itself, not just its name: flusso gives a slot a new random
    incarnation whenever it cannot vouch for it (created, recreated or moved by someone else, a
    restored database; see `slotstate.py`), so a marker of an earlier incarnation reads unseeded.
    A marker written before incarnations existed has none, and reads unseeded once.
    """

    definition_hash: str
    slot: str
    system_identifier: str
    position: int = 0
    tables: Mapping[str, Any] = field(default_factory=dict, compare=False)
    slot_incarnation: str | None = None

    def as_meta(self) -> dict:
        return {
            "definition_hash": self.definition_hash,
            "slot": self.slot,
            "system_identifier": self.system_identifier,
            "position": self.position,
            "tables": dict(self.tables),
            "slot_incarnation": self.slot_incarnation,
        }

    @classmethod
    def from_meta(cls, meta: Any) -> SeedMarker | None:
        """The marker `as_meta` wrote, or None for anything else (absent, hand-edited, older layout)."""
        if not isinstance(meta, Mapping):
            return None
        try:
            return cls(
                definition_hash=str(meta["definition_hash"]),
                slot=str(meta["slot"]),
                system_identifier=str(meta["system_identifier"]),
                position=int(meta.get("position", 0)),
                tables=dict(meta["tables"]) if isinstance(meta.get("tables"), Mapping) else {},
                slot_incarnation=None if meta.get("slot_incarnation") is None else str(meta["slot_incarnation"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def same_seed(self, other: SeedMarker) -> bool:
        """Same definition, slot (name and incarnation) and database: what `is_seeded` checks (the
        position is not compared)."""
        return (self.definition_hash, self.slot, self.system_identifier, self.slot_incarnation) == (
            other.definition_hash,
            other.slot,
            other.system_identifier,
            other.slot_incarnation,
        )


def index_meta(definition_hash: str, fingerprint: Mapping | None = None) -> dict:
    """The `_meta` an index is created with: its definition hash, what its documents' fingerprint
    field is (`documents/mapping.py`), and no seeded marker."""
    flusso: dict[str, Any] = {"definition_hash": definition_hash}
    if fingerprint is not None:
        flusso["fingerprint"] = dict(fingerprint)
    return {KEY: flusso}


def _flusso(meta: Mapping | None) -> dict | None:
    """`_meta.flusso` when it is flusso's layout (a dict), else None."""
    found = meta.get(KEY) if isinstance(meta, Mapping) else None
    return found if isinstance(found, dict) else None


def _mapping_meta(mapping: Mapping) -> Any:
    """The `_meta` of an index-creation body (`{"mappings": {"_meta": ...}}`)."""
    return mapping.get("mappings", {}).get("_meta", {})


def definition_hash(meta: Mapping | None) -> str | None:
    """The definition hash an index was created with, from its `_meta`; None when it is not flusso's."""
    flusso = _flusso(meta)
    value = None if flusso is None else flusso.get("definition_hash")
    return value if isinstance(value, str) else None


def mapping_definition_hash(mapping: Mapping) -> str | None:
    """The definition hash an index-creation body carries (`index_meta` put it there)."""
    return definition_hash(_mapping_meta(mapping))


def seed_of(meta: Mapping | None) -> SeedMarker | None:
    """The seeded marker in an index's `_meta` (with the position the seeding ran at), or None."""
    flusso = _flusso(meta)
    return None if flusso is None else SeedMarker.from_meta(flusso.get("seeded"))


def is_seeded(meta: Mapping | None, expected: SeedMarker) -> bool:
    """Marker present and `expected`'s definition (also the one the index was created with), slot
    and database; the position is not compared."""
    if definition_hash(meta) != expected.definition_hash:
        return False
    marker = seed_of(meta)
    return marker is not None and marker.same_seed(expected)


def with_seed(meta: Mapping, marker: SeedMarker) -> dict:
    """The whole `_meta` to write to mark the index seeded by `marker`, every other key kept."""
    return {**meta, KEY: {**(_flusso(meta) or {}), "seeded": marker.as_meta()}}


def without_seed(meta: Mapping | None) -> dict | None:
    """The whole `_meta` to write to unmark the index, or None when it carries no marker to remove."""
    flusso = _flusso(meta)
    if meta is None or flusso is None or "seeded" not in flusso:
        return None
    return {**meta, KEY: {k: v for k, v in flusso.items() if k != "seeded"}}


def unseeded_mapping(mapping: Mapping) -> dict:
    """A copy of an index-creation body without a seeded marker: a created index never claims to be
    seeded, whatever the body it is created from holds (the caller's body is not changed)."""
    body = copy.deepcopy(dict(mapping))
    flusso = _flusso(_mapping_meta(body))
    if flusso is not None:
        flusso.pop("seeded", None)
    return body
