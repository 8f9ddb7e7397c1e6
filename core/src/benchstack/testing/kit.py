"""Managers with chosen plugins, recipe dicts and RunSpecs, plans, golden files.

Everything here is re-exported by :mod:`benchstack.testing`; import it from there.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

from ..errors import RecipeError
from ..plugins import PluginManager, get_plugin_manager
from ..recipe import load_specs
from ..records import RunSpec
from . import fake_scheduler

UPDATE_GOLDEN_ENV = "BENCH_UPDATE_GOLDEN"

BASE_RECIPE: dict[str, Any] = {
    "name": "test",
    "backend": "none",
    "scheduler": "fake",
    "load": "none",
    "model": {"name": "tiny", "path": "/models/tiny"},
    "sweep": {"concurrency": [1, 2], "isl": 32, "osl": 16, "num_requests": 8},
}


def make_manager(*plugins: tuple[str, ModuleType | object], entry_points: bool = False,
                 fake: bool = True) -> PluginManager:
    """A plugin manager holding ``plugins`` (name, module) plus the fake scheduler.

    With ``entry_points`` the installed plugins are loaded too (as ``bench`` does).
    """
    extra = list(plugins)
    if fake:
        extra.append(("fake", fake_scheduler))
    return get_plugin_manager(load_entry_points=entry_points, extra=extra)


def make_recipe(**overrides: Any) -> dict[str, Any]:
    """A recipe dict: the base recipe with top-level keys replaced by ``overrides``."""
    data = copy.deepcopy(BASE_RECIPE)
    data.update(copy.deepcopy(overrides))
    return data


def make_spec(data: dict[str, Any], manager: PluginManager, run_dir: Path | str = "/runs/test",
              overrides: Iterable[str] = ()) -> RunSpec:
    """The (first) RunSpec of a recipe dict; raises RecipeError like ``bench`` does."""
    return load_specs(data, manager, overrides=overrides, run_dir=Path(run_dir))[0]


def plan(data: dict[str, Any], manager: PluginManager, run_dir: Path | str = "/runs/test",
         overrides: Iterable[str] = ()) -> dict[str, Any]:
    """``bench plan`` as data for a recipe dict (no side effects)."""
    from ..runner import Runner

    return Runner(manager, echo=lambda s: None, argv=["bench"]).plan(
        make_spec(data, manager, run_dir, overrides)
    )


def plan_text(data: dict[str, Any], manager: PluginManager, run_dir: Path | str = "/runs/test",
              overrides: Iterable[str] = ()) -> str:
    """``bench plan`` as the text it prints (for golden files)."""
    from ..cli import format_plan

    return format_plan(plan(data, manager, run_dir, overrides))


def recipe_errors(data: dict[str, Any], manager: PluginManager,
                  overrides: Iterable[str] = ()) -> list[str]:
    """The error lines ``bench`` reports for a recipe dict (``[]`` if it is valid)."""
    try:
        load_specs(data, manager, overrides=overrides, run_dir=Path("/runs/test"))
    except RecipeError as exc:
        return list(exc.lines)
    return []


def assert_golden(path: Path | str, text: str) -> None:
    """Compare ``text`` with the golden file; ``BENCH_UPDATE_GOLDEN=1`` rewrites it."""
    path = Path(path)
    if os.environ.get(UPDATE_GOLDEN_ENV) or not path.exists():
        if not os.environ.get(UPDATE_GOLDEN_ENV) and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            raise AssertionError(f"golden file {path} did not exist; written now, check it in")
        path.write_text(text)
        return
    expected = path.read_text()
    if expected != text:
        import difflib

        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            str(path), "actual"))
        raise AssertionError(f"output differs from golden file {path} "
                             f"(rerun with {UPDATE_GOLDEN_ENV}=1 to accept):\n{diff}")
