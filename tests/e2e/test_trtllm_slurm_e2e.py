"""trtllm-serve over the real Slurm cluster with the stand-in: one instance per node, a cross-node
MPI instance over 2 nodes, and a disaggregated deployment over 3 nodes; measured by MLPerf LoadGen
spread over all endpoints and by AIPerf.

The stand-in (``python -m benchstack_trtllm_serve.standin``) is put on the job's PATH under the
real names ``trtllm-serve`` and ``trtllm-llmapi-launch``; the job inherits the environment.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchstack.testing.e2e import load_results

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]


def _have(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


needs_parts = pytest.mark.skipif(
    not (_have("benchstack_trtllm_serve") and _have("mlperf_loadgen") and _have("benchstack_mlperf")),
    reason="needs the trtllm_serve and mlperf plugins and mlcommons-loadgen (scripts/bootstrap)")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from benchstack.tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", name="tiny-llama")


def shims(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "trtllm-serve").write_text(
        f"#!/bin/sh\nexec {sys.executable} -m benchstack_trtllm_serve.standin \"$@\"\n")
    (directory / "trtllm-llmapi-launch").write_text("#!/bin/sh\nexec \"$@\"\n")
    for f in directory.iterdir():
        f.chmod(0o755)
    return directory


def run(slurm_cluster, tmp_path, model, section, nodes, load, sweep, extra=None):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "trt-slurm", "backend": "trtllm_serve", "scheduler": "slurm", "load": load,
        "model": {"name": "tiny-llama", "path": str(model)},
        "trtllm_serve": section,
        "slurm": {"nodes": nodes, "gpus_per_node": 4, "time_limit": "00:15:00", "poll_interval_s": 0.5},
        "sweep": sweep, "ready_timeout_s": 120, "stop_grace_s": 5, **(extra or {}),
    }, sort_keys=False))
    env = slurm_cluster.env()
    env["PATH"] = f"{shims(tmp_path / 'bin')}:{env['PATH']}"
    env.update({"TRTLLM_STANDIN_TTFT_MS": "20", "TRTLLM_STANDIN_ITL_MS": "4"})
    run_dir = tmp_path / "run"
    proc = slurm_cluster.run(slurm_cluster.bench("run", str(recipe), "--run-dir", str(run_dir)),
                             tmp_path, env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    job = (run_dir / "job_id").read_text().strip()
    assert slurm_cluster.wait_job_gone(job) == "COMPLETED"
    slurm_cluster.assert_nothing_left(job, str(run_dir))
    return load_results(run_dir), yaml.safe_load((run_dir / "plan.yaml").read_text())


@needs_parts
def test_one_instance_per_node_mlperf_over_all_endpoints(slurm_cluster, tiny_model, tmp_path):
    data, plan = run(slurm_cluster, tmp_path, tiny_model, {"instances": {"tp": 4}}, 3, "mlperf",
                     {"scenarios": ["Offline"], "isl": 32, "osl": 16, "num_requests": 60})
    assert [p["nodes"] for p in plan["processes"]] == [["node1"], ["node2"], ["node3"]]
    assert len(data["metadata"]["endpoints"]) == 3
    p = data["points"][0]
    assert p["validity"]["valid"], p["validity"]
    assert p["metrics"]["requests_completed"] == 60 and p["metrics"]["requests_failed"] == 0
    # every instance served part of the queries (the SUT spreads them over all endpoints)
    served = p["server_metrics"]["trtllm_serve"]
    assert set(served) == {"instance-0", "instance-1", "instance-2"}
    assert all(v["iterations"] for v in served.values()), served


@needs_parts
def test_cross_node_instance_over_two_nodes(slurm_cluster, tiny_model, tmp_path):
    data, plan = run(slurm_cluster, tmp_path, tiny_model, {"instances": {"tp": 8, "count": 1}}, 2, "mlperf",
                     {"scenarios": ["Offline"], "isl": 32, "osl": 16, "num_requests": 40})
    inst = plan["processes"][0]
    assert inst["nodes"] == ["node1", "node2"] and inst["tasks_per_node"] == 4
    assert "--mpi=pmix" in inst["command"][0] and "trtllm-llmapi-launch trtllm-serve" in inst["command"][0]
    assert data["points"][0]["validity"]["valid"], data["points"][0]["validity"]


@needs_parts
def test_disaggregated_over_three_nodes(slurm_cluster, tiny_model, tmp_path):
    section = {"context": {"servers": 2, "tp": 4, "nodes": [1, 2]},
               "generation": {"servers": 1, "tp": 2, "nodes": [0]}}
    data, plan = run(slurm_cluster, tmp_path, tiny_model, section, 3, "mlperf",
                     {"scenarios": ["Offline"], "isl": 32, "osl": 16, "num_requests": 40})
    where = {p["name"]: p["nodes"] for p in plan["processes"]}
    assert where == {"ctx-0": ["node2"], "ctx-1": ["node3"], "gen-0": ["node1"], "disagg-server": ["node1"]}
    cfg = yaml.safe_load(plan["files"]["configs/disagg.yaml"])
    assert len(cfg["context_servers"]["urls"]) == 2
    p = data["points"][0]
    assert p["validity"]["valid"], p["validity"]
    served = p["server_metrics"]["trtllm_serve"]
    assert served["gen-0"]["iterations"] and (served["ctx-0"]["iterations"] or served["ctx-1"]["iterations"])
