"""End to end on the real parts: Dynamo's frontend + mocker workers, etcd + NATS, AIPerf, `bench run`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchstack.testing.e2e import bench, load_results, processes_mentioning

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[3]


def _have(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


needs_dynamo = pytest.mark.skipif(not _have("dynamo.mocker"), reason="ai-dynamo not installed (scripts/bootstrap)")
needs_aiperf = pytest.mark.skipif(not (Path(sys.executable).parent / "aiperf").exists() and not shutil.which("aiperf"),
                                  reason="aiperf not installed (scripts/bootstrap)")
needs_etcd = pytest.mark.skipif(not (shutil.which("etcd") and shutil.which("nats-server")),
                                reason="etcd/nats-server not installed (scripts/bootstrap installs etcd-server, nats-server)")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from benchstack.tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", name="tiny-llama")


def write_recipe(path: Path, model: Path, section: dict, sweep: dict, port_base: int, **extra) -> Path:
    data = {
        "name": path.stem, "backend": "dynamo_trtllm", "scheduler": "local", "load": "aiperf",
        "model": {"name": "tiny-llama", "path": str(model)},
        "dynamo_trtllm": {"worker": "mocker", "namespace": f"e2e_{path.stem}", **section},
        "local": {"port_base": port_base},
        "sweep": sweep, "ready_timeout_s": 120, "stop_grace_s": 5, **extra,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def assert_nothing_left(run_dir: Path, namespace: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        left = processes_mentioning([str(run_dir), f"DYN_NAMESPACE={namespace}"])
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert left == [], f"processes of the run still alive: {left}"


def assert_valid_points(run_dir: Path, concurrencies: list[int], osl: int) -> dict:
    data = load_results(run_dir)
    assert [p["point"]["concurrency"] for p in data["points"]] == concurrencies
    for p in data["points"]:
        m = p["metrics"]
        assert p["validity"]["valid"], p["validity"]
        assert m["requests_failed"] == 0 and m["requests_completed"] == p["point"]["num_requests"]
        assert m["output_tokens"]["mean"] == pytest.approx(osl)  # the mocker honours max_tokens
        assert m["ttft_ms"]["p50"] > 0 and m["itl_ms"]["p50"] > 0
        assert m["output_token_throughput"] > 0
    return data


@needs_dynamo
@needs_aiperf
@needs_etcd
def test_disaggregated_etcd_nats(tmp_path, tiny_model):
    """1 prefill + 1 decode mocker behind the real frontend, etcd + NATS discovery; plan == run."""
    recipe = write_recipe(tmp_path / "disagg.yaml", tiny_model,
                          {"discovery": "etcd", "prefill": {"workers": 1}, "decode": {"workers": 1}},
                          {"concurrency": [1, 4], "isl": 64, "osl": 32, "num_requests": 12}, 23000)
    run_dir = tmp_path / "run"
    plan = bench(["plan", str(recipe), "--run-dir", str(run_dir), "--json"])
    assert plan.returncode == 0, plan.stderr
    assert not run_dir.exists()
    secret = "hf_e2e_secret_value_123"
    r = bench(["run", str(recipe), "--run-dir", str(run_dir)], env={"HF_TOKEN": secret})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PERFORMANCE OVERVIEW" in r.stdout
    data = assert_valid_points(run_dir, [1, 4], 32)
    # the secret reached the servers' environment but no file of the run, nor bench's output
    for f in run_dir.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
    assert secret not in r.stdout + r.stderr
    assert data["metadata"]["total_gpus"] == 2
    assert (run_dir / "pareto.png").stat().st_size > 1000
    assert (run_dir / "points" / "00-c1" / "profile_export_aiperf.json").exists()
    started = yaml.safe_load((run_dir / "plan.yaml").read_text())
    import json

    planned = json.loads(plan.stdout)
    assert started["processes"] == planned["processes"]
    assert started["files"] == planned["files"]
    assert [p["name"] for p in started["processes"]] == ["etcd", "nats", "frontend", "prefill-0", "decode-0"]
    assert_nothing_left(run_dir, "e2e_disagg")


@needs_dynamo
@needs_aiperf
def test_aggregated_file_discovery(tmp_path, tiny_model):
    """Two aggregated mocker workers, file-based discovery (no etcd/NATS)."""
    recipe = write_recipe(tmp_path / "agg.yaml", tiny_model,
                          {"discovery": "file", "aggregated": {"workers": 2}},
                          {"concurrency": [2], "isl": 64, "osl": 16, "num_requests": 10}, 23100)
    run_dir = tmp_path / "run"
    r = bench(["run", str(recipe), "--run-dir", str(run_dir)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert_valid_points(run_dir, [2], 16)
    logs = sorted(p.name for p in (run_dir / "logs").iterdir())
    assert logs == ["aggregated-0.log", "aggregated-1.log", "frontend.log"]
    assert_nothing_left(run_dir, "e2e_agg")


@needs_dynamo
def test_worker_dying_at_startup_ends_run_fast(tmp_path, tiny_model):
    """A decode worker that exits during start-up: clear error naming it, its log tail, no leftovers."""
    recipe = write_recipe(tmp_path / "dies.yaml", tiny_model,
                          {"discovery": "file", "prefill": {"workers": 1},
                           "decode": {"workers": 1, "extra_args": ["--no-such-mocker-flag"]}},
                          {"concurrency": [1], "num_requests": 4}, 23200, ready_timeout_s=300)
    run_dir = tmp_path / "run"
    t = time.monotonic()
    r = bench(["run", str(recipe), "--run-dir", str(run_dir)])
    elapsed = time.monotonic() - t
    assert r.returncode == 3, r.stderr
    assert "server 'decode-0' exited with code" in r.stderr
    assert "no-such-mocker-flag" in r.stderr  # the log tail says why
    assert elapsed < 60, elapsed
    data = load_results(run_dir)
    assert data["points"] == [] and any("decode-0" in e for e in data["errors"])
    assert_nothing_left(run_dir, "e2e_dies")


@needs_dynamo
@needs_aiperf
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_keeps_results_and_leaves_nothing(tmp_path, tiny_model, sig):
    """SIGTERM (scheduler) or Ctrl-C during the second point: first point kept, exit 130, all ended."""
    recipe = write_recipe(tmp_path / f"sig{int(sig)}.yaml", tiny_model,
                          {"discovery": "file", "aggregated": {"workers": 1}},
                          {"concurrency": [1, 2], "isl": 32, "osl": 64, "num_requests": 60}, 23300 + int(sig))
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "benchstack.cli", "run", str(recipe), "--run-dir", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if (run_dir / "points" / "01-c2").exists():
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        time.sleep(1.0)  # let AIPerf start sending the second point's requests
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    data = load_results(run_dir)
    assert [p["label"] for p in data["points"]] == ["c1"]
    assert any("stopped by" in e for e in data["errors"])
    assert_nothing_left(run_dir, f"e2e_sig{int(sig)}")


@needs_dynamo
@needs_aiperf
def test_worker_killed_mid_run_keeps_measured_points(tmp_path, tiny_model):
    """The decode worker dies during the second point: exit 3 naming it, first point kept, nothing left."""
    recipe = write_recipe(tmp_path / "midrun.yaml", tiny_model,
                          {"discovery": "file", "prefill": {"workers": 1}, "decode": {"workers": 1}},
                          {"concurrency": [1, 2], "isl": 32, "osl": 64, "num_requests": 80}, 23400)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "benchstack.cli", "run", str(recipe), "--run-dir", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and not (run_dir / "points" / "01-c2").exists():
            time.sleep(0.2)
        victims = [pid for pid, cmd in processes_mentioning(["DYN_NAMESPACE=e2e_midrun"])
                   if "--disaggregation-mode decode" in cmd]
        assert victims, "decode worker not found"
        os.kill(victims[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, err
    assert "server 'decode-0' exited with code -9" in err
    data = load_results(run_dir)
    assert data["points"][0]["label"] == "c1" and data["points"][0]["validity"]["valid"]
    assert any("decode-0" in e for e in data["errors"])
    assert_nothing_left(run_dir, "e2e_midrun")
