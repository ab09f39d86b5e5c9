"""scripts/check_layout.py catches what the architecture forbids, and passes on the tree as it is."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_layout", ROOT / "scripts" / "check_layout.py")
assert _spec is not None and _spec.loader is not None
layout = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(layout)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_backend_imported_from_outside_its_folder_is_a_violation(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "flusso_engine/__init__.py": "",
        "flusso_engine/engine.py": "from .capture.wal import WalCapture\n",
        "flusso_engine/capture/__init__.py": "",
        "flusso_engine/capture/wal/__init__.py": "from .stream import stream\n",  # inside: fine
        "flusso_engine/capture/wal/stream.py": "from ...changes import Change\n",
        "flusso_engine/changes.py": "",
        "flusso_dagster/__init__.py": "from flusso_engine.capture import wal\n",
    })
    found = layout.violations(root)
    assert len(found) == 2, found
    assert found[0].startswith("flusso_dagster/__init__.py:1: imports the backend flusso_engine.capture.wal")
    assert found[1].startswith("flusso_engine/engine.py:1: imports the backend flusso_engine.capture.wal")


def test_the_engine_core_importing_dagster_is_a_violation(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "flusso_engine/__init__.py": "",
        "flusso_engine/observer.py": "import dagster\nfrom dagster import asset\n",
        "flusso_dagster/__init__.py": "import dagster\n",  # the layer may
    })
    found = layout.violations(root)
    assert [f.split(": ")[0] for f in found] == ["flusso_engine/observer.py:1", "flusso_engine/observer.py:2"]


def test_the_project_itself_follows_the_rules() -> None:
    done = subprocess.run([sys.executable, "scripts/check_layout.py"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
    assert done.stdout.startswith("largest modules: ")
