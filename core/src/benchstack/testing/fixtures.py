"""The test kit's pytest fixtures; enable them with ``-p benchstack.testing`` (opt-in).

- ``bench_manager``: :func:`~benchstack.testing.make_manager` (a manager with chosen plugins);
- ``bench_recipe``: :func:`~benchstack.testing.make_recipe` (a recipe dict);
- ``bench_cli``: :class:`BenchCli`, ``bench`` run in-process with the installed or chosen plugins;
- ``bench_timed_server``: starts the kit's timed OpenAI server(s), stopped after the test;
- ``bench_no_leftovers``: fails the test if a process started during it outlives it.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml
from click.testing import CliRunner, Result

from .. import cli as cli_module
from ..plugins import get_plugin_manager
from . import fake_scheduler, stubs
from .conformance_live import MARKER_ENV, leftovers
from .kit import make_manager, make_recipe
from .timed_server import TimedServerProcess, start_subprocess


class BenchCli:
    """``bench`` in this process: click's ``CliRunner`` over :data:`benchstack.cli.cli`.

    ``bench_cli("plugins", "--json")`` sees the installed plugins, as ``bench`` does;
    ``bench_cli.use(("sglang", plugin))`` restricts it to the given (name, module) pairs plus the
    kit's ``fake`` scheduler and ``stub`` backend/load generator. A ``dict`` argument is written
    to a recipe file in the test's ``tmp_path`` and replaced by its path.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
        self.tmp_path = tmp_path
        self._plugins: list[tuple[str, Any]] | None = None
        self._entry_points = True
        self._recipes = 0
        # bench builds its manager with benchstack.cli.get_plugin_manager: the one seam used
        monkeypatch.setattr(cli_module, "get_plugin_manager", self._manager)

    def use(self, *plugins: tuple[str, Any], entry_points: bool = False, kit: bool = True) -> "BenchCli":
        """Only ``plugins`` (and, with ``kit``, ``fake`` and ``stub``); installed ones too with
        ``entry_points``."""
        self._plugins = list(plugins) + ([("fake", fake_scheduler), ("stub", stubs)] if kit else [])
        self._entry_points = entry_points
        return self

    def _manager(self, *, load_entry_points: bool = True, extra=(), selected=()):
        if self._plugins is None:
            return get_plugin_manager(load_entry_points=load_entry_points, extra=extra,
                                      selected=selected)
        return get_plugin_manager(load_entry_points=self._entry_points,
                                  extra=[*self._plugins, *extra], selected=selected)

    def recipe(self, data: dict[str, Any], name: str | None = None) -> Path:
        """Write ``data`` as a recipe YAML file under ``tmp_path`` and return its path."""
        self._recipes += 1
        path = self.tmp_path / (name or f"recipe-{self._recipes}.yaml")
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def __call__(self, *args: Any, input: str | None = None) -> Result:
        """Run ``bench ARGS``; the result has ``exit_code``, ``stdout``, ``stderr``, ``output``."""
        words = [str(self.recipe(a) if isinstance(a, dict) else a) for a in args]
        return CliRunner().invoke(cli_module.cli, words, input=input, catch_exceptions=False)

    def json(self, *args: Any) -> Any:
        """Run ``bench ARGS`` (add ``--json`` yourself), require exit 0, parse its stdout."""
        result = self(*args)
        assert result.exit_code == 0, f"bench {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}"
        return json.loads(result.stdout)


@pytest.fixture
def bench_manager() -> Callable[..., Any]:
    """``bench_manager(("name", module), ..., entry_points=False, fake=True)``: a PluginManager."""
    return make_manager


@pytest.fixture
def bench_recipe() -> Callable[..., dict[str, Any]]:
    """``bench_recipe(backend="x", x={...})``: the kit's base recipe with top-level keys replaced."""
    return make_recipe


@pytest.fixture
def bench_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> BenchCli:
    """``bench`` in-process; ``bench_cli.use(...)`` picks the plugins (see :class:`BenchCli`)."""
    return BenchCli(monkeypatch, tmp_path)


@pytest.fixture
def bench_timed_server() -> Iterator[Callable[..., TimedServerProcess]]:
    """``bench_timed_server(model="m", ttft_ms=20, itl_ms=5, ...)``: a running timed server.

    Keyword arguments are :class:`~benchstack.testing.timed_server.TimedConfig` fields; every
    server started is stopped after the test.
    """
    started: list[TimedServerProcess] = []

    def start(**config: Any) -> TimedServerProcess:
        server = start_subprocess(**config)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def bench_no_leftovers(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Marks every process started during the test (an environment token, which it yields) and
    fails the test if one is still running after it; survivors are killed."""
    token = f"bench-test-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv(MARKER_ENV, token)
    yield token
    left = leftovers(token)
    if left:
        pytest.fail(f"{len(left)} process(es) outlived the test (killed now): {'; '.join(left)}")
