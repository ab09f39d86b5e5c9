"""What every model of flusso.yaml shares: unknown keys are errors, and a validator may report many
problems at once, each at its own place.

pydantic reports each field on its own, so a rule that is a validator of the field it speaks of
never hides a mistake next to it. A rule that needs two fields of one model is the model's `after`
validator: it runs once the model's own values are valid, and lists every problem it finds through
`report`, each at the path of the field it names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails

Loc = tuple[str | int, ...]
"""A place below the field or model being validated: `("hosts", 0)`, or `()` for itself."""


class Strict(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def one_or_many(v: Any) -> Any:
    """`key: id` means `key: [id]`: a single name where a list is expected is not worth an error."""
    return [v] if isinstance(v, str) else v


def report(problems: Iterable[tuple[Loc, str]]) -> None:
    """Raise every problem a validator found, together; each becomes its own error at its `Loc`.

    pydantic keeps the locations of a `ValidationError` raised inside a validator and puts the
    field's (or model's) own location in front, so the messages keep their paths in the file (the
    path by which a wrap validator re-raises its handler's errors; tests/test_config.py guards it).
    """
    errors = [
        InitErrorDetails(type="value_error", loc=loc, input=None, ctx={"error": ValueError(message)})
        for loc, message in problems
    ]
    if errors:
        raise ValidationError.from_exception_data("flusso.yaml", errors)
