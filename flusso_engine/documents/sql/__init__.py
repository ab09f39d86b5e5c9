"""The SQL document builder (`documents.type: sql`, the only one so far): resolve and build with
statements generated from each index's plan."""

from __future__ import annotations

from .builder import SqlDocumentBuilder
from .statements import build_statement

__all__ = ["SqlDocumentBuilder", "build_statement", "create"]


def create(context) -> SqlDocumentBuilder:  # noqa: ANN001 - registry.Context (imported lazily by the registry)
    """The registry's factory: one builder over the source, raw JSON documents for the sink."""
    return SqlDocumentBuilder(context.config, context.catalog, context.dsn, raw_json=True, plan=context.plan)
