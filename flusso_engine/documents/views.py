"""Views as an index's root or a relation's table: how a base-table change reaches their documents.

A view's rows change only when its base tables' rows do, so its node in the tree has no route of its
own; each `depends_on` entry gives one instead, from the base table's columns to the view's (a view
row depends on a base row when `view column = base column` for every pair of its `key`):

- **Onto the key the tree needs** (the index key for the root; the columns that join a relation to
  its parent, `on`'s child side or the join table's): the base row's values, new and old, are those
  columns' values, so they reach the documents without reading the view. This is exact even when
  the change moves a row out of the view (a filter, an inner join): the old values still name the
  document, which is rebuilt from current rows, a delete when its root row is gone. Where the
  base columns do not print as the root key (`keys.same_text`), one query casts them
  (`statements.literal_ids`). `routes.index_routes` makes these routes, never asking the view.
- **Onto other columns of the view**: one query finds the view rows with those values now (new and
  old values alike) and walks up from them. It finds rows that stay in the view; a change that
  removes a row from the view is seen only through a dependency mapped onto the key. Validation
  cannot tell which kind a view is, so README says to map each base table onto the key where it
  can be, and why.

A materialized view needs none of this: its rows change on REFRESH alone, never when its base tables'
rows do, so it has no routes (`plan.index_plan`) and is never captured; each capture's catalog watch
sees a refresh and rebuilds the indexes that read it (`capture/refresh.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..config.names import qualify
from ..config.views import DependencyConfig


@dataclass(frozen=True)
class Dependency:
    """A base table, and its columns lined up with the view columns they equal."""

    table: str
    base_columns: tuple[str, ...]
    view_columns: tuple[str, ...]

    def onto(self, view_columns: Sequence[str]) -> tuple[str, ...] | None:
        """The base columns that equal `view_columns`, in their order, or None if one is not mapped."""
        by_view = dict(zip(self.view_columns, self.base_columns, strict=True))
        if not view_columns or any(c not in by_view for c in view_columns):
            return None
        return tuple(by_view[c] for c in view_columns)


def dependencies(configs: Sequence[DependencyConfig]) -> tuple[Dependency, ...]:
    return tuple(Dependency(qualify(d.table), tuple(d.key), tuple(d.key.values())) for d in configs)
