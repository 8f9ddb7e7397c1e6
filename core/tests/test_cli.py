"""The CLI: one clear line for bad input (no traceback), --debug for tracebacks, --version."""

from __future__ import annotations

import subprocess
import sys

from benchstack import __version__


def bench(*args):
    return subprocess.run([sys.executable, "-m", "benchstack.cli", *args], capture_output=True, text=True,
                          timeout=60)


def test_version():
    r = bench("--version")
    assert r.returncode == 0 and __version__ in r.stdout


def test_bad_recipe_is_one_clear_error(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\nbackend: dynamo_trtllm\nmodel: {name: m, path: /m}\n"
                 "dynamo_trtllm: {aggregated: {workers: 0}}\nsweeep: {}\n")
    r = bench("run", str(p))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert f"error: {p}: " in r.stderr
    assert "'workers' must be >= 1: 0 @ recipe.dynamo_trtllm.aggregated" in r.stderr
    assert "unknown key 'sweeep' @ recipe" in r.stderr


def test_missing_recipe_file(tmp_path):
    r = bench("plan", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "cannot read recipe" in r.stderr and "Traceback" not in r.stderr


def test_unknown_plugin_lists_choices(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\nbackend: dynamo_trtllm\nmodel: {name: m, path: /m}\n"
                 "dynamo_trtllm: {aggregated: {}}\n")
    r = bench("plan", str(p), "--scheduler", "kubernetes")
    assert r.returncode == 2
    assert "unknown scheduler 'kubernetes'; choose one of: " in r.stderr and "local" in r.stderr


def test_debug_shows_traceback(tmp_path):
    r = bench("--debug", "plan", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_plan_is_free_of_side_effects(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\nbackend: dynamo_trtllm\nmodel: {name: m, path: /m}\n"
                 "dynamo_trtllm: {worker: mocker, aggregated: {workers: 2}}\n")
    r = bench("plan", str(p), "--run-dir", str(tmp_path / "run"), "--set", "dynamo_trtllm.discovery=file")
    assert r.returncode == 0, r.stderr
    assert "aggregated-1" in r.stdout and "DYN_DISCOVERY_BACKEND=file" in r.stdout
    assert not (tmp_path / "run").exists()
