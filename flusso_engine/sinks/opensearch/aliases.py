"""Generations in OpenSearch: physical indexes `<alias>__g<N>` behind the alias users search.

A generation is built with `refresh_interval: -1` and no replicas (nothing searches it yet, and
every refresh and replica copy would slow the bulk load down), then given the index's configured
settings back and refreshed before the alias moves to it. The alias moves in one `_aliases`
request whose `remove` carries `must_exist`: it fails, changing nothing, when the alias is no
longer where the caller believed it was, so two swaps can never both win.
"""

from __future__ import annotations

from typing import Any

from opensearchpy.exceptions import NotFoundError

from ...error import SinkError
from .. import AliasMoved
from ..marker import KEY
from .indexes import Indexes, _setting
from .marker import Markers

BUILD_SETTINGS = {"index.refresh_interval": "-1", "index.number_of_replicas": 0}


class Aliases(Markers, Indexes):
    """The sink's part that keeps an index's generations and its alias."""

    def alias_target(self, alias: str) -> str | None:
        """The physical index `alias` names: the index the alias points at, `alias` itself when it is
        a concrete index (an install from before generations), None when neither exists."""
        try:
            reply = self._call(f"reading alias {alias}", self.client.indices.get_alias, name=alias)
        except NotFoundError:
            reply = {}
        names = sorted(reply)
        if len(names) > 1:
            raise SinkError(f"alias {alias} at {self.where} points at several indexes ({', '.join(names)}); "
                            f"flusso keeps it on one: remove it from all but the newest generation")
        if names:
            return names[0]
        exists = self._call(f"checking index {alias}", self.client.indices.exists, index=alias)
        return alias if exists else None

    def generation_names(self, alias: str) -> dict[str, dict]:
        """Every physical generation of `alias` (`<alias>__g*`), with its `_meta.flusso` and the
        `index.creation_date` (epoch ms) under `created_ms`."""
        pattern = f"{alias}__g*"
        mappings = self._call(f"listing generations of {alias}", self.client.indices.get_mapping, index=pattern,
                              ignore_unavailable=True, allow_no_indices=True)
        settings = self._call(f"listing generations of {alias}", self.client.indices.get_settings, index=pattern,
                              name="index.creation_date", ignore_unavailable=True, allow_no_indices=True)
        out: dict[str, dict] = {}
        for name, body in mappings.items():
            meta = (body.get("mappings", {}).get("_meta") or {}).get(KEY)
            info = dict(meta) if isinstance(meta, dict) else {}
            created = settings.get(name, {}).get("settings", {}).get("index", {}).get("creation_date")
            info["created_ms"] = int(created) if created is not None else 0
            out[name] = info
        return out

    def create_generation(self, name: str, mapping: dict, generation: int) -> None:
        """Create the physical index `name` empty and unseeded, with build settings."""
        body = dict(mapping)
        body["settings"] = {**dict(mapping.get("settings", {})), **BUILD_SETTINGS}
        mappings = dict(body.get("mappings", {}))
        meta = dict(mappings.get("_meta") or {})
        meta[KEY] = {**dict(meta.get(KEY) or {}), "generation": generation, "state": "building"}
        body["mappings"] = {**mappings, "_meta": meta}
        self._call(f"deleting index {name}", self.client.indices.delete, index=name, ignore=404)
        if not self._create(name, body):
            raise SinkError(f"index {name} at {self.where} was created by another writer meanwhile: is another "
                            "flusso rebuilding it? Try again once it has finished")

    def finish_generation(self, name: str, mapping: dict) -> None:
        """Give `name` the index's configured refresh interval and replicas back (OpenSearch's
        defaults when the config sets none), then refresh it so that every document is searchable."""
        settings = dict(mapping.get("settings", {}))
        restore: dict[str, Any] = {}
        for key in ("refresh_interval", "number_of_replicas", "auto_expand_replicas"):
            restore[f"index.{key}"] = _setting(settings, key)
        if restore["index.auto_expand_replicas"] is None:
            del restore["index.auto_expand_replicas"]
        self._call(f"restoring the settings of {name}", self.client.indices.put_settings, index=name,
                   body=restore)
        self.refresh(name)

    def swap_alias(self, alias: str, new: str, old: str | None) -> None:
        """Point `alias` at `new` in one request. `old` is where it points now: a generation (the
        alias leaves it), `alias` itself (a concrete index, deleted in the same request), or None
        (no alias yet). Raises `AliasMoved` when the alias is not at `old` any more."""
        actions: list[dict] = [{"add": {"index": new, "alias": alias}}]
        if old == alias:
            actions.append({"remove_index": {"index": alias}})
        elif old is not None:
            actions.insert(0, {"remove": {"index": old, "alias": alias, "must_exist": True}})
        try:
            self._call(f"moving alias {alias} to {new}", self.client.indices.update_aliases,
                       body={"actions": actions})
        except NotFoundError as err:
            raise AliasMoved(f"alias {alias} at {self.where} is no longer on {old}: another process moved "
                             "it") from err
        except SinkError as err:
            if old is None and "invalid_alias_name_exception" in str(err):  # a concrete index appeared
                raise AliasMoved(f"{alias} exists at {self.where} as an index already") from err
            raise

    def set_generation_state(self, name: str, state: str) -> None:
        """Label a generation `building`, `serving` or `previous` in its `_meta` (for whoever looks)."""
        meta = self._meta(name)
        if meta is None:
            return
        flusso = dict(meta.get(KEY) or {})
        if flusso.get("state") == state:
            return
        flusso["state"] = state
        try:
            self._put_meta(name, {**meta, KEY: flusso})
        except NotFoundError:
            return

    def delete_index(self, name: str) -> None:
        self._call(f"deleting index {name}", self.client.indices.delete, index=name, ignore=404)
