"""Packaging and layout: mapped packages are all listed, every built-in strategy is registered
and covered by the import rules, and the import-direction contracts hold (import-linter)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

from conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
MAPPED = {"strategies": "clbench.strategies", "kernels": "clbench.kernels", "benchmarks": "clbench.benchmarks", "clbench": "clbench"}


def _packages_on_disk() -> set[str]:
    found = set()
    for folder, prefix in MAPPED.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([prefix, *rel.parts]))
    return found


def test_every_package_folder_is_listed_in_pyproject() -> None:
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == _packages_on_disk()


def test_every_builtin_strategy_has_an_entry_point_and_an_independence_rule() -> None:
    folders = {p.name for p in (REPO / "strategies").iterdir() if (p / "__init__.py").exists()}
    declared = PYPROJECT["project"]["entry-points"]["clbench.strategies"]
    targets = {value.split(":")[0].rsplit(".", 1)[-1] for value in declared.values()}
    assert targets == folders
    installed = {ep.name for ep in entry_points(group="clbench.strategies") if ep.dist and ep.dist.name == "clbench"}
    assert set(declared) <= installed, "re-install clbench (pip install -e .) after editing entry points"
    independence = next(c for c in PYPROJECT["tool"]["importlinter"]["contracts"] if c["type"] == "independence")
    assert set(independence["modules"]) == {f"clbench.strategies.{f}" for f in folders}


def test_every_strategy_folder_has_the_same_shape() -> None:
    """``__init__.py`` re-exports, ``config.py`` holds the settings, ``strategy.py`` the hooks; no hooks in ``__init__``."""
    import ast

    for folder in sorted(p for p in (REPO / "strategies").iterdir() if (p / "__init__.py").exists()):
        assert (folder / "config.py").exists() and (folder / "strategy.py").exists(), folder.name
        tree = ast.parse((folder / "__init__.py").read_text())
        defined = [n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))]
        assert not defined, f"{folder.name}/__init__.py defines {defined}; it only re-exports"


def test_mapped_folders_are_not_top_level_import_names() -> None:
    code = "import importlib.util as u; print([n for n in ('strategies','kernels','benchmarks') if u.find_spec(n)])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True).stdout
    assert out.strip() == "[]"


def test_import_direction_contracts_hold(tmp_path: Path) -> None:
    """import-linter on a real (non-editable) install, where the mapped folders are on disk."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(tmp_path / "site"), str(REPO)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--config", str(REPO / "pyproject.toml")], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
