"""Example flusso plugins for the bookstore (README, "Plugins"): put this directory on PYTHONPATH and
list `bookstore_plugins:ShoutTitles` under an index's `plugins:`."""

from __future__ import annotations


class ShoutTitles:
    """Upper-cases the title, and keeps books whose title starts with "draft" out of the index."""

    def transform(self, doc: dict) -> dict | None:
        title = doc.get("title") or ""
        if title.lower().startswith("draft"):
            return None  # dropped: deleted from the index if it was there
        return {**doc, "title": title.upper()}


class TagCount:
    """A batch plugin: one call per build chunk (the place for a lookup or a model call)."""

    def transform_batch(self, docs: list[dict]) -> list[dict | None]:
        return [{**d, "review_count": len(d.get("reviews") or [])} for d in docs]
