"""Writing the converted config: a small YAML emitter that keeps comments (PyYAML drops them), and the
`source:` and `sink:` blocks, whose secrets come from PGSync's own environment variables.

Values are dumped by PyYAML one at a time (so quoting is PyYAML's); only the block structure and the
comments are written here. The result is read back by flusso's loader in the tests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml


@dataclass
class Entry:
    """One `key: value` of the file; a list of entries as value is a block below it."""

    key: str | None  # None: only the comment lines above
    value: Any
    comment: str = ""  # at the end of the line
    above: list[str] = field(default_factory=list)  # comment lines above it
    disabled: bool = False  # written, but commented out (what cannot run as it is)


def flow(value: Any) -> str:
    """A value on one line, as PyYAML quotes it."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, allow_unicode=True, sort_keys=False)
    if text.endswith("\n...\n"):
        text = text[: -len("\n...\n")]
    return text.strip()


def _key(key: str) -> str:
    """`on` stays bare: flusso reads YAML 1.2 booleans (true/false only), PyYAML would quote it."""
    return key if key == "on" else flow(key)


def render(entries: list[Entry], indent: int = 0, width: int = 110) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for e in entries:
        lines += [f"{pad}# {line}" if line else f"{pad}#" for line in e.above]
        if e.key is None:  # comment lines only
            continue
        own: list[str]
        tail = f"  # {e.comment}" if e.comment else ""
        value = e.value
        block = isinstance(value, list) and value and all(isinstance(v, Entry) for v in value)
        line = "" if block else f"{pad}{_key(e.key)}: {flow(value)}{tail}"
        if isinstance(value, dict) and value and len(line) > width:  # a long mapping: one key a line
            value, block = [Entry(str(k), v) for k, v in value.items()], True
        own = [f"{pad}{_key(e.key)}:{tail}", *render(value, indent + 2, width)] if block else [line]
        if e.disabled:
            own = [f"{pad}# {line[len(pad):]}" for line in own]
        lines += own
    return lines


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def slot_name(index: str) -> str:
    """A slot and publication name for the index ([a-z0-9_], at most 63)."""
    return ("flusso_" + re.sub(r"[^a-z0-9_]", "_", index.lower()))[:63]


def source_block(database: str, slot: str, env: Mapping[str, str], report: list[str]) -> Entry:
    """PGSync connects with PG_URL (whose database it replaces with the schema's), else PG_HOST, PG_PORT,
    PG_USER, PG_PASSWORD and PG_SSLMODE: the same variables, expanded by flusso when it loads the file."""
    above = ["PostgreSQL, from PGSync's variables (PG_HOST, PG_PORT, PG_USER, PG_PASSWORD, PG_SSLMODE)."]
    if env.get("PG_URL"):
        dsn = "${PG_URL}"
        above = ["PostgreSQL from PGSync's PG_URL (set when this was imported). PGSync replaces its database",
                 f"with the schema's ({database}); flusso uses PG_URL as it is: make it name {database}."]
    else:
        dsn = (f"host=${{PG_HOST:-localhost}} port=${{PG_PORT:-5432}} user=${{PG_USER}} "
               f"password='${{PG_PASSWORD:-}}' dbname={_conninfo_value(database)} sslmode=${{PG_SSLMODE:-prefer}}")
        above.append("A password holding ' or \\ needs another form: write the DSN here as a libpq URI.")
    if env.get("PG_SSLROOTCERT"):
        report.append("source: PG_SSLROOTCERT is set: add sslrootcert=... to source.dsn by hand")
    if env.get("PG_URL_RO") or env.get("PG_HOST_RO"):
        report.append("source: PGSync's read-only connection (PG_*_RO) has no counterpart: flusso reads "
                      "through source.dsn")
    return Entry("source", [
        Entry("dsn", dsn),
        Entry("capture", "wal", "PGSync's WAL mode; `polling` (triggers) if logical replication is not allowed"),
        Entry("slot", slot),
        Entry("publication", slot),
    ], above=above)


def _conninfo_value(value: str) -> str:
    return value if re.fullmatch(r"[A-Za-z0-9_.-]+", value) else "'" + value.replace("\\", "\\\\").replace(
        "'", "\\'") + "'"


def sink_block(env: Mapping[str, str], report: list[str]) -> Entry:
    """OpenSearch from PGSync's ELASTICSEARCH_* variables (OpenSearch reads the same ones in PGSync)."""
    if env.get("ELASTICSEARCH_URL"):
        hosts = ["${ELASTICSEARCH_URL}"]
    else:
        hosts = ["${ELASTICSEARCH_SCHEME:-http}://${ELASTICSEARCH_HOST:-localhost}:${ELASTICSEARCH_PORT:-9200}"]
    body = [Entry("type", "opensearch"), Entry("hosts", hosts)]
    aws = _truthy(env.get("ELASTICSEARCH_AWS_HOSTED")) or _truthy(env.get("OPENSEARCH_AWS_HOSTED"))
    if aws:
        body += [Entry("auth", "aws_sigv4"), Entry("aws_region", "${ELASTICSEARCH_AWS_REGION}"),
                 Entry("aws_service", "aoss" if _truthy(env.get("OPENSEARCH_AWS_SERVERLESS")) else "es")]
    else:
        body += [Entry("username", "${ELASTICSEARCH_USER:-}"), Entry("password", "${ELASTICSEARCH_PASSWORD:-}")]
    verify = env.get("ELASTICSEARCH_VERIFY_CERTS")
    body.append(Entry("verify_certs", verify is None or _truthy(verify),
                      "from ELASTICSEARCH_VERIFY_CERTS when imported" if verify is not None else ""))
    body += [Entry("ca_certs", "${ELASTICSEARCH_CA_CERTS:-}"),
             Entry("client_cert", "${ELASTICSEARCH_CLIENT_CERT:-}"),
             Entry("client_key", "${ELASTICSEARCH_CLIENT_KEY:-}")]
    for name in ("ELASTICSEARCH_API_KEY", "ELASTICSEARCH_API_KEY_ID", "ELASTICSEARCH_BEARER_AUTH",
                 "ELASTICSEARCH_BASIC_AUTH", "ELASTICSEARCH_HTTP_AUTH", "ELASTICSEARCH_CLOUD_ID"):
        if env.get(name):
            report.append(f"sink: {name} is set: flusso signs in with username/password, a client certificate "
                          "or aws_sigv4: set one of those in sink")
    if _truthy(env.get("ELASTICSEARCH")) and not _truthy(env.get("OPENSEARCH")):
        report.append("sink: PGSync was set for Elasticsearch (ELASTICSEARCH=true): flusso writes to OpenSearch")
    return Entry("sink", body, above=["OpenSearch, from PGSync's variables (ELASTICSEARCH_URL, or ELASTICSEARCH_"
                                      "SCHEME/HOST/PORT; ELASTICSEARCH_USER, ELASTICSEARCH_PASSWORD)."])
