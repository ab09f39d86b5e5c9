"""The architecture's two rules, checked on the source (docs/architecture.md, "Where things go").

1. The engine core (`flusso_engine/`) never imports `dagster`.
2. A backend (a folder below one of the parts' folders: `capture/wal/`, `sinks/opensearch/`, ...) is
   imported only from inside its own folder. Everything else reaches it through its part's protocol
   and the registry, which loads it by the config's `type`, by name.

Prints the five largest modules as information (a guide to splitting by concern, not a rule) and
exits 1 with every violation listed.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = "flusso_engine"
PARTS = ("capture", "queue", "documents", "sinks")
PACKAGES = (ENGINE, "flusso_dagster")


def modules(root: Path = ROOT) -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


def imported(module: str, path: Path) -> Iterator[tuple[int, str]]:
    """Every module an import statement names, absolute (relative imports resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:  # `from . import wal` names a module too
                yield node.lineno, f"{base}.{alias.name}"


def backend_of(name: str, root: Path = ROOT) -> str | None:
    """`flusso_engine.capture.wal.stream` -> `flusso_engine.capture.wal` when that is a folder."""
    parts = name.split(".")
    if len(parts) < 3 or parts[0] != ENGINE or parts[1] not in PARTS:
        return None
    folder = root.joinpath(*parts[:3])
    return ".".join(parts[:3]) if folder.is_dir() else None


def violations(root: Path = ROOT) -> list[str]:
    found = []
    for module, path in modules(root):
        where = path.relative_to(root)
        inside = backend_of(module, root)
        for line, name in imported(module, path):
            if module.startswith(ENGINE) and name.split(".")[0] == "dagster":
                found.append(f"{where}:{line}: the engine core imports dagster: move this to flusso_dagster/")
            backend = backend_of(name, root)
            if backend is not None and backend != inside:
                found.append(
                    f"{where}:{line}: imports the backend {backend} from outside its folder: go through "
                    f"the {backend.split('.')[1]} protocol and the registry instead"
                )
    return sorted(set(found))


def main() -> int:
    sizes = sorted(((len(p.read_text().splitlines()), p.relative_to(ROOT)) for _, p in modules()), reverse=True)
    print("largest modules:", ", ".join(f"{p} ({n})" for n, p in sizes[:5]))
    problems = violations()
    for problem in problems:
        print(problem)
    if problems:
        print(f"layout: {len(problems)} violation(s) of the rules in docs/architecture.md")
        return 1
    print("layout: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
