"""`routing:` and `pipeline:` on an index: how OpenSearch receives its documents.

`routing` names a root column whose value routes each document to its shard (every write and
delete carries it: `documents/routed.py`); `pipeline` is the index's default ingest pipeline, an
existing one's name or `{name, body}`, which flusso puts (`PUT _ingest/pipeline/<name>`) before it
creates the index.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Discriminator, Tag, field_validator

from .base import Loc, Strict

_PIPELINE_NAME = re.compile(r"^[^\s/\\*?\"<>|,#]+$")


def _pipeline_name(name: str) -> str:
    if not _PIPELINE_NAME.match(name) or name.startswith(("_", "-", "+")):
        raise ValueError(f'"{name}" is not an ingest pipeline name (no spaces, /, \\, *, ?, ", <, >, |, , or #, '
                         'not starting with _, - or +): write e.g. pipeline: lowercase_titles')
    return name


PipelineName = Annotated[str, AfterValidator(_pipeline_name)]


class PipelineConfig(Strict):
    """An ingest pipeline flusso creates (`PUT _ingest/pipeline/<name>` with `body`, before the index)."""

    name: PipelineName
    body: dict[str, Any]

    @field_validator("body")
    @classmethod
    def _processors(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(v.get("processors"), list):
            raise ValueError("has no processors list: write e.g. body: {processors: [{lowercase: {field: title}}]}")
        return v



def _pipeline_kind(v: Any) -> str | None:
    if isinstance(v, str):
        return "field:pipeline-name"  # the `field:` tags are left out of messages' paths (messages.py)
    if isinstance(v, dict | PipelineConfig):
        return "field:pipeline-body"
    return None


Pipeline = Annotated[
    Annotated[PipelineName, Tag("field:pipeline-name")] | Annotated[PipelineConfig, Tag("field:pipeline-body")],
    Discriminator(_pipeline_kind, custom_error_type="pipeline_kind", custom_error_message=(
        "a pipeline is the name of an existing ingest pipeline, or {name: ..., body: {processors: [...]}} "
        "for flusso to create: write one of them")),
]


def delivery_problems(routing: str | None, pipeline: str | PipelineConfig | None, settings: dict[str, Any],
                      view: bool) -> list[tuple[Loc, str]]:
    """A view root's old values are its base tables' (no old routing value to delete under); the
    default pipeline is set in one place."""
    problems: list[tuple[Loc, str]] = []
    if routing is not None and not routing.strip():
        problems.append((("routing",), "is empty: name a column of the root table, e.g. routing: tenant_id"))
    if routing is not None and view:
        problems.append((("routing",), "routing is not supported on a view root (the old routing value of a "
                                       "changed row is not captured through its base tables): remove it"))
    nested = settings.get("index")
    given = (settings.get("default_pipeline"), settings.get("index.default_pipeline"),
             nested.get("default_pipeline") if isinstance(nested, dict) else None)
    if pipeline is not None and any(v is not None for v in given):
        problems.append((("pipeline",), "settings sets default_pipeline too: keep pipeline and remove the setting"))
    return problems
