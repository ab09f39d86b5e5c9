"""A PGSync document tree into one flusso index: fields, mapping, relations, with a comment where a
choice was made and a line in the report for everything that could not be converted.

PGSync's node -> flusso's node: `columns` (none: every column, PGSync's rule) are fields, named by
`transform.rename`; `transform.mapping` and the document's `mapping`/`mappings` are the mapping (a
relation mapped `nested` becomes `nested: true`); `primary_key` is the root's or a relation's `key`;
`label` is the relation's name; `relationship` and the catalog give `type` and `on`/`through`
(infer.py). What flusso cannot say yet becomes a `# not converted yet:` comment in place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..config.indexes import OPENSEARCH_FIELD_TYPES
from .infer import Database, Join, direct_join, through_join
from .schema import PgDocument, PgNode
from .transforms import convert_transform, fields_syntax, is_json_column, json_column
from .views import depends_on, view_key
from .writer import Entry, flow

_JSON_BASE = re.compile(r"->>|->|#>>|#>")


@dataclass
class Report:
    """What the import did not convert, where flusso's documents will differ, and what it inferred."""

    not_converted: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    inferred: list[str] = field(default_factory=list)


@dataclass
class _Rel:
    label: str
    node: PgNode
    join: Join
    body: list[Entry]
    notes: list[str]
    variant: list[Entry] = field(default_factory=list)  # variant and prefix, when not an object
    depends_on: list[Entry] = field(default_factory=list)  # a view's base tables (views.py)


@dataclass
class _Node:
    """A node's converted parts, before they are written."""

    fields: dict[str, Any] = field(default_factory=dict)
    transform: dict[str, Any] = field(default_factory=dict)
    mapping: dict[str, dict[str, Any]] = field(default_factory=dict)
    relations: list[_Rel] = field(default_factory=list)
    nested: set[str] = field(default_factory=set)
    above: dict[str, list[str]] = field(default_factory=dict)  # comments above a field or relation
    pending: list[str] = field(default_factory=list)  # comment lines at the node's end


class Converter:
    def __init__(self, db: Database, report: Report, syntax: bool | None = None) -> None:
        self.db = db
        self.report = report
        self.syntax = fields_syntax() if syntax is None else syntax

    def pending(self, where: str, what: str, node: _Node) -> None:
        """Something flusso's config will say but cannot yet: a comment in place and a line in the report."""
        node.pending.append(f"not converted yet: {what}")
        self.report.not_converted.append(f"{where}: {what}")

    def index(self, doc: PgDocument) -> Entry:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", doc.index):
            fixed = re.sub(r"[^a-z0-9_\-]", "_", doc.index.lower()).lstrip("_-") or "documents"
            self.report.not_converted.append(f"{doc.path}.index: {doc.index!r} is not an index name flusso takes "
                                             f"(lower-case letters, digits, _ and -): named {fixed!r}")
            doc.index = fixed
        root = doc.nodes
        table = self.db.table(root.qualified)
        above: list[str] = [f"From PGSync's {doc.path} (index {doc.index}, database {doc.database})."]
        if table is None:
            return self._missing_table(doc.index, root, above)
        above += self._refreshed(root, table)
        deps = depends_on(self.db, root, self.report)
        key = root.primary_key or table.primary_key or view_key(deps)
        body: list[Entry] = [Entry("table", root.qualified)]
        if not key:
            self.report.not_converted.append(
                f"{root.path}: {root.qualified} has no primary key: give the root node primary_key (PGSync "
                "needs one too), or add one to the table; the key below is a placeholder")
            key = ["id"]
        origin = ("PGSync's primary_key" if root.primary_key else "the table's primary key" if table.primary_key
                  else "the view columns its first base table's key maps onto")
        body.append(Entry("key", key, origin))
        body += deps
        converted = self._node(root, table.columns.keys())
        self._document_mapping(doc, converted, root)
        body += self._body(converted, doc.setting)
        notes = self._index_wide(doc, table.columns.keys(), bool(deps), body)
        entry = Entry(doc.index, body, above=above + notes)
        return entry

    def _refreshed(self, node: PgNode, table: Any) -> list[str]:
        """A materialized view: flusso rebuilds from it on every REFRESH, so its base_tables go (a
        comment above the index says so)."""
        if table.kind != "materialized view":
            return []
        bases = f" (PGSync's base_tables {', '.join(node.base_tables)} are not needed)" if node.base_tables else ""
        what = f"{node.qualified} is a materialized view: flusso watches for REFRESH and rebuilds the index from it"
        self.report.inferred.append(f"{node.path}: {what}{bases}")
        return [f"{what}{bases}."]

    def _missing_table(self, name: str, node: PgNode, above: list[str]) -> Entry:
        what = f"{node.qualified} is not in the database: create it (or fix the schema), and import again"
        self.report.not_converted.append(f"{node.path}: {what}")
        return Entry(name, [Entry("table", node.qualified)], above=[*above, f"not converted: {what}"],
                     disabled=True)

    def _node(self, node: PgNode, all_columns: Any) -> _Node:
        out = _Node()
        table = self.db.table(node.qualified)
        transform = node.transform
        rename: dict[str, str] = transform.get("rename") or {}
        columns = node.columns or list(all_columns)
        if not node.columns:
            self.report.inferred.append(f"{node.path}.columns: none listed: every column of {node.qualified} "
                                        "(PGSync's rule)")
        for column in columns:
            name, spec = self._column(node, column, rename, table, out)
            if name is None:
                continue
            if name.startswith("_") or "." in name:
                fixed = name.lstrip("_").replace(".", "_") or f"f_{column}"
                self.report.not_converted.append(f"{node.path}.transform.rename: {name!r} cannot be a flusso "
                                                 f"field name (a leading _ or a dot): named {fixed!r}")
                name = fixed
            out.fields[name] = spec
        for label in rename:
            if label not in columns and not any(is_json_column(c) for c in columns):
                self.report.not_converted.append(f"{node.path}.transform.rename.{label}: not a column of the "
                                                 "node: skipped")
        if self.syntax:
            out.transform = convert_transform(f"{node.path}.transform", transform, rename, out.fields,
                                              self.report.not_converted, self.report.differences)
        else:
            for kind in ("concat", "replace"):
                if transform.get(kind):
                    self.pending(f"{node.path}.transform.{kind}", f"transform {kind}: {flow(transform[kind])}",
                                 out)
            convert_transform(f"{node.path}.transform", {"move": transform.get("move")}, rename, out.fields,
                              self.report.not_converted, self.report.differences)  # move: what PGSync does
        for child in node.children:
            self._child(node, child, out)
        self._mapping(node.path + ".transform.mapping", transform.get("mapping") or {}, out)
        return out

    def _column(self, node: PgNode, column: str, rename: dict[str, str], table: Any,
                out: _Node) -> tuple[str | None, Any]:
        """A PGSync column as (field name, flusso field), or (None, None) when it is not converted."""
        if is_json_column(column):
            made = json_column(column)
            if isinstance(made, str):
                self.report.not_converted.append(f"{node.path}.columns: {made}")
                return None, None
            if not self.syntax:
                self.pending(f"{node.path}.columns", f"{column!r}: a JSON path ({flow(made[1])})", out)
                return None, None
            base = _JSON_BASE.split(column, maxsplit=1)[0].strip()
            if table is not None and base not in table.columns:
                self.report.not_converted.append(f"{node.path}.columns: {column!r}: no column {base!r}: skipped")
                return None, None
            name = str(rename.get(made[0], made[0]))
            if "path" in made[1] and table is not None:
                typed = self.db.json_mapping(node.qualified, base, made[1]["path"].split(".")[1:])
                if typed is not None:
                    out.mapping[name] = typed
                    self.report.inferred.append(f"{node.path}.columns: {column!r}: mapped {flow(typed)} from its "
                                                "values (sampled)")
            if "->>" in column or "#>>" in column:
                self.report.differences.append(
                    f"{node.path}.columns: {column!r}: PGSync 7.3.0 reads ->> and #>> as -> and #> then a key "
                    "starting with '>' (it tries the short operator first): its field is named with that '>' and "
                    f"is always null; flusso gives the text, as {made[0]!r}")
            return name, made[1]
        if table is not None and column not in table.columns:
            self.report.not_converted.append(f"{node.path}.columns: {column!r} is not a column of "
                                             f"{node.qualified}: skipped")
            return None, None
        return str(rename.get(column, column)), column

    def _child(self, parent: PgNode, child: PgNode, out: _Node) -> None:
        rel = child.relationship
        if not rel.type_given:
            self.report.inferred.append(f"{child.path}.relationship: no type: read as one_to_one")
        through = child.through()
        join = (through_join(self.db, parent.qualified, child.qualified, through, rel.type) if through
                else direct_join(self.db, parent.qualified, child.qualified, rel.type, rel.foreign_key))
        label = child.label
        if isinstance(join, str):
            self.report.not_converted.append(f"{child.path}: {join}")
            out.pending.append(f"not converted: relation {label} ({child.qualified}): {join}")
            return
        if through and rel.foreign_key:
            self.report.not_converted.append(f"{child.path}.relationship.foreign_key: ignored with a through "
                                             "table: the join is the through table's foreign keys")
        table = self.db.table(child.qualified)
        if table is None:
            self._missing_table(label, child, [])
            out.pending.append(f"not converted: relation {label}: {child.qualified} is not a table here")
            return
        self._refreshed(child, table)
        if label in out.fields:
            self.report.not_converted.append(f"{child.path}.label: {label!r} is also a field: named the relation "
                                             f"{label}_{child.table}")
            label = f"{label}_{child.table}"
        deps = depends_on(self.db, child, self.report)
        if join.type in ("one_to_many", "many_to_many") and not (child.primary_key or table.primary_key
                                                                 or view_key(deps)):
            self.report.not_converted.append(
                f"{child.path}: {child.qualified} has no primary key to identify and order {label} by: give the "
                "node primary_key (flusso's relation key), or add one to the table")
        converted = self._node(child, table.columns.keys())
        variant: list[Entry] = []
        if rel.variant == "scalar":
            variant = self._scalar(child, label, join, converted, out)
        notes = [*join.notes, *(f"differs from PGSync: {d}" for d in join.differs)]
        self.report.inferred += [f"{child.path}: {n}" for n in join.notes]
        for d in join.differs:
            self.report.differences.append(f"{child.path}: {d}")
        out.relations.append(_Rel(label, child, join, self._body(converted), notes, variant, deps))

    def _scalar(self, child: PgNode, label: str, join: Join, converted: _Node, out: _Node) -> list[Entry]:
        """PGSync's scalar: a list of the first column's values (one_to_many), or that one value
        (one_to_one): flusso's `variant: scalar`, or `variant: flatten` with the label as the field."""
        where = f"{child.path}.relationship.variant"
        if not self.syntax:
            self.pending(where, f"variant scalar ({label}: the values of {', '.join(map(str, converted.fields))} in "
                                "PGSync): until then an object per row", converted)
            self.report.differences.append(f"{child.path}: scalar {label!r} is an object per row here, a bare "
                                           "value (or a list of values) in PGSync")
            return []
        if len(converted.fields) > 1:
            self.report.not_converted.append(f"{where}: PGSync's scalar takes the first column only: the others "
                                             "are left out")
        first = dict(list(converted.fields.items())[:1])
        if converted.transform.get("replace"):
            self.report.differences.append(f"{child.path}.transform.replace: PGSync 7.3.0 empties a scalar "
                                           "relation that has a replace (its replace walks objects only); flusso "
                                           "replaces in each value")
        if join.type in ("one_to_many", "many_to_many"):
            converted.fields = first
            converted.mapping = {f: m for f, m in converted.mapping.items() if f in first}
            converted.transform = {k: v for k, v in converted.transform.items() if k != "concat"}
            return [Entry("variant", "scalar", "PGSync's scalar: a list of one column's values")]
        if converted.relations or label in out.fields:
            self.report.not_converted.append(f"{where}: a scalar one_to_one with children (or named like a field) "
                                             "cannot be flattened under its label: left as an object")
            return []
        ((name, spec),) = first.items()
        converted.fields = {label: spec}
        converted.transform = {k: {label if f == name else f: r for f, r in v.items()} for k, v in
                               converted.transform.items() if k == "replace"}
        converted.mapping = {label: converted.mapping[name]} if name in converted.mapping else {}
        return [Entry("variant", "flatten", "PGSync's scalar one_to_one: the value itself, under the label"),
                Entry("prefix", "")]

    def _mapping(self, where: str, mapping: dict[str, Any], out: _Node) -> None:
        labels = {r.label for r in out.relations}
        destinations = {c["destination"] for c in out.transform.get("concat", [])}
        for name, spec in mapping.items():
            if not isinstance(spec, dict):
                self.report.not_converted.append(f"{where}.{name}: not an object: skipped")
            elif name in labels:
                if spec.get("type") == "nested":
                    out.nested.add(name)
                if "properties" in spec:
                    body = next(r.body for r in out.relations if r.label == name)
                    self._merge_properties(f"{where}.{name}", spec["properties"], body)
                if spec.get("type") not in (None, "object", "nested"):
                    self.report.not_converted.append(f"{where}.{name}: a relation mapped {spec.get('type')!r}: "
                                                     "flusso maps relations as object or nested")
            elif name not in out.fields and name not in destinations:
                self.report.not_converted.append(f"{where}.{name}: not a field of this node: skipped")
            elif "type" in spec and spec["type"] not in OPENSEARCH_FIELD_TYPES:
                self.report.not_converted.append(f"{where}.{name}: type {spec['type']!r} is not an OpenSearch type:"
                                                 " skipped (flusso derives one from the column)")
            else:
                out.mapping[name] = spec

    def _merge_properties(self, where: str, properties: Any, body: list[Entry]) -> None:
        """A document-level mapping's `properties` of a relation, into its already-written body."""
        if not isinstance(properties, dict):
            return
        fields = next((e.value for e in body if e.key == "fields"), {})
        mapping = next((e for e in body if e.key == "mapping"), None)
        for name, spec in properties.items():
            if name in fields and isinstance(spec, dict) and spec.get("type") in OPENSEARCH_FIELD_TYPES:
                if mapping is None:
                    mapping = Entry("mapping", {})
                    body.insert(next(i for i, e in enumerate(body) if e.key == "fields") + 1, mapping)
                mapping.value[name] = spec
            elif isinstance(spec, dict) and spec.get("type") == "nested" and not any(
                    e.key == "relations" for e in body):
                self.report.not_converted.append(f"{where}.{name}: not a field of this relation: skipped")
            else:
                self.report.not_converted.append(f"{where}.{name}: not converted (map it in flusso.yaml by hand)")

    def _document_mapping(self, doc: PgDocument, root: _Node, node: PgNode) -> None:
        """The document's `mapping` (PGSync: the whole of `properties`, replacing the transforms' mapping)
        and `mappings`: merged field by field into flusso's derived mapping."""
        if doc.mapping:
            self._mapping(f"{doc.path}.mapping", doc.mapping.get("properties", doc.mapping)
                          if "dynamic_templates" not in doc.mapping else {}, root)
            if "dynamic_templates" in doc.mapping:
                self.report.not_converted.append(f"{doc.path}.mapping.dynamic_templates: flusso writes explicit "
                                                 "mappings: not converted")
            self.report.differences.append(f"{doc.path}.mapping: PGSync maps only these fields (dynamic mapping for "
                                           "the rest); flusso derives every other field's type from its column")
        if doc.mappings:
            props = doc.mappings.get("properties")
            if isinstance(props, dict):
                self._mapping(f"{doc.path}.mappings.properties", props, root)
            others = sorted(set(doc.mappings) - {"properties"})
            if others:
                self.report.not_converted.append(f"{doc.path}.mappings: {', '.join(others)}: not converted")

    def _index_wide(self, doc: PgDocument, columns: Any, view: bool, body: list[Entry]) -> list[str]:
        """Routing and pipeline become the index's `routing` (a root column, as PGSync's is) and
        `pipeline` (an existing pipeline's name, as PGSync's is); plugins are comments to port by
        hand. Returns the comments; the report gets a line for each thing not converted."""
        lines: list[str] = []
        if doc.routing and doc.routing in columns and not view:
            body.append(Entry("routing", doc.routing, "PGSync's routing: _routing required"))
        elif doc.routing:
            why = "the root is a view" if view else f"{doc.nodes.qualified} has no column {doc.routing!r}"
            lines.append(f"not converted: routing by {doc.routing!r} ({why}): flusso routes by a root table's column")
            self.report.not_converted.append(f"{doc.path}.routing: {doc.routing!r}: {why}: documents are written "
                                             "without custom routing")
        if doc.pipeline:
            body.append(Entry("pipeline", doc.pipeline, "PGSync's pipeline: it must exist in OpenSearch"))
        if doc.plugins:
            lines.append(f"not converted: plugins {', '.join(doc.plugins)}: port each one's transform(doc) "
                         "by hand (they run in PGSync's process)")
            self.report.not_converted.append(f"{doc.path}.plugins: {', '.join(doc.plugins)}: port by hand")
        return lines

    def _body(self, node: _Node, settings: dict[str, Any] | None = None) -> list[Entry]:
        body: list[Entry] = []
        if node.fields:
            body.append(Entry("fields", dict(node.fields)))
        if node.transform:
            body.append(Entry("transform", [Entry(k, v) for k, v in node.transform.items()]))
        if node.mapping:
            body.append(Entry("mapping", dict(node.mapping)))
        if settings:
            body.append(Entry("settings", settings, "PGSync's setting"))
        if node.relations:
            rels: list[Entry] = []
            for r in node.relations:
                label, child, join, child_body, notes = r.label, r.node, r.join, r.body, r.notes
                head = [Entry("table", child.qualified), Entry("type", join.type)]
                if join.on is not None:
                    head.append(Entry("on", join.on))
                if join.through is not None:
                    head.append(Entry("through", join.through))
                if child.primary_key:
                    head.append(Entry("key", child.primary_key, "PGSync's primary_key"))
                elif view_key(r.depends_on):
                    head.append(Entry("key", view_key(r.depends_on), "the view columns its first base table's "
                                      "key maps onto"))
                head += r.depends_on
                head += r.variant
                if label in node.nested:
                    if join.type in ("one_to_many", "many_to_many") and not r.variant:
                        head.append(Entry("nested", True, "mapped nested in PGSync"))
                    else:
                        self.report.not_converted.append(f"{child.path}: mapped nested, but one object here: "
                                                         "not nested")
                rels.append(Entry(label, head + child_body, above=notes))
            body.append(Entry("relations", rels))
        if node.pending:
            body.append(Entry(None, None, above=node.pending))
        if not node.fields and not node.relations:
            body.insert(0, Entry("fields", {}, "no column converted: list one"))
        return body
