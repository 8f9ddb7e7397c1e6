"""End to end over a real multi-node Slurm cluster: `bench run --scheduler slurm` submits a batch
job whose driver starts a disaggregated Dynamo deployment as srun steps spread over three nodes
(etcd, NATS and the frontend on node1, prefill mockers on node2, decode on node3; where the
cluster script could make network namespaces, each node has its own address), drives AIPerf
against it and leaves nothing behind.

Needs the Slurm test cluster (started by the ``slurm_cluster`` fixture: root, Debian's slurm),
ai-dynamo, AIPerf, etcd and nats-server (``scripts/bootstrap``).
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
    not (_have("dynamo.mocker") and _have("benchstack_dynamo_trtllm") and _have("benchstack_aiperf")
         and ((Path(sys.executable).parent / "aiperf").exists() or shutil.which("aiperf"))
         and shutil.which("etcd") and shutil.which("nats-server")),
    reason="needs ai-dynamo, AIPerf, etcd, nats-server and the dynamo_trtllm/aiperf plugins "
           "(scripts/bootstrap)")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from benchstack.tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", name="tiny-llama")


@needs_parts
def test_disaggregated_dynamo_over_three_nodes(slurm_cluster, tiny_model, tmp_path):
    recipe = tmp_path / "disagg.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "slurm-disagg", "backend": "dynamo_trtllm", "scheduler": "slurm", "load": "aiperf",
        "model": {"name": "tiny-llama", "path": str(tiny_model)},
        "dynamo_trtllm": {"worker": "mocker", "discovery": "etcd",
                          "prefill": {"workers": 2, "tp": 1, "nodes": [1]},
                          "decode": {"workers": 1, "tp": 2, "nodes": [2]}},
        "aiperf": {"endpoint_type": "chat", "streaming": True},
        "slurm": {"nodes": 3, "gpus_per_node": 4, "time_limit": "00:15:00", "poll_interval_s": 0.5},
        "sweep": {"concurrency": [1, 4], "isl": 64, "osl": 16, "num_requests": 8},
        "ready_timeout_s": 120, "stop_grace_s": 5,
    }, sort_keys=False))
    run_dir = tmp_path / "run"
    proc = slurm_cluster.run(slurm_cluster.bench("run", str(recipe), "--run-dir", str(run_dir)),
                             tmp_path, slurm_cluster.env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "PERFORMANCE OVERVIEW" in proc.stdout

    # placement: what ran where (plan.yaml is what the driver started)
    plan = yaml.safe_load((run_dir / "plan.yaml").read_text())
    where = {p["name"]: p["nodes"] for p in plan["processes"]}
    assert where == {"etcd": ["node1"], "nats": ["node1"], "frontend": ["node1"],
                     "prefill-0": ["node2"], "prefill-1": ["node2"], "decode-0": ["node3"]}
    gpus = {p["name"]: p["gpus"] for p in plan["processes"]}
    assert gpus["prefill-0"] == [0] and gpus["prefill-1"] == [1] and gpus["decode-0"] == [0, 1]
    for name, node in (("prefill-0", "node2"), ("decode-0", "node3")):
        head = (run_dir / "logs" / f"{name}.log").read_text().splitlines()[0]
        assert head.startswith("# srun --overlap") and f"--nodelist={node} " in head

    # results as for any run: valid points with real numbers, the files next to them
    data = load_results(run_dir)
    md = data["metadata"]
    job = (run_dir / "job_id").read_text().strip()
    assert md["scheduler"] == "slurm" and md["job_id"] == job and not data["errors"]
    addresses = [n["address"] for n in md["nodes"]]
    assert addresses == [slurm_cluster.addresses[n] for n in slurm_cluster.nodes[:3]]  # NodeAddr
    assert md["endpoints"][0]["url"].startswith(f"http://{addresses[0]}:")
    assert md["collected_slurm"]["nodes"] == slurm_cluster.nodes[:3]
    assert [p["point"]["concurrency"] for p in data["points"]] == [1, 4]
    for p in data["points"]:
        m = p["metrics"]
        assert p["validity"]["valid"], p["validity"]
        assert m["requests_completed"] == 8 and m["requests_failed"] == 0
        assert m["output_tokens"]["mean"] == pytest.approx(16)
        assert m["ttft_ms"]["p50"] > 0 and m["itl_ms"]["p50"] > 0 and m["output_token_throughput"] > 0
        assert p["derived"]["output_tokens_per_s_per_gpu"] > 0
    for f in ("summary.txt", "results.csv", "pareto.png", "job.sbatch", "driver.log"):
        assert (run_dir / f).exists(), f

    assert slurm_cluster.wait_job_gone(job) == "COMPLETED"
    slurm_cluster.assert_nothing_left(job, str(run_dir))
