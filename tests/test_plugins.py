"""`plugins:` on an index: documents transformed, dropped, and a failing plugin stopping the acks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flusso_engine.config import load_config
from flusso_engine.documents import Built
from flusso_engine.documents.mapping import FINGERPRINT
from flusso_engine.documents.plugins import PluginBuilder, PluginError, load

from .e2e import ROOT, Flusso, flusso, generate, index_docs, sql, write_config

EXAMPLES = ROOT / "examples" / "plugins"


class Built2:
    """A builder that returns fixed documents (the wrapper's logic is pure: no database needed)."""

    def __init__(self, docs: dict) -> None:
        self.docs = docs

    def build(self, index, ids, after=()):  # noqa: ANN001, ANN201
        return Built(docs=dict(self.docs), position=42, queries=1)


def test_plugins_run_in_order_drop_documents_and_keep_the_fingerprint(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    docs = {"1": f'{{"{FINGERPRINT}": "h1", "title": "a", "reviews": [1, 2]}}',
            "2": '{"title": "Draft two"}', "3": None}
    wrapped = PluginBuilder(Built2(docs), {"books": [("s", load("bookstore_plugins:ShoutTitles")),
                                                     ("t", load("bookstore_plugins:TagCount"))]})
    built = wrapped.build("books", ["1", "2", "3"])
    assert built.position == 42
    assert built.docs == {"1": {FINGERPRINT: "h1", "title": "A", "reviews": [1, 2], "review_count": 2},
                          "2": None, "3": None}
    assert PluginBuilder(Built2(docs), {}).build("books", ["1"]).docs["1"] == docs["1"]  # no plugin: raw text


def test_a_plugin_that_cannot_load_says_why() -> None:
    with pytest.raises(PluginError, match="cannot import no_such_module"):
        load("no_such_module:Thing")
    with pytest.raises(PluginError, match="no entry point of that name in group flusso.plugins"):
        load("not_installed_anywhere")
    with pytest.raises(PluginError, match="has neither transform"):
        load("collections:OrderedDict")
    with pytest.raises(PluginError, match="is made without arguments"):
        load("json:JSONDecodeError")


@pytest.fixture
def store(bookstore_db: str, index_prefix: str, tmp_path: Path) -> tuple[str, Path]:
    generate(bookstore_db, books=40)
    sql(bookstore_db, "UPDATE book SET title = 'Draft of a book' WHERE id = 3")
    config = write_config(tmp_path / "flusso.yaml", bookstore_db, index_prefix,
                          batch={"max_changes": 100, "max_delay_ms": 100})
    text = config.read_text()
    plugins = "    plugins: [bookstore_plugins:ShoutTitles, bookstore_plugins:TagCount]\n"
    config.write_text(text.replace("    key:\n", plugins + "    key:\n", 1))
    assert load_config(config).indexes[next(iter(load_config(config).indexes))].plugins
    return bookstore_db, config


def test_plugins_shape_every_document_live_and_in_the_backfill(store, opensearch) -> None:
    dsn, config = store
    index = next(iter(load_config(config).indexes))
    run = Flusso(config, env={"PYTHONPATH": str(EXAMPLES)})
    try:
        run.wait_for("live capture started")
        docs = index_docs(opensearch, index)
        assert len(docs) == 39 and "3" not in docs  # the draft was dropped
        assert docs["1"]["title"].isupper() and docs["1"]["review_count"] == len(docs["1"].get("reviews") or [])
        sql(dsn, "UPDATE book SET title = 'draft again' WHERE id = 1", "UPDATE book SET title = 'ready' WHERE id = 3")
        deadline = time.monotonic() + 30
        while True:
            docs = index_docs(opensearch, index)
            if "1" not in docs and docs.get("3", {}).get("title") == "READY":
                break
            assert time.monotonic() < deadline, docs.get("3")
            time.sleep(0.3)
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.output()[-3000:]


def test_validate_names_a_plugin_that_does_not_load(store) -> None:
    _, config = store
    res = flusso("validate", config=config)  # PYTHONPATH lacks the examples: the plugins cannot be imported
    assert res.returncode == 1
    assert "plugins[0]" in res.stderr and "cannot import bookstore_plugins" in res.stderr
    assert "put its directory on PYTHONPATH" in res.stderr


def test_a_plugin_that_raises_stops_the_engine_unacknowledged(store, tmp_path: Path, opensearch) -> None:
    dsn, config = store
    (tmp_path / "broken_plugin.py").write_text(
        "class Broken:\n    def transform(self, doc):\n"
        "        if doc.get('title') == 'boom':\n            raise ValueError('cannot shout at boom')\n"
        "        return doc\n")
    config.write_text(config.read_text().replace("[bookstore_plugins:ShoutTitles, bookstore_plugins:TagCount]",
                                                 "[broken_plugin:Broken]"))
    run = Flusso(config, env={"PYTHONPATH": str(tmp_path)})
    run.wait_for("live capture started")
    sql(dsn, "UPDATE book SET title = 'boom' WHERE id = 5")
    assert run.wait(60) == 2, run.output()[-3000:]
    out = run.output()
    assert 'plugin "broken_plugin:Broken" raised ValueError: cannot shout at boom' in out
    assert "on document 5" in out and "nothing of the batch was acknowledged" in out
