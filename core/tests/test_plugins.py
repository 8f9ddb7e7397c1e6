"""Plugin manager: entry points, broken plugins, conflicts, unknown names, `bench plugins`."""

from __future__ import annotations

import importlib.metadata as md
import json
import sys
import types

import pytest
from click.testing import CliRunner

import benchstack.plugins as plugins_mod
from benchstack import hookimpl
from benchstack.cli import cli
from benchstack.errors import PluginError
from benchstack.records import BackendInfo


def _module(name: str, backend: str | None = None, body: str = "") -> str:
    """Create an importable module (in sys.modules) providing ``backend``; return its name."""
    mod = types.ModuleType(name)
    if backend:
        @hookimpl
        def bench_register_backends():
            return [BackendInfo(name=backend, description=f"{backend} from {name}")]

        mod.bench_register_backends = bench_register_backends
    sys.modules[name] = mod
    return name


@pytest.fixture
def entry_points(monkeypatch):
    """Replace the installed entry points with the given (name, module path) pairs."""

    def install(*pairs):
        eps = [md.EntryPoint(name=n, value=v, group=plugins_mod.ENTRY_POINT_GROUP) for n, v in pairs]
        monkeypatch.setattr(plugins_mod, "_entry_points", lambda: eps)

    return install


def test_entry_points_are_loaded(entry_points):
    entry_points(("good", _module("bs_test_good", "goodbackend")))
    pm = plugins_mod.get_plugin_manager()
    assert pm.info("backend", "goodbackend").description == "goodbackend from bs_test_good"
    assert [r.name for r in pm.records] == ["good"]


def test_broken_plugin_is_reported_and_skipped(entry_points):
    entry_points(("good", _module("bs_test_good2", "goodbackend")), ("broken", "bs_test_missing_module"))
    pm = plugins_mod.get_plugin_manager()
    assert [f.name for f in pm.failures] == ["broken"]
    assert "ModuleNotFoundError" in pm.failures[0].error
    assert "goodbackend" in pm.infos()["backend"]


def test_broken_plugin_raises_when_selected(entry_points):
    entry_points(("broken", "bs_test_missing_module"))
    with pytest.raises(PluginError, match="plugin 'broken' .* failed to load: ModuleNotFoundError"):
        plugins_mod.get_plugin_manager(selected=["broken"])


def test_unknown_name_lists_choices(entry_points):
    entry_points(("a", _module("bs_test_a", "alpha")), ("b", _module("bs_test_b", "beta")))
    pm = plugins_mod.get_plugin_manager()
    with pytest.raises(PluginError, match="unknown backend 'gamma'; choose one of: alpha, beta"):
        pm.info("backend", "gamma")


def test_name_claimed_twice_names_both_providers(entry_points):
    entry_points(("a", _module("bs_test_c1", "same")), ("b", _module("bs_test_c2", "same")))
    pm = plugins_mod.get_plugin_manager()
    with pytest.raises(PluginError, match="backend 'same' is provided by two plugins: 'a' and 'b'"):
        pm.infos()


def test_block_env_skips_plugin(entry_points, monkeypatch):
    entry_points(("a", _module("bs_test_d", "delta")))
    monkeypatch.setenv(plugins_mod.BLOCK_ENV, "a")
    assert plugins_mod.get_plugin_manager().records == []


def test_misspelled_hook_is_caught(entry_points):
    mod = types.ModuleType("bs_test_typo")

    @hookimpl
    def bench_lanuch_servers(spec):
        return None

    mod.bench_lanuch_servers = bench_lanuch_servers
    sys.modules["bs_test_typo"] = mod
    entry_points(("typo", "bs_test_typo"))
    with pytest.raises(PluginError, match="unknown hook"):
        plugins_mod.get_plugin_manager()


def test_bench_plugins_json_lists_hooks_and_failures(entry_points):
    entry_points(("good", _module("bs_test_e", "echo")), ("broken", "bs_test_missing_module"))
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    good = next(p for p in data["plugins"] if p["name"] == "good")
    assert good["provides"] == {"backend": ["echo"]}
    assert good["hooks"] == ["bench_register_backends"]
    assert data["failed"][0]["name"] == "broken"


def test_installed_builtin_plugins_register(monkeypatch):
    """The real entry points of this checkout: every built-in plugin loads and provides its name."""
    pm = plugins_mod.get_plugin_manager()
    assert not pm.failures, pm.failures
    infos = pm.infos()
    assert "local" in infos["scheduler"]
