"""Test fixtures for the real local Slurm cluster (``tests/slurm/start-cluster.sh``).

Loaded by path from this directory's conftest and from ``tests/e2e/conftest.py``. The
``slurm_cluster`` fixture starts the cluster when ``sinfo`` does not answer and we are root
(else it skips, saying why), and stops it at the end only if it started it
(``BENCH_SLURM_KEEP=1`` keeps it). ``Cluster`` runs ``bench`` the way a user does and checks
that no step and no process of a run is left anywhere.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchstack.testing.e2e import processes_mentioning

REPO = Path(__file__).resolve().parents[3]
START = REPO / "tests" / "slurm" / "start-cluster.sh"
STOP = REPO / "tests" / "slurm" / "stop-cluster.sh"
PROBE = Path(__file__).resolve().parent / "probe" / "benchstack_slurm_probe.py"


def sinfo_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%n"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip())


class Cluster:
    """The running cluster, and helpers to run bench on it and inspect what a run left."""

    def __init__(self) -> None:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N|%o|%G"], capture_output=True, text=True,
                             check=True).stdout
        self.nodes: list[str] = []
        self.addresses: dict[str, str] = {}  # NodeAddr: own per node with namespaces, else shared
        self.gpus: dict[str, int] = {}
        for line in out.split():
            name, addr, gres = line.split("|")
            if name not in self.nodes:
                self.nodes.append(name)
            self.addresses[name] = addr
            self.gpus[name] = int(gres.split(":")[-1].split("(")[0]) if gres.startswith("gpu") else 0

    # ------------------------------------------------------------------ running bench
    def env(self, probe_dir: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env.pop("BENCHSTACK_BLOCK_PLUGINS", None)
        if probe_dir is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(probe_dir)] + ([env["PYTHONPATH"]]
                                                                     if env.get("PYTHONPATH") else []))
        return env

    def bench(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "benchstack.cli", *args]

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 180
            ) -> subprocess.CompletedProcess:
        """Run to the end; past ``timeout``, Ctrl-C it (so it cancels its job) and fail."""
        proc = self.popen(argv, cwd, env)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=120)
            finally:
                if proc.poll() is None:
                    proc.kill()
            raise AssertionError(f"{' '.join(argv)} took over {timeout} s:\n{err[-3000:]}") from None
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def popen(self, argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    # ------------------------------------------------------------------ what is left
    @staticmethod
    def steps(job_id: str) -> list[str]:
        out = subprocess.run(["squeue", "-h", "-s", "-j", job_id, "-o", "%i|%j"],
                             capture_output=True, text=True).stdout
        return [ln for ln in out.splitlines() if ln.strip() and not ln.split("|")[0].endswith(".batch")
                and not ln.split("|")[0].endswith(".extern")]

    @staticmethod
    def job_state(job_id: str) -> str:
        out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True,
                             text=True).stdout
        for word in out.split():
            if word.startswith("JobState="):
                return word.split("=", 1)[1]
        return ""

    @staticmethod
    def processes(marker: str) -> list[str]:
        """Live processes whose command line or environment mentions ``marker`` (every node
        shares this kernel, so this sees all of them)."""
        return [cmd for _, cmd in processes_mentioning([marker])]

    def wait_job_gone(self, job_id: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state not in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED"):
                return state
            time.sleep(0.25)
        raise AssertionError(f"job {job_id} still {self.job_state(job_id)} after {timeout} s")

    def assert_nothing_left(self, job_id: str, marker: str) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            steps, procs = self.steps(job_id), self.processes(marker)
            if not steps and not procs:
                return
            time.sleep(0.25)
        raise AssertionError(f"left behind: steps {steps}, processes {procs}")


def write_probe_dist(where: Path) -> Path:
    """A directory that, on PYTHONPATH, installs the probe plugin (module + dist-info)."""
    where.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROBE, where / PROBE.name)
    info = where / "benchstack_slurm_probe-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: benchstack-slurm-probe\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[benchstack.plugins]\nslurmprobe = benchstack_slurm_probe\n")
    return where


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local Slurm cluster; started for the session if needed (root only)."""
    started = False
    if not sinfo_answers():
        if os.geteuid() != 0:
            pytest.skip("no Slurm cluster answers `sinfo`, and starting tests/slurm/start-cluster.sh "
                        "needs root")
        if shutil.which("bash") is None or not START.exists():
            pytest.skip(f"cannot start the cluster: {START} missing")
        proc = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            pytest.fail(f"tests/slurm/start-cluster.sh failed:\n{proc.stdout}\n{proc.stderr}")
        started = True
    try:
        yield Cluster()
    finally:
        if started and not os.environ.get("BENCH_SLURM_KEEP"):
            subprocess.run(["bash", str(STOP)], capture_output=True, timeout=300)


@pytest.fixture(scope="session")
def probe_dir(tmp_path_factory) -> Path:
    return write_probe_dist(tmp_path_factory.mktemp("probe-plugin"))
