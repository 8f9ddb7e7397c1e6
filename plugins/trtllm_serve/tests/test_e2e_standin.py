"""End to end through `bench run` and the local scheduler, with the trtllm-serve stand-in."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from benchstack.testing.e2e import bench, load_results, processes_mentioning

pytestmark = pytest.mark.e2e
needs_aiperf = pytest.mark.skipif(not (Path(sys.executable).parent / "aiperf").exists() and not shutil.which("aiperf"),
                                  reason="aiperf not installed (scripts/bootstrap)")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from benchstack.tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


def run(tmp_path, model, section, load="aiperf", sweep=None, env=None, **extra):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "trt", "backend": "trtllm_serve", "scheduler": "local", "load": load,
        "model": {"name": "tiny-llama", "path": str(model)},
        "local": {"gpus": 4, "port_base": 24000}, "trtllm_serve": section,
        "sweep": sweep or {"concurrency": [4], "isl": 64, "osl": 32, "num_requests": 24},
        "ready_timeout_s": 60, "stop_grace_s": 5, **extra}))
    run_dir = tmp_path / "run"
    env = {"TRTLLM_STANDIN_TTFT_MS": "20", "TRTLLM_STANDIN_ITL_MS": "4", **(env or {})}
    r = bench(["run", str(recipe), "--run-dir", str(run_dir)], env=env, timeout=300)
    return r, run_dir


def assert_nothing_left(run_dir):
    assert processes_mentioning([str(run_dir)]) == []


@needs_aiperf
def test_local_node_instances_all_endpoints_loaded(tmp_path, tiny_model, standin_path):
    r, run_dir = run(tmp_path, tiny_model, {"instances": {"tp": 2}})  # 4 GPUs -> 2 TP2 instances
    assert r.returncode == 0, r.stdout + r.stderr
    data = load_results(run_dir)
    urls = [e["url"] for e in data["metadata"]["endpoints"]]
    assert len(set(urls)) == 2 and all(u.startswith("http://127.0.0.1:") for u in urls)
    p = data["points"][0]
    assert p["validity"]["valid"] and p["metrics"]["requests_completed"] == 24
    assert p["metrics"]["output_tokens"]["mean"] == pytest.approx(32)
    # both instances served requests (AIPerf spreads over every --url)
    for name in ("instance-0", "instance-1"):
        assert "POST /v1/chat/completions" in (run_dir / "logs" / f"{name}.log").read_text()
    assert "CUDA_VISIBLE_DEVICES=0,1" in (run_dir / "plan.yaml").read_text()
    assert_nothing_left(run_dir)


@needs_aiperf
def test_disaggregated_context_then_generation(tmp_path, tiny_model, standin_path):
    section = {"context": {"servers": 2, "tp": 1}, "generation": {"servers": 1, "tp": 2}}
    r, run_dir = run(tmp_path, tiny_model, section)
    assert r.returncode == 0, r.stdout + r.stderr
    data = load_results(run_dir)
    assert [e["role"] for e in data["metadata"]["endpoints"]] == ["disagg_server"]
    assert data["points"][0]["validity"]["valid"]
    cfg = yaml.safe_load((run_dir / "configs" / "disagg.yaml").read_text())
    assert cfg["context_servers"]["num_instances"] == 2 and len(cfg["generation_servers"]["urls"]) == 1
    # the disaggregated server sent every request to a context server first, then to generation
    ctx_posts = sum((run_dir / "logs" / f"ctx-{i}.log").read_text().count("POST /v1/chat/completions")
                    for i in range(2))
    gen_posts = (run_dir / "logs" / "gen-0.log").read_text().count("POST /v1/chat/completions")
    assert ctx_posts >= 24 and gen_posts >= 24
    per_server = data["points"][0]["server_metrics"]["trtllm_serve"]
    assert set(per_server) == {"ctx-0", "ctx-1", "gen-0"}
    assert per_server["gen-0"]["iterations"] > 0
    assert (run_dir / "points" / "00-c4" / "server-metrics" / "gen-0.perf_metrics.json").exists()
    assert_nothing_left(run_dir)


def test_bad_parallelism_fails_with_the_servers_own_error(tmp_path, tiny_model, standin_path):
    """An extra --tp_size 8 on a 4-GPU instance: the stand-in refuses like TensorRT-LLM does."""
    r, run_dir = run(tmp_path, tiny_model, {"instances": {"tp": 4, "count": 1,
                                                          "extra_args": ["--tp_size", "8"]}})
    assert r.returncode == 3, r.stderr
    assert "server 'instance-0' exited with code" in r.stderr
    assert_nothing_left(run_dir)
