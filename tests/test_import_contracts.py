"""Core imports no plugin: import-linter's contract (root pyproject.toml) and an AST scan.

import-linter checks the contract's list of built-in plugins, through indirect imports too; the
AST scan catches any ``benchstack_*`` module (a third-party plugin's as well), including
``importlib.import_module("benchstack_x")``. Both are shown to fail on a core that does import a
plugin.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core" / "src" / "benchstack"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def plugin_imports(package_dir: Path) -> list[str]:
    """``path:line: module`` for every import of a ``benchstack_*`` module under ``package_dir``."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str)
                  and (getattr(node.func, "attr", None) == "import_module"
                       or getattr(node.func, "id", None) in ("__import__", "import_module"))):
                names = [node.args[0].value]
            for name in names:
                if name.split(".")[0].startswith("benchstack_"):
                    found.append(f"{path.relative_to(package_dir.parent)}:{node.lineno}: {name}")
    return found


def lint_imports(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} missing: import-linter is installed by scripts/bootstrap")
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=300)


def contract() -> dict:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (forbidden,) = [c for c in data["contracts"] if c["type"] == "forbidden"]
    return {"root": data, "contract": forbidden}


def test_core_imports_no_plugin_ast():
    assert plugin_imports(CORE) == []


def test_import_linter_contract_is_kept():
    r = lint_imports(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Contracts: 1 kept, 0 broken." in r.stdout


def test_contract_names_every_builtin_plugin():
    forbidden = set(contract()["contract"]["forbidden_modules"])
    packages = {p.name for p in ROOT.glob("plugins/*/src/benchstack_*") if p.is_dir()
                and not p.name.endswith(".egg-info")}
    assert packages - forbidden == set(), "add these to [tool.importlinter] forbidden_modules"


@pytest.fixture
def bad_core(tmp_path):
    """A copy of core whose ``testing`` package imports a plugin (``import benchstack_aiperf``
    through ``benchstack.testing.bad``), with the root's import-linter configuration."""
    pkg = tmp_path / "benchstack"
    shutil.copytree(CORE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "testing" / "bad.py").write_text(
        "import importlib\n\nimport benchstack_aiperf.plugin\n\n"
        "LATER = importlib.import_module('benchstack_sglang.plugin')\n")
    cfg = contract()
    lines = ["[tool.importlinter]", 'root_packages = ["benchstack"]', "include_external_packages = true",
             "", "[[tool.importlinter.contracts]]", f'name = "{cfg["contract"]["name"]}"',
             'type = "forbidden"', 'source_modules = ["benchstack"]',
             "forbidden_modules = [" + ", ".join(f'"{m}"' for m in cfg["contract"]["forbidden_modules"]) + "]"]
    (tmp_path / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_both_checks_catch_a_core_that_imports_a_plugin(bad_core):
    assert plugin_imports(bad_core / "benchstack") == [
        "benchstack/testing/bad.py:3: benchstack_aiperf.plugin",
        "benchstack/testing/bad.py:5: benchstack_sglang.plugin"]
    # the copy shadows the installed benchstack: PYTHONPATH comes before the editable install
    r = lint_imports(bad_core, env={"PYTHONPATH": str(bad_core)})
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Contracts: 0 kept, 1 broken." in r.stdout
    assert "benchstack.testing.bad -> benchstack_aiperf" in r.stdout
