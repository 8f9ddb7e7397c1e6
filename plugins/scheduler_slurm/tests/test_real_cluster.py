"""The Slurm scheduler on a real local cluster (tests/slurm/start-cluster.sh: 3 nodes x 4 GPUs).

Every test runs ``bench`` as a user does (a subprocess; the in-job driver is another one) with
the probe plugin on PYTHONPATH, and ends by checking that no step and no process of the run is
left on any node.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slurm


def write_recipe(tmp_path: Path, marker: str, probe: dict | None = None, slurm: dict | None = None,
                 **top) -> Path:
    data = {
        "name": "probe",
        "backend": "slurmprobe",
        "scheduler": "slurm",
        "load": "slurmprobe",
        "model": {"name": "probe-model", "path": "/nonexistent/model"},
        "slurmprobe": {"marker": marker, **(probe or {})},
        "slurm": {"nodes": 3, "gpus_per_node": 4, "poll_interval_s": 0.5, **(slurm or {})},
        "sweep": {"concurrency": [1], "num_requests": 4, "isl": 8, "osl": 8},
        "ready_timeout_s": 60,
        "stop_grace_s": 3,
        **top,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def marker() -> str:
    return f"probe-{uuid.uuid4().hex[:8]}"


def job_of(run_dir: Path) -> str:
    return (run_dir / "job_id").read_text().strip()


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def wait_for_text(path: Path, pattern: str, proc: subprocess.Popen | None = None,
                  timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and re.search(pattern, path.read_text()):
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"bench exited {proc.returncode} before {pattern!r}: "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not in {path} after {timeout} s")


@contextlib.contextmanager
def following(cluster, recipe: Path, run_dir: Path, tmp_path: Path, probe_dir: Path):
    """``bench run`` in the background; whatever happens, no job of it outlives the test."""
    proc = cluster.popen(cluster.bench("run", str(recipe), "--run-dir", str(run_dir)),
                         tmp_path, cluster.env(probe_dir))
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if (run_dir / "job_id").exists():
            subprocess.run(["scancel", job_of(run_dir)], capture_output=True)


def test_worker_spanning_two_nodes_sees_one_gpu_per_task(slurm_cluster, probe_dir, tmp_path):
    """sbatch + follow: an 8-task MPI worker over node2+node3, two GPU processes sharing node1."""
    mark = marker()
    recipe = write_recipe(tmp_path, mark, {"worker_nodes": [1, 2], "tasks_per_node": 4,
                                           "gpus_per_task": 1, "pair_node": 0})
    run_dir = tmp_path / "run"
    proc = slurm_cluster.run(slurm_cluster.bench("run", str(recipe), "--run-dir", str(run_dir)),
                             tmp_path, slurm_cluster.env(probe_dir))
    assert proc.returncode == 0, proc.stderr
    assert "PERFORMANCE OVERVIEW" in proc.stdout  # the summary, printed by the follower
    assert re.search(r"\[slurm\] job \d+: RUNNING on node\[1-3\]", proc.stderr)
    assert "ready after" in proc.stderr  # streamed from the driver's log

    tasks = re.findall(r"TASK rank=(\d) local=(\d) host=(\w+) cvd=(\S+) pmix=(\S+) ntasks=8",
                       (run_dir / "logs" / "worker.log").read_text())
    assert sorted((int(r), h, c) for r, _, h, c, _ in tasks) == [
        (0, "node2", "0"), (1, "node2", "1"), (2, "node2", "2"), (3, "node2", "3"),
        (4, "node3", "0"), (5, "node3", "1"), (6, "node3", "2"), (7, "node3", "3")]
    assert sorted(p for *_, p in tasks) == [str(i) for i in range(8)]  # one PMIx world
    for i, gpus in enumerate(("0,1", "2,3")):
        log = (run_dir / "logs" / f"pair-{i}.log").read_text()
        assert f"host=node1 cvd={gpus} " in log

    res = results(run_dir)
    job = job_of(run_dir)
    assert res["metadata"]["job_id"] == job and not res["errors"]
    assert [n["address"] for n in res["metadata"]["nodes"]] == [  # NodeAddr, not the name
        slurm_cluster.addresses[n] for n in slurm_cluster.nodes[:3]]
    assert res["metadata"]["collected_slurm"]["nodes"] == slurm_cluster.nodes[:3]
    assert (run_dir / "job.sbatch").exists() and (run_dir / "driver.log").exists()
    assert slurm_cluster.wait_job_gone(job) == "COMPLETED"
    slurm_cluster.assert_nothing_left(job, mark)


def test_adopts_a_salloc_allocation_and_kills_a_server_that_ignores_term(
        slurm_cluster, probe_dir, tmp_path):
    """Inside salloc nothing is submitted: the driver runs here and starts steps in that job."""
    mark = marker()
    recipe = write_recipe(tmp_path, mark, {"worker_nodes": [1], "tasks_per_node": 2,
                                           "gpus_per_task": 2, "ignore_term": True},
                          slurm={"nodes": 2}, stop_grace_s=1)
    run_dir = tmp_path / "run"
    argv = ["salloc", "-N2", "--exclusive", "--gpus-per-node=4", "-J", f"adopt-{mark}",
            *slurm_cluster.bench("run", str(recipe), "--run-dir", str(run_dir))]
    proc = slurm_cluster.run(argv, tmp_path, slurm_cluster.env(probe_dir))
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"Granted job allocation (\d+)", proc.stderr)
    assert m, proc.stderr
    job = m.group(1)
    assert not (run_dir / "job.sbatch").exists()  # adopted, not submitted
    res = results(run_dir)
    assert res["metadata"]["job_id"] == job
    assert res["metadata"]["collected_slurm"]["job_name"] == f"adopt-{mark}"
    assert any("had to KILL after the grace period: server" in e for e in res["errors"])
    log = (run_dir / "logs" / "worker.log").read_text()
    assert sorted(re.findall(r"local=(\d) host=node2 cvd=(\S+)", log)) == [("0", "0,1"), ("1", "2,3")]
    slurm_cluster.wait_job_gone(job)
    slurm_cluster.assert_nothing_left(job, mark)


def test_a_server_that_never_becomes_ready_ends_the_run_with_its_log_tail(
        slurm_cluster, probe_dir, tmp_path):
    mark = marker()
    recipe = write_recipe(tmp_path, mark, {"mode": "never_ready"}, ready_timeout_s=5)
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    proc = slurm_cluster.run(slurm_cluster.bench("run", str(recipe), "--run-dir", str(run_dir)),
                             tmp_path, slurm_cluster.env(probe_dir), timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 3, proc.stderr
    assert "probe deployment not ready after 5 s" in proc.stderr
    assert "loading weights (this server never opens its port)" in proc.stderr  # its log tail
    assert elapsed < 45, f"took {elapsed:.0f} s for a 5 s readiness deadline"
    assert "not ready after 5 s" in results(run_dir)["errors"][0]
    job = job_of(run_dir)
    assert slurm_cluster.wait_job_gone(job) == "FAILED"
    slurm_cluster.assert_nothing_left(job, mark)


def test_ctrl_c_on_bench_run_cancels_the_job_and_keeps_what_was_measured(
        slurm_cluster, probe_dir, tmp_path):
    mark = marker()
    recipe = write_recipe(tmp_path, mark, {"worker_nodes": [1, 2], "hold_s": 300},
                          sweep={"concurrency": [1, 2], "num_requests": 4, "isl": 8, "osl": 8})
    run_dir = tmp_path / "run"
    with following(slurm_cluster, recipe, run_dir, tmp_path, probe_dir) as proc:
        wait_for_text(run_dir / "driver.log", r"point c1: slurmprobe", proc)
        job = job_of(run_dir)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    assert f"cancelling job {job}" in err
    assert slurm_cluster.wait_job_gone(job) != "RUNNING"
    res = results(run_dir)
    assert any("stopped by signal SIGTERM" in e for e in res["errors"]), res["errors"]
    slurm_cluster.assert_nothing_left(job, mark)


def test_scancel_of_the_job_ends_the_run_with_a_clear_error(slurm_cluster, probe_dir, tmp_path):
    mark = marker()
    recipe = write_recipe(tmp_path, mark, {"worker_nodes": [2], "hold_s": 300},
                          sweep={"concurrency": [1, 2], "num_requests": 4, "isl": 8, "osl": 8})
    run_dir = tmp_path / "run"
    with following(slurm_cluster, recipe, run_dir, tmp_path, probe_dir) as proc:
        wait_for_text(run_dir / "driver.log", r"point c1: slurmprobe", proc)
        job = job_of(run_dir)
        subprocess.run(["scancel", job], check=True)
        out, err = proc.communicate(timeout=90)
    assert proc.returncode == 3, err
    assert f"error: job {job} was cancelled" in err and str(run_dir) in err
    assert slurm_cluster.wait_job_gone(job) == "CANCELLED"
    assert (run_dir / "results.json").exists()
    slurm_cluster.assert_nothing_left(job, mark)


def test_a_node_failing_mid_run_ends_it_with_a_clear_error(slurm_cluster, probe_dir, tmp_path):
    mark = marker()
    recipe = write_recipe(tmp_path, mark, {"worker_nodes": [2], "hold_s": 300})
    run_dir = tmp_path / "run"
    node = slurm_cluster.nodes[2]
    try:
        with following(slurm_cluster, recipe, run_dir, tmp_path, probe_dir) as proc:
            wait_for_text(run_dir / "driver.log", r"point c1: slurmprobe", proc)
            job = job_of(run_dir)
            subprocess.run(["scontrol", "update", f"nodename={node}", "state=down",
                            "reason=benchstack-test"], check=True)
            out, err = proc.communicate(timeout=90)
    finally:
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"],
                       capture_output=True)
        _wait_idle(node)
    assert proc.returncode == 3, err
    assert f"error: job {job} ended NODE_FAIL" in err
    assert (run_dir / "results.json").exists()
    slurm_cluster.assert_nothing_left(job, mark)


def _wait_idle(node: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], capture_output=True,
                             text=True).stdout.strip()
        if out == "idle":
            return
        time.sleep(0.3)
    raise AssertionError(f"{node} is {out!r}, not idle, {timeout} s after the test")


def test_detach_returns_the_job_and_run_dir_at_once(slurm_cluster, probe_dir, tmp_path):
    mark = marker()
    recipe = write_recipe(tmp_path, mark)
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    proc = slurm_cluster.run(slurm_cluster.bench("run", str(recipe), "--run-dir", str(run_dir),
                                                 "--detach"),
                             tmp_path, slurm_cluster.env(probe_dir))
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 30
    info = yaml.safe_load(proc.stdout)
    assert Path(info["run_dir"]) == run_dir and str(info["job_id"]) == job_of(run_dir)
    job = str(info["job_id"])
    assert slurm_cluster.wait_job_gone(job, timeout=120) == "COMPLETED"
    assert not results(run_dir)["errors"]
    slurm_cluster.assert_nothing_left(job, mark)


@pytest.mark.slow
def test_a_job_that_reaches_its_time_limit_ends_the_run_clearly(slurm_cluster, probe_dir, tmp_path):
    """A 1-minute job: Slurm TERMs the driver before the end (--signal=B:TERM@15, give or take
    Slurm's 30-60 s timer resolution); it tears down and keeps what it measured."""
    mark = marker()
    recipe = write_recipe(tmp_path, mark, {"hold_s": 300}, slurm={"nodes": 1, "time_limit": "1"})
    run_dir = tmp_path / "run dir"  # a space on purpose: #SBATCH paths are quoted
    proc = slurm_cluster.run(slurm_cluster.bench("run", str(recipe), "--run-dir", str(run_dir)),
                             tmp_path, slurm_cluster.env(probe_dir), timeout=150)
    assert proc.returncode == 3, proc.stderr
    assert "the driver was stopped by SIGTERM before the run ended (its time limit (1) was near)" \
        in proc.stderr
    assert any("stopped by signal SIGTERM" in e for e in results(run_dir)["errors"])
    slurm_cluster.assert_nothing_left(job_of(run_dir), mark)
