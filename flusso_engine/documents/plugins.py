"""Per-document plugins (`plugins:` on an index): Python classes run on every built document.

A plugin is a class with `transform(doc: dict) -> dict | None` (None drops the document: it is
deleted from the index, as a document whose root row is gone), named in flusso.yaml by dotted path
(`mypackage.plugins:Redact`) or by the name of an entry point in the `flusso.plugins` group. A class
may offer `transform_batch(docs: list[dict]) -> list[dict | None]` instead, to do its work once per
build chunk (a lookup, a model call). They run after each build, on every path that writes a
document (live, backfill, reseed, repair, dead-letter replay), in the order listed.

An index with plugins pays for them: its documents, which the build statement writes as JSON text
that is otherwise sent to the sink untouched, are parsed here and serialized again by the sink
(`bench/RESULTS.md`, "Plugins"). An index without plugins keeps the raw-JSON path. The
fingerprint (`_flusso_hash`) stays the one of the built document: `flusso verify` compares builds,
so a plugin must be deterministic (the same document in, the same out) to leave verify quiet.

A plugin's exception stops the engine before anything of the batch is acknowledged, naming the
plugin and the document: a restart after the fix delivers the batch again.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Collection, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any

from ..changes import Change, DocId
from ..config import FlussoConfig
from ..error import FlussoError, Problem
from . import Built, DocumentBuilder
from .mapping import FINGERPRINT

GROUP = "flusso.plugins"


class PluginError(FlussoError):
    """A plugin could not be loaded, or raised on a document."""


def load(spec: str) -> Any:
    """An instance of the plugin class `spec` names (`module.path:Class`, or an entry point's name)."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise PluginError(f'plugin "{spec}": cannot import {module_name} ({err}): install the package that '
                              "provides it, or put its directory on PYTHONPATH") from err
        cls = getattr(module, attr, None)
        if cls is None:
            raise PluginError(f'plugin "{spec}": {module_name} has no {attr}')
    else:
        found = [e for e in entry_points(group=GROUP) if e.name == spec]
        if not found:
            names = sorted(e.name for e in entry_points(group=GROUP))
            raise PluginError(f'plugin "{spec}": no entry point of that name in group {GROUP} (installed: '
                              f'{", ".join(names) or "none"}); or name the class as module.path:Class')
        cls = found[0].load()
    try:
        plugin = cls() if isinstance(cls, type) else cls
    except Exception as err:  # noqa: BLE001 - the plugin's own constructor
        raise PluginError(f'plugin "{spec}": {cls!r}() raised {type(err).__name__}: {err} (a plugin class is '
                          "made without arguments)") from err
    if not callable(getattr(plugin, "transform", None)) and not callable(getattr(plugin, "transform_batch", None)):
        raise PluginError(f'plugin "{spec}" has neither transform(doc) nor transform_batch(docs)')
    return plugin


def problems(config: FlussoConfig) -> list[Problem]:
    """What `flusso validate` says of each index's plugins: they load, and have a transform."""
    out = []
    for name, index in config.indexes.items():
        for i, spec in enumerate(index.plugins):
            try:
                load(spec)
            except PluginError as err:
                out.append(Problem(f"indexes.{name}.plugins[{i}]", str(err)))
    return out


class PluginBuilder:
    """A `DocumentBuilder` that runs each index's plugins on what the wrapped builder built."""

    def __init__(self, builder: DocumentBuilder, plugins: Mapping[str, Sequence[tuple[str, Any]]]) -> None:
        self._builder = builder
        self._plugins = {index: list(p) for index, p in plugins.items() if p}

    @classmethod
    def wrap(cls, builder: DocumentBuilder, config: FlussoConfig) -> DocumentBuilder:
        """`builder` itself when no index has plugins (the raw-JSON path stays as it is)."""
        plugins = {name: [(spec, load(spec)) for spec in index.plugins] for name, index in config.indexes.items()}
        return cls(builder, plugins) if any(plugins.values()) else builder

    def mapping(self, index: str) -> dict:
        return self._builder.mapping(index)

    def definition_hash(self, index: str) -> str:
        return self._builder.definition_hash(index)

    def close(self) -> None:
        self._builder.close()

    def resolve(self, changes: Sequence[Change]) -> dict[str, set[DocId]]:
        return self._builder.resolve(changes)

    def __getattr__(self, name: str) -> Any:  # what a builder offers beyond the protocol
        return getattr(self._builder, name)

    def build(self, index: str, ids: Collection[DocId], after: Collection[int] = ()) -> Built:
        return self._apply(index, self._builder.build(index, ids, after))

    # a builder whose forks share one snapshot (a parallel backfill, `backfill.py`): the forks and
    # their builds go through the plugins too
    def fork(self) -> PluginBuilder:
        return PluginBuilder(self._builder.fork(), self._plugins)  # type: ignore[attr-defined]

    def build_in(self, snapshot: Any, index: str, ids: Collection[DocId]) -> Built:
        return self._apply(index, self._builder.build_in(snapshot, index, ids))  # type: ignore[attr-defined]

    def _apply(self, index: str, built: Built) -> Built:
        plugins = self._plugins.get(index)
        if not plugins or not built.docs:
            return built
        present = [(i, json.loads(d) if isinstance(d, str) else d) for i, d in built.docs.items() if d is not None]
        docs: dict[DocId, Any] = {i: None for i, d in built.docs.items() if d is None}
        keys, values = [i for i, _ in present], [d for _, d in present]
        for spec, plugin in plugins:
            values = _run(spec, plugin, index, keys, values)
        for doc_id, built_doc, doc in zip(keys, (d for _, d in present), values, strict=True):
            if doc is not None and FINGERPRINT in built_doc:
                doc = {FINGERPRINT: built_doc[FINGERPRINT], **{k: v for k, v in doc.items() if k != FINGERPRINT}}
            docs[doc_id] = doc
        return Built(docs=docs, position=built.position, queries=built.queries, routing=built.routing)

def _run(spec: str, plugin: Any, index: str, keys: list[DocId], values: list[Any]) -> list[Any]:
    """One plugin over one chunk: `transform_batch` once, or `transform` per document still present."""
    batch = getattr(plugin, "transform_batch", None)
    try:
        if callable(batch):
            live = [(k, v) for k, v in zip(keys, values, strict=True) if v is not None]
            out = list(batch([dict(v) for _, v in live]))
            if len(out) != len(live):
                raise PluginError(f'plugin "{spec}" returned {len(out)} documents for {len(live)} (index {index}): '
                                  "transform_batch must return one document, or None, per document")
            done = dict(zip((k for k, _ in live), out, strict=True))
            return [done.get(k) if v is not None else None for k, v in zip(keys, values, strict=True)]
        result = []
        for doc_id, doc in zip(keys, values, strict=True):
            current = doc_id
            result.append(None if doc is None else plugin.transform(doc))
        return result
    except PluginError:
        raise
    except Exception as err:  # noqa: BLE001 - the plugin's own failure, reported as flusso's stop
        where = f" on document {current}" if not callable(batch) else ""
        raise PluginError(f'plugin "{spec}" raised {type(err).__name__}: {err} (index {index}{where}); nothing of '
                          "the batch was acknowledged: fix the plugin, then start again") from err
