"""Every recipe under examples/ loads and plans with the installed plugins (no side effects)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchstack.testing.e2e import bench

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("recipe", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_plans(recipe, tmp_path):
    run_dir = tmp_path / "run"
    r = bench(["plan", str(recipe), "--run-dir", str(run_dir)], timeout=120)
    assert r.returncode == 0, r.stderr
    assert "## processes" in r.stdout and "## endpoints" in r.stdout
    assert not run_dir.exists()


def test_examples_exist():
    assert {p.stem for p in EXAMPLES} >= {"quickstart", "seed000_trtllm_cross_node", "seed001_trtllm_disagg",
                                          "seed003_vllm_nixl", "seed004_dynamo_gb200"}
