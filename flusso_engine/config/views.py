"""`depends_on:`: the base tables of a view that an index's root or a relation reads.

A view has no changes of its own: logical decoding and triggers see its base tables only. Each
dependency names a base table and maps its columns onto the view's (`key: {base column: view
column}`): a view row depends on a base row when those columns are equal. Resolve uses the base
row's new and old values (`documents/views.py` says how, and when that is exact).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, field_validator

from .base import Strict

_TABLE_NAME = re.compile(r"^[^.\s]+(\.[^.\s]+)?$")  # as `indexes.TableName`


def _table_name(table: str) -> str:
    if not _TABLE_NAME.match(table):
        raise ValueError(f'"{table}" is not a table name: write schema.table or table')
    return table


class DependencyConfig(Strict):
    """One base table of a view, and how its columns map onto the view's."""

    table: Annotated[str, AfterValidator(_table_name)]
    key: dict[str, str]

    @field_validator("key")
    @classmethod
    def _not_empty(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("is empty: map the base table's columns to the view's, e.g. {id: book_id}")
        return v


def dependency_list(v: Any) -> Any:
    """`depends_on: public.books` (a bare name, PGSync's `base_tables` style) is refused with the
    form to write: which view column each base column is cannot be guessed safely."""
    items = [v] if isinstance(v, str | dict) else v
    if not isinstance(items, list):
        return v
    for item in items:
        if isinstance(item, str):
            raise ValueError(
                f'"{item}" needs its columns mapped onto the view\'s: write {{table: {item}, key: '
                "{base column: view column}}, e.g. {table: public.books, key: {id: book_id}}"
            )
    return items


Dependencies = list[DependencyConfig]
