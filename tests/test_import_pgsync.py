"""`flusso import-pgsync` on PGSync schemas: the bench's bookstore and two of PGSync's own examples
(airbnb, social). Each converted file validates against a database holding the schema's tables,
and the documents flusso builds from it have PGSync's structure for the same rows: PGSync 7.3.0's
own documents, recorded in tests/data/pgsync/<case>/, and made again by PGSync when it is installed
(`.flusso/pgsync-venv`, as bench/pgsync_control.py installs it)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from flusso_engine.catalog import read_catalog
from flusso_engine.cli import main
from flusso_engine.config import load_config, split_table
from flusso_engine.documents.sql import SqlDocumentBuilder
from flusso_engine.pgsync.transforms import fields_syntax

from .conftest import BOOKSTORE, OPENSEARCH_URL
from .pgsync_docs import DATA, ROOT, normalize, pgsync_bin, recorded, run_pgsync

sys.path.insert(0, str(BOOKSTORE))
from generate import generate  # noqa: E402

# case: (schema.json, [SQL files], differences documented for it: arrays PGSync makes one object of,
# scalar relations (objects of one field until flusso has relation variants))
CASES: dict[str, tuple[Path, list[Path], frozenset[str], frozenset[str]]] = {
    "bookstore": (ROOT / "bench" / "pgsync" / "schema.json", [BOOKSTORE / "schema.sql"], frozenset(), frozenset()),
    "airbnb": (DATA / "airbnb" / "schema.json", [DATA / "airbnb" / "schema.sql", DATA / "airbnb" / "data.sql"],
               frozenset({"booking"}), frozenset({"booking.place.host"})),
    "social": (DATA / "social" / "schema.json", [DATA / "social" / "schema.sql", DATA / "social" / "data.sql"],
               frozenset(), frozenset({"tags"})),
    "transforms": (DATA / "transforms" / "schema.json",
                   [DATA / "transforms" / "schema.sql", DATA / "transforms" / "data.sql"], frozenset(),
                   frozenset({"languages"})),
}
NEEDS_FIELDS_SYNTAX = {"transforms"}  # JSON paths and transforms: objects of one field are not enough


def _env(dsn: str, monkeypatch: pytest.MonkeyPatch, extra: dict[str, str]) -> dict[str, str]:
    """PGSync's variables for the test database and OpenSearch, set for flusso (and PGSync)."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    env = {"PG_USER": str(info.get("user", "postgres")), "PG_PASSWORD": str(info.get("password", "")),
           "PG_HOST": str(info.get("host", "127.0.0.1")), "PG_PORT": str(info.get("port", 5432)),
           "ELASTICSEARCH_URL": OPENSEARCH_URL, **extra}
    monkeypatch.delenv("PG_URL", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def _prepare(case: str, dsn: str, tmp_path: Path, index: str) -> tuple[Path, dict[str, str]]:
    """The case's tables and rows in `dsn`, and its schema.json naming that database and `index`."""
    schema, sql_files, _, _ = CASES[case]
    database = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for f in sql_files:
            conn.execute(f.read_text())
    if case == "bookstore":
        with psycopg.connect(dsn) as conn:
            generate(conn, 12, seed=5)
        return schema, {"DATABASE": database, "INDEX": index}  # it names them ${DATABASE}, ${INDEX}
    docs = json.loads(schema.read_text())
    docs[0].update(database=database, index=index)
    out = tmp_path / "schema.json"
    out.write_text(json.dumps(docs))
    return out, {}


def _documents(config_path: Path, index: str) -> dict[str, Any]:
    config = load_config(config_path)
    spec = config.indexes[index]
    dsn = config.source.dsn.get_secret_value()
    with psycopg.connect(dsn) as conn:
        catalog = read_catalog(conn, config.tables())
        ids = [str(r[0]) for r in conn.execute(
            sql.SQL("SELECT {} FROM {}").format(sql.Identifier(spec.key[0]), sql.Identifier(*split_table(spec.table))))]
    with SqlDocumentBuilder(config, catalog, dsn) as builder:
        docs = builder.build(index, ids).docs
    return json.loads(json.dumps(docs, default=str))


@pytest.mark.parametrize("case", list(CASES))
def test_import_validates_and_builds_pgsync_documents(case, fresh_db, tmp_path, monkeypatch, capsys, opensearch,
                                                      index_prefix):
    index = f"{index_prefix}{case}"
    schema, extra = _prepare(case, fresh_db, tmp_path, index)
    env = _env(fresh_db, monkeypatch, extra)
    out = tmp_path / "flusso.yaml"
    assert main(["import-pgsync", str(schema), "-o", str(out)]) == 0
    report = capsys.readouterr().err
    assert f"converted 1 index(es) ({index}) into {out}" in report
    text = out.read_text()
    assert "${PG_PASSWORD" in text and env["PG_PASSWORD"] not in text.replace("${PG_PASSWORD", "")
    assert main(["validate", "-c", str(out)]) == 0, capsys.readouterr()

    _, _, as_objects, scalars = CASES[case]
    compare = fields_syntax() or case not in NEEDS_FIELDS_SYNTAX
    if fields_syntax():
        scalars = frozenset()
        assert "not converted yet" not in text
    else:
        assert ("not converted yet: variant scalar" in text) == bool(scalars)
    live = None
    if pgsync_bin() is not None:  # PGSync itself, on the same rows
        run_pgsync(schema, env, tmp_path)
        opensearch.indices.refresh(index=index)
        hits = opensearch.search(index=index, body={"size": 1000, "query": {"match_all": {}}})["hits"]["hits"]
        live = {h["_id"]: h["_source"] for h in hits}
        opensearch.indices.delete(index=index)  # flusso's index of the same name comes next
        if os.environ.get("FLUSSO_RECORD_PGSYNC"):
            (DATA / case / "pgsync_documents.json").write_text(
                json.dumps({k: live[k] for k in sorted(live, key=int)}, indent=1, sort_keys=True) + "\n")
    expected = {k: normalize(v) for k, v in recorded(case).items()}
    if live is not None:
        assert {k: normalize(v) for k, v in live.items()} == expected
    if not compare:
        pytest.skip("this flusso has no path fields and transforms: the file validates; documents not compared")
    built = _documents(out, index)
    flusso = {k: normalize(v, as_objects, scalars) for k, v in built.items()}
    assert flusso == expected

    # and OpenSearch takes them with the mapping flusso derives from the converted file
    assert main(["backfill", "-c", str(out)]) == 0
    opensearch.indices.refresh(index=index)
    assert opensearch.count(index=index)["count"] == len(built)
    assert not opensearch.indices.exists(index=f"{index}-deadletter") or opensearch.count(
        index=f"{index}-deadletter")["count"] == 0


def test_report_lists_what_is_not_converted(fresh_db, tmp_path, monkeypatch, capsys):
    """PGSync's plugins, a view as root's child, a missing foreign key and transforms flusso does not
    have (yet) are reported, and the file says where; routing becomes the index's `routing`."""
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("""
            CREATE TABLE publisher (id int PRIMARY KEY, name text, code text);
            CREATE TABLE book (id int PRIMARY KEY, isbn text NOT NULL, title text,
                               publisher_id int REFERENCES publisher, doc jsonb);
            CREATE TABLE loose (id int PRIMARY KEY, note text);
            CREATE TABLE review (id int PRIMARY KEY, book_ref int, body text);
            CREATE VIEW book_view AS SELECT id, title FROM book;
        """)
    database = psycopg.conninfo.conninfo_to_dict(fresh_db)["dbname"]
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps([{
        "database": database, "index": "books", "routing": "isbn", "plugins": ["Groot"],
        "setting": {"number_of_shards": 1},
        "nodes": {
            "table": "book", "columns": ["id", "isbn", "title", "doc->color", "nope"],
            "transform": {"rename": {"id": "book_id"}, "replace": {"isbn": {"-": ""}},
                          "concat": {"columns": ["isbn", "title"], "destination": "label", "delimiter": " "},
                          "move": {"column": "id", "destination": "$root.x"},
                          "mapping": {"book_id": {"type": "long"}, "gone": {"type": "keyword"}}},
            "children": [
                {"table": "publisher", "columns": ["name", "code"],
                 "relationship": {"variant": "object", "type": "one_to_one"}},
                {"table": "loose", "columns": ["note"], "relationship": {"type": "one_to_many"}},
                {"table": "review", "label": "reviews", "columns": ["body"],  # no constraint: PGSync's foreign_key
                 "relationship": {"type": "one_to_many",
                                  "foreign_key": {"parent": ["id"], "child": ["book_ref"]}}},
                {"table": "book_view", "columns": ["title"], "base_tables": ["book"],
                 "relationship": {"type": "one_to_one", "foreign_key": {"parent": ["id"], "child": ["id"]}}},
            ],
        },
    }, {"database": "elsewhere", "index": "other", "nodes": {"table": "t"}},
        {"database": database, "index": "Books.Copy", "nodes": {"table": "loose"}}]))
    _env(fresh_db, monkeypatch, {})
    out = tmp_path / "flusso.yaml"
    assert main(["import-pgsync", str(schema), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    text = out.read_text()
    assert "converted 2 index(es) (books, books_copy)" in err
    assert "routing" not in err and "routing: isbn" in text
    for line in ("index other reads database elsewhere", "named 'books_copy'",
                 "plugins: Groot", "no foreign key between public.book and public.loose",
                 "'nope' is not a column of public.book", "gone: not a field of this node"):
        assert line in err, line
    assert "depends_on: [{table: public.book, key: {id: id}}]" in text  # PGSync's base_tables
    assert "publisher_id: id" in text and "book_id: id" in text and "type: many_to_one" in text
    assert "on: {id: book_ref}" in text and "joined by the schema's foreign_key" in text
    if fields_syntax():
        assert "color: {path: doc.color}" in text and "destination: label" in text
    else:
        assert "# not converted yet: 'doc->color'" in text and "not converted yet: transform concat" in text
    assert main(["validate", "-c", str(out)]) == 0, capsys.readouterr()


def test_unreadable_schema_and_database_are_config_errors(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "schema.json"
    bad.write_text('[{"index": "x", "nodes": {"table": "t", "colums": []}}')
    assert main(["import-pgsync", str(bad)]) == 1
    assert "not valid JSON at line 1" in capsys.readouterr().err
    bad.write_text('[{"index": "x", "nodes": {"table": "t", "colums": [], "relationship": {"type": "many"}}}]')
    assert main(["import-pgsync", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "[0].nodes.colums: PGSync has no node attribute 'colums'" in err
    monkeypatch.delenv("PG_URL", raising=False)
    monkeypatch.delenv("PG_USER", raising=False)
    bad.write_text('[{"index": "x", "nodes": {"table": "t"}}]')
    assert main(["import-pgsync", str(bad)]) == 1
    assert "PG_USER: is not set" in capsys.readouterr().err


def test_secrets_come_from_pgsync_variables(tmp_path):
    """The source and sink blocks name PGSync's variables; flusso expands them at load, as PGSync reads them."""
    from flusso_engine.config import load_config
    from flusso_engine.pgsync.writer import Entry, render, sink_block, source_block

    def loaded(import_env: dict[str, str], run_env: dict[str, str]):
        report: list[str] = []
        indexes = Entry("indexes", [Entry("books", [Entry("table", "public.book"), Entry("key", ["id"]),
                                                    Entry("fields", {"title": "title"})])])
        text = "\n".join(render([source_block("shop", "flusso_books", import_env, report),
                                 sink_block(import_env, report), indexes]))
        path = tmp_path / "flusso.yaml"
        path.write_text(text)
        return text, load_config(path, env=run_env), report

    run = {"PG_USER": "app", "PG_PASSWORD": "s3cret word", "PG_HOST": "db.example",
           "ELASTICSEARCH_HOST": "search.example", "ELASTICSEARCH_USER": "u", "ELASTICSEARCH_PASSWORD": "p"}
    text, config, report = loaded({}, run)
    assert "s3cret" not in text and report == []
    info = psycopg.conninfo.conninfo_to_dict(config.source.dsn.get_secret_value())
    assert (info["host"], info["port"], info["user"], info["password"], info["dbname"]) == (
        "db.example", "5432", "app", "s3cret word", "shop")
    assert config.sink.hosts == ["http://search.example:9200"] and config.sink.username == "u"

    _, config, _ = loaded({"ELASTICSEARCH_URL": "x"}, {**run, "ELASTICSEARCH_URL": "https://os.example:9243"})
    assert config.sink.hosts == ["https://os.example:9243"]
    _, config, _ = loaded({"PG_URL": "x"}, {"PG_URL": "postgresql://a@h/shop"})
    assert config.source.dsn.get_secret_value() == "postgresql://a@h/shop"
    _, config, report = loaded({"OPENSEARCH_AWS_HOSTED": "true", "ELASTICSEARCH_API_KEY": "k"},
                               {"ELASTICSEARCH_AWS_REGION": "eu-west-1", "PG_USER": "app"})
    assert (config.sink.auth, config.sink.aws_region, config.sink.username) == ("aws_sigv4", "eu-west-1", None)
    assert any("ELASTICSEARCH_API_KEY is set" in r for r in report)
