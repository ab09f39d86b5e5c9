"""PGSync's documents for the `import-pgsync` tests: recorded from PGSync 7.3.0 itself (tests/data/pgsync/
<case>/pgsync_documents.json), and made again by PGSync when its virtualenv is here.

PGSync is not a dependency of flusso: bench/pgsync_control.py installs it into `.flusso/pgsync-venv`
(its pins clash with flusso's). A one-shot `pgsync -c schema.json` needs no Redis (it warns).
`normalize` removes what is documented to differ (README, "Moving from PGSync"), nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "pgsync"


def pgsync_bin() -> Path | None:
    for root in (ROOT, Path("/work/main")):
        found = root / ".flusso" / "pgsync-venv" / "bin"
        if (found / "pgsync").exists():
            return found
    return None


def run_pgsync(schema: Path, env: Mapping[str, str], work: Path) -> None:
    """PGSync's bootstrap (triggers, slot), one initial sync into OpenSearch, then its teardown."""
    found = pgsync_bin()
    assert found is not None
    full = {**os.environ, **env, "OPENSEARCH": "true", "ELASTICSEARCH": "false", "CHECKPOINT_PATH": f"{work}/"}
    for args in ([found / "bootstrap", "-c", schema], [found / "pgsync", "-c", schema],
                 [found / "bootstrap", "--teardown", "-c", schema]):
        done = subprocess.run([str(a) for a in args], env=full, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]


def recorded(case: str) -> dict[str, Any]:
    return json.loads((DATA / case / "pgsync_documents.json").read_text())


def _sorted(values: list[Any]) -> list[Any]:
    return sorted(values, key=lambda v: json.dumps(v, sort_keys=True, default=str))


def normalize(doc: Any, arrays_as_objects: frozenset[str] = frozenset(), scalars: frozenset[str] = frozenset(),
              path: str = "") -> Any:
    """A document with the documented differences taken out: PGSync's `_meta` and flusso's
    `_flusso_hash` dropped; an empty array and null the same (PGSync: null, flusso: []); arrays in
    no particular order (PGSync sets none). `arrays_as_objects`: the
    paths where PGSync's one_to_one over a non-unique join gives one object and flusso an array;
    `scalars`: the paths of scalar relations flusso gives as objects of one field (before relation
    variants)."""
    if isinstance(doc, dict):
        out = {}
        for key, value in doc.items():
            if key in ("_meta", "_flusso_hash"):
                continue
            here = f"{path}.{key}" if path else key
            if here in arrays_as_objects and isinstance(value, list):
                value = value[0] if len(value) == 1 else (None if not value else value)
            if here in scalars and isinstance(value, list):
                value = [next(iter(v.values())) if isinstance(v, dict) and len(v) == 1 else v for v in value]
            elif here in scalars and isinstance(value, dict) and len(value) == 1:
                value = next(iter(value.values()))
            out[key] = normalize(value, arrays_as_objects, scalars, here)
        return out
    if isinstance(doc, list):
        if not doc:
            return None
        return _sorted([normalize(v, arrays_as_objects, scalars, path) for v in doc])
    return doc
