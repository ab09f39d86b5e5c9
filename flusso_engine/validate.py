"""`flusso validate`: the config against the live database, every problem at once (DESIGN §5).

`config/` has already checked what the file alone can tell; the rest is asked of PostgreSQL by
the parts it concerns, each beside the code it checks: the documents' tables, columns, keys, joins
and read access (`documents/checks.py`), and the capture backend's server settings, role, slot,
publication and replica identity (`capture/wal/checks.py`). This module runs both and keeps the
report's order: the documents' schema, then the server, then read access.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from .catalog import Catalog, read_catalog
from .config import FlussoConfig
from .documents.access import access_problems, read_access
from .documents.checks import schema_problems
from .documents.field_checks import expression_problems, path_problems
from .documents.plugins import problems as plugin_problems
from .documents.view_checks import view_notes, view_problems
from .error import ConfigError, Problem


@dataclass
class ValidationReport:
    """What `validate` found: problems block a run (exit 1); notes say what `run` will set up."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_for_problems(self, source: str = "flusso.yaml") -> None:
        """Raise `ConfigError` listing every problem, if there is any."""
        if self.problems:
            raise ConfigError(self.problems, source)


def validate(config: FlussoConfig, conn: psycopg.Connection, catalog: Catalog | None = None) -> ValidationReport:
    """Check `config` against the database behind `conn` (read-only queries; commits nothing), and
    the `catalog` read from it if the caller has it (the engine reads it once, for both)."""
    catalog = catalog if catalog is not None else read_catalog(conn, config.tables())
    access = read_access(conn, catalog)
    report = ValidationReport()
    report.problems += schema_problems(config, catalog, access.relations)
    report.problems += view_problems(config, catalog, access.relations)
    report.notes += view_notes(config)
    report.problems += path_problems(config, catalog)
    report.problems += expression_problems(config, conn, catalog)
    found = capture_checks(config.source.capture)(config, conn, catalog)
    report.problems += found.problems
    report.notes += found.notes
    report.problems += access_problems(config, access)
    report.problems += plugin_problems(config)
    return report


def pipeline_problems(config: FlussoConfig, sink: Any) -> list[Problem]:
    """Each `pipeline:` given by name only that the sink's cluster lacks (`sinks/opensearch/pipelines.py`);
    nothing for a sink without ingest pipelines (stdout)."""
    missing = getattr(sink, "missing_pipelines", None)
    named = {name: index.pipeline for name, index in config.indexes.items() if isinstance(index.pipeline, str)}
    if missing is None or not named:
        return []
    absent = set(missing(named.values()))
    return [Problem(f"indexes.{name}.pipeline",
                    f'ingest pipeline "{pipeline}" does not exist in OpenSearch: create it (PUT _ingest/pipeline/'
                    f"{pipeline}), or give its body here for flusso to create: pipeline: {{name: {pipeline}, "
                    "body: {processors: [...]}}")
            for name, pipeline in named.items() if pipeline in absent]


def put_pipelines(config: FlussoConfig, sink: Any) -> None:
    """Put every pipeline given with its body, then refuse to go on if one named only is missing:
    before any index is created, since each write would go through it."""
    put = getattr(sink, "put_pipeline", None)
    if put is None:
        return
    for index in config.indexes.values():
        if index.pipeline is not None and not isinstance(index.pipeline, str):
            put(index.pipeline.name, index.pipeline.body)
    problems = pipeline_problems(config, sink)
    if problems:
        raise ConfigError(problems)


def capture_checks(backend: str) -> Callable[[FlussoConfig, psycopg.Connection, Catalog], Any]:
    """The `checks` the capture backend named by `source.capture` offers (`capture/<backend>/checks.py`),
    found by name as the registry finds backends: nothing outside a backend's folder imports it."""
    name = f"{__package__}.capture.{backend}.checks"
    try:
        return importlib.import_module(name).checks
    except ModuleNotFoundError as err:
        if err.name not in (name, f"{__package__}.capture.{backend}"):
            raise
        return lambda config, conn, catalog: ValidationReport()  # a backend with nothing to check
