"""`flusso import-pgsync`: a PGSync `schema.json` into a commented `flusso.yaml`, in one command.

`schema.py` reads PGSync's format with PGSync's rules; `infer.py` asks the catalog what PGSync
infers at run time (the joins from foreign keys, their direction, key columns); `convert.py` makes
each PGSync document an index; `writer.py` writes the file with its comments, and the `source:` and
`sink:` blocks from PGSync's own environment variables (so secrets stay in the environment). What
could not be converted is a comment in place and a line of the `Imported.report`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg

from ..error import ConfigError, Problem
from .convert import Converter, Report
from .infer import read_database
from .schema import PgDocument, PgNode, read_schema
from .writer import Entry, render, sink_block, slot_name, source_block

__all__ = ["Imported", "Report", "import_pgsync", "pgsync_dsn"]


@dataclass
class Imported:
    text: str  # the flusso.yaml
    report: Report
    indexes: list[str]


def pgsync_dsn(database: str, env: Mapping[str, str]) -> str:
    """The DSN PGSync would connect with (pgsync/urls.py `get_database_url`), to read the catalog."""
    if env.get("PG_URL"):
        from urllib.parse import quote, urlparse, urlunparse

        parsed = urlparse(env["PG_URL"].strip())
        return urlunparse(parsed._replace(path="/" + quote(database)))
    if not env.get("PG_USER"):
        raise ConfigError([Problem("PG_USER", "is not set: export PGSync's PG_USER (and PG_PASSWORD, PG_HOST, "
                                              "PG_PORT), or pass --dsn")], "environment")
    params = {"host": env.get("PG_HOST") or "localhost", "port": env.get("PG_PORT") or "5432",
              "user": env["PG_USER"], "dbname": database}
    if env.get("PG_PASSWORD"):
        params["password"] = env["PG_PASSWORD"]
    if env.get("PG_SSLMODE"):
        params["sslmode"] = env["PG_SSLMODE"]
    return psycopg.conninfo.make_conninfo(**params)


def _tables(node: PgNode) -> list[str]:
    out = [node.qualified, *(b if "." in b else f"{node.schema}.{b}" for b in node.base_tables)]
    if (through := node.through()) is not None:
        out.append(through)
    for child in node.children:
        out += _tables(child)
    return out


def import_pgsync(schema: str | Path, env: Mapping[str, str], dsn: str | None = None) -> Imported:
    """Convert the PGSync schema at `schema`, reading the catalog at `dsn` (default: PGSync's own, from
    `env`). A `ConfigError` when the schema cannot be read or the database reached."""
    docs = read_schema(schema, env)
    report = Report()
    database = docs[0].database
    same = [d for d in docs if d.database == database]
    for d in docs:
        if d.database != database:
            report.not_converted.append(f"{d.path}: index {d.index} reads database {d.database}: one flusso.yaml "
                                        f"reads one database ({database}): import it from a schema of its own")
    target = dsn or pgsync_dsn(database, env)
    entries: list[Entry] = []
    names: list[str] = []
    try:
        with psycopg.connect(target, connect_timeout=10, autocommit=True) as conn:
            db = read_database(conn, [t for d in same for t in _tables(d.nodes)])
            db.conn = conn
            converter = Converter(db, report)
            for d in same:
                entry = converter.index(d)
                if entry.key in names:
                    report.not_converted.append(f"{d.path}: a second index named {entry.key}: skipped")
                    continue
                names.append(str(entry.key))
                entries.append(entry)
    except psycopg.OperationalError as err:
        from ..refusals import connect_failure

        raise ConfigError([Problem("database", connect_failure(target, err))], str(schema)) from None
    extra: list[str] = []
    top = [
        source_block(database, slot_name(names[0] if names else database), env, extra),
        sink_block(env, extra),
        Entry("indexes", entries),
    ]
    report.not_converted += extra
    return Imported(_header(schema, docs, report) + "\n".join(render(top)) + "\n", report, names)


def _header(schema: str | Path, docs: list[PgDocument], report: Report) -> str:
    lines = [
        f"# Converted from PGSync's {Path(schema).name} by `flusso import-pgsync`.",
        "# Secrets stay in the environment: PGSync's PG_* and ELASTICSEARCH_* variables, expanded at load.",
        "# Check it against the database with `flusso validate -c <this file>`.",
    ]
    if report.not_converted:
        lines.append(f"# {len(report.not_converted)} thing(s) not converted: see the `not converted` comments.")
    return "\n".join(lines) + "\n"
