"""Which OpenSearch errors are about the index as a whole, and how a user lifts them.

A bulk item can be refused for what the document holds (a value its field cannot parse, an
immense term): that is a *rejection*, one document's problem, and the rejection policy handles it.
It can also be refused because the index cannot take any write: a write or read-only block, the
flood-stage disk block, a closed or missing index, a user without the right to write. Then every
other document would be refused too, and dead-lettering or skipping them would acknowledge changes
that were never applied: such an error is a *flush error*, retried like a 5xx and then raised with
what happened and the fix.

The classification reads the error's `type` and its status, and for a `cluster_block_exception`
the block's id (`FORBIDDEN/8/index write (api)`: ids are stable across versions), not free text.
What OpenSearch 2.19 returns for each (checked against a real node):

| cause | item status | error type |
| --- | --- | --- |
| `index.blocks.write: true` | 403 | cluster_block_exception, block 8 |
| `index.blocks.read_only: true` | 403 | cluster_block_exception, block 5 |
| `index.blocks.read_only_allow_delete` (flood stage) | 429 | cluster_block_exception, block 12 |
| a closed index | 400 | index_closed_exception |
| a missing index, `action.auto_create_index: false` | 404 | index_not_found_exception |
| a user without write permission (security plugin) | 403 | security_exception |
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .. import alias_of

# `blocked by: [FORBIDDEN/8/index write (api), TOO_MANY_REQUESTS/12/disk usage exceeded ..., index has ...];`
_BLOCK = re.compile(r"([A-Z_]+)/(\d+)/(.*?)(?=, [A-Z_]+/\d+/|\];|\]$|$)")
_NULL_SETTING = 'lift the block with PUT /{index}/_settings {{"{setting}": null}}'
_NULL_CLUSTER_SETTING = 'lift the block with PUT /_cluster/settings {{"persistent": {{"{setting}": null}}}}'
_FREE_DISK = ("free disk space on the node (its disk usage passed "
              "cluster.routing.allocation.disk.watermark.flood_stage), then ")


@dataclass(frozen=True)
class IndexWide:
    """An error that means the index cannot take writes: `cause` says what, `fix` how to lift it."""

    cause: str
    fix: str


def _block_fix(index: str, block_id: int) -> tuple[str, str] | None:
    """The setting behind an OpenSearch block id and the request that lifts it."""
    index_blocks = {8: "index.blocks.write", 5: "index.blocks.read_only"}
    if block_id in index_blocks:
        setting = index_blocks[block_id]
        return setting, _NULL_SETTING.format(index=index, setting=setting)
    if block_id == 12:
        setting = "index.blocks.read_only_allow_delete"
        return setting, _FREE_DISK + _NULL_SETTING.format(index=index, setting=setting)
    if block_id == 6:
        setting = "cluster.blocks.read_only"
        return setting, _NULL_CLUSTER_SETTING.format(setting=setting)
    if block_id == 13:
        setting = "cluster.blocks.read_only_allow_delete"
        return setting, _FREE_DISK + _NULL_CLUSTER_SETTING.format(setting=setting)
    if block_id == 4:
        return "closed", f"POST /{index}/_open"
    return None


def _text(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    return f"{error.get('type', 'error')}: {error.get('reason', '')}".strip()


def index_wide(index: str, status: Any, error: Any) -> IndexWide | None:
    """The cause and fix when a bulk item's (or a whole request's) error is about `index` as a
    whole; None when it is about the one document."""
    kind = error.get("type") if isinstance(error, dict) else None
    alias = alias_of(index)
    shown = index if alias == index else f"{alias} (its generation {index})"  # what the user searches
    reason = str(error.get("reason", "")) if isinstance(error, dict) else str(error or "")
    if kind == "cluster_block_exception":
        known = [(found, desc.strip()) for _, i, desc in _BLOCK.findall(reason)
                 if (found := _block_fix(index, int(i))) is not None]
        if known:  # every block at once: lifting one would only show the next on the next start
            causes = " and ".join(f"{setting} ({desc})" for (setting, _), desc in known)
            return IndexWide(f"index {shown} is blocked for writes by {causes}",
                             "; ".join(fix for (_, fix), _ in known))
        return IndexWide(
            f"index {shown} is blocked for writes ({_text(error)})",
            f"find the block with GET /{index}/_settings?flat_settings=true and GET /_cluster/settings "
            "(the *.blocks.* settings) and set it to null",
        )
    if kind == "index_closed_exception":
        return IndexWide(f"index {shown} is closed", f"open it with POST /{index}/_open")
    if kind == "index_not_found_exception":
        return IndexWide(
            f"index {shown} does not exist and OpenSearch does not create it on write "
            "(action.auto_create_index is off)",
            "start flusso again: it creates the index with its mapping and backfills it",
        )
    if status == 401:
        return IndexWide(f"OpenSearch refused flusso's credentials writing to {shown} ({_text(error)})",
                         "check sink.username and sink.password")
    if status == 403 or kind == "security_exception":
        return IndexWide(
            f"the user flusso connects as may not write to index {shown} ({_text(error)})",
            f"grant it the write permissions on {index} (indices:data/write/index, "
            "indices:data/write/delete, indices:data/write/bulk*)",
        )
    if kind == "illegal_argument_exception" and "no write index is defined" in reason:
        # an alias over several indexes, none of them the write index: no document can go in
        return IndexWide(f"index {shown} is an alias without a write index ({reason})",
                         "mark one of its indexes with is_write_index: true (POST /_aliases)")
    return None
