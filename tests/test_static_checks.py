"""The code stays as STYLE.md asks: ruff clean, and mypy --strict clean on every package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["core", "gateways", "storage", "actors", "serve", "dexec"]


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed commands of this repository's own tools
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True,
        timeout=240, check=False)


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing() -> None:
    # pyproject.toml sets strict = true; the packages are named so tests/ is not checked.
    result = _run("mypy", *PACKAGES)
    assert result.returncode == 0, result.stdout + result.stderr


# What each package may import of dexec's own (STYLE.md: serve → actors → {gateways,
# storage} → core; dexec is the command line, beside serve, and deploys it by import path).
ALLOWED = {
    "core": {"core"},
    "gateways": {"core", "gateways"},
    "storage": {"core", "storage"},
    "actors": {"core", "gateways", "storage", "actors"},
    "serve": {"core", "gateways", "storage", "actors", "serve"},
    "dexec": {"core", "gateways", "storage", "actors", "dexec"},
}
# core is pure: the standard library and pydantic only.
CORE_THIRD_PARTY = {"pydantic", "pydantic_settings"}


def _imports(path: Path) -> set[str]:
    import ast

    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_imports_point_one_way() -> None:
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            own = _imports(path) & set(ALLOWED)
            wrong += [f"{path.relative_to(ROOT)} imports {name}" for name in own - allowed]
    assert wrong == []


def test_core_imports_only_the_standard_library_and_pydantic() -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    wrong = []
    for path in sorted((ROOT / "core").rglob("*.py")):
        extra = _imports(path) - stdlib - CORE_THIRD_PARTY - {"core"}
        wrong += [f"{path.relative_to(ROOT)} imports {name}" for name in sorted(extra)]
    assert wrong == []
