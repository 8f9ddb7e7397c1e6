"""The runner and the local scheduler with real processes: readiness, fail-fast, teardown, plan == run."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from benchstack import hookimpl
from benchstack.errors import ServerFailed, ServerNotReady
from benchstack.probe import models_listed
from benchstack.records import (BackendInfo, Endpoint, LoadgenInfo, LoadResult, Metrics, ProcessSpec,
                                ServerSet, Stat)
from benchstack.runner import Runner
from benchstack.testing import make_manager, make_recipe, make_spec

MODE = {"worker": "ok"}


class webbackend:
    """Serves /v1/models from a directory with python -m http.server; optional failing worker."""

    @staticmethod
    @hookimpl
    def bench_register_backends():
        return [BackendInfo(name="web")]

    @staticmethod
    @hookimpl
    def bench_launch_servers(spec, allocation, launcher):
        if spec.backend != "web":
            return None
        root = launcher.path("www")
        if not launcher.dry_run:
            (root / "v1").mkdir(parents=True, exist_ok=True)
            (root / "v1" / "models").write_text(json.dumps({"data": [{"id": spec.model.name}]}))
        port = launcher.ports.one(0)
        addr = allocation.nodes[0].address
        servers = [launcher.start(ProcessSpec(
            name="web-0", role="frontend", ports=(port,), env={"BENCH_TEST": "1"},
            argv=(sys.executable, "-m", "http.server", "--bind", addr, "--directory", str(root), str(port))))]
        if MODE["worker"] == "dies":
            servers.append(launcher.start(ProcessSpec(
                name="worker-0", role="decode",
                argv=(sys.executable, "-c", "import sys,time; time.sleep(0.5); "
                      "print('RuntimeError: CUDA out of memory (simulated)'); sys.exit(3)"))))
        if MODE["worker"] == "hangs":
            servers.append(launcher.start(ProcessSpec(
                name="worker-0", role="decode", argv=(sys.executable, "-c", "import time; time.sleep(600)"))))
        url = f"http://{addr}:{port}"
        return ServerSet(backend="web", servers=servers, endpoints=[Endpoint(url=url, model=spec.model.name)],
                         total_gpus=1)

    @staticmethod
    @hookimpl
    def bench_discover_endpoints(spec, servers, launcher):
        if spec.backend != "web":
            return None
        url = servers.endpoints[0].url
        need_worker = MODE["worker"] in ("hangs", "dies")  # the worker must register first
        launcher.wait_ready(servers.servers,
                            lambda: "worker never registers" if need_worker else models_listed(url, spec.model.name),
                            what="web deployment", timeout_s=spec.ready_timeout_s)
        return list(servers.endpoints)


class countload:
    """Counts GETs of /v1/models as 'requests' (a fake load generator for runner tests)."""

    @staticmethod
    @hookimpl
    def bench_register_loadgens():
        return [LoadgenInfo(name="count")]

    @staticmethod
    @hookimpl
    def bench_run_load(spec, endpoints, point, out_dir):
        if spec.load != "count":
            return None
        ok = sum(1 for _ in range(point.num_requests) if models_listed(endpoints[0].url, spec.model.name) is True)
        (out_dir / "count.txt").write_text(str(ok))
        m = Metrics(requests_sent=point.num_requests, requests_completed=ok, request_throughput=1.0,
                    output_token_throughput=float(point.osl), output_tokens=Stat(mean=float(point.osl)),
                    itl_ms=Stat(mean=10.0))
        return LoadResult(point=point, tool="count", metrics=m, artifacts=["count.txt"])


@pytest.fixture
def manager():
    MODE["worker"] = "ok"
    return _manager()


def _manager():
    import benchstack.local as local

    return make_manager(("web", webbackend), ("count", countload), ("local", local), fake=False)


def spec_for(manager, tmp_path, **kw):
    data = make_recipe(backend="web", scheduler="local", load="count",
                       local={"port_base": 21000}, ready_timeout_s=kw.pop("ready_timeout_s", 20),
                       stop_grace_s=2)
    data.update(kw)
    return make_spec(data, manager, run_dir=tmp_path / "run")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


class RecordingRunner(Runner):
    """Remembers the launcher so tests can check its processes are gone."""

    def _launcher(self, spec, allocation):
        self.launcher = super()._launcher(spec, allocation)
        self.pids = self.launcher._procs
        return self.launcher


def test_run_writes_results_and_leaves_nothing(manager, tmp_path):
    spec = spec_for(manager, tmp_path)
    runner = RecordingRunner(manager, echo=lambda s: None)
    procs = {}
    orig = runner._run_point

    def spy(*a, **k):
        procs.update({n: p.pid for n, p in runner.launcher._procs.items()})
        return orig(*a, **k)

    runner._run_point = spy
    outcome = runner.run(spec)
    assert outcome.error is None and outcome.valid
    data = json.loads((spec.run_dir / "results.json").read_text())
    assert [p["label"] for p in data["points"]] == ["c1", "c2"]
    assert (spec.run_dir / "summary.txt").read_text().count("PERFORMANCE OVERVIEW") == 2
    assert (spec.run_dir / "results.csv").read_text().count("\n") == 3
    assert (spec.run_dir / "pareto.png").stat().st_size > 1000
    assert (spec.run_dir / "logs" / "web-0.log").exists()
    assert procs and not any(alive(pid) for pid in procs.values())


def test_servers_launched_once_for_all_points(manager, tmp_path):
    spec = spec_for(manager, tmp_path, sweep={"concurrency": [1, 2, 4], "num_requests": 2})
    runner = RecordingRunner(manager, echo=lambda s: None)
    outcome = runner.run(spec)
    assert outcome.error is None
    assert [p.name for p in runner.launcher.started] == ["web-0"]
    log = (spec.run_dir / "logs" / "web-0.log").read_text()
    assert log.count("GET /v1/models") >= 3 * 2  # every point was served by the same server


def test_worker_dying_during_startup_fails_fast_with_log_tail(manager, tmp_path):
    MODE["worker"] = "dies"
    spec = spec_for(manager, tmp_path, ready_timeout_s=60)
    runner = RecordingRunner(manager, echo=lambda s: None)
    t = time.monotonic()
    outcome = runner.run(spec)
    elapsed = time.monotonic() - t
    assert isinstance(outcome.error, ServerFailed)
    assert outcome.error.name == "worker-0"
    assert "CUDA out of memory (simulated)" in str(outcome.error)
    assert elapsed < 10, elapsed  # not the 60 s deadline
    data = json.loads((spec.run_dir / "results.json").read_text())
    assert any("worker-0" in e for e in data["errors"])
    assert not runner.launcher._procs  # stop_all ended and forgot them


def test_never_ready_times_out_with_every_log_tail(manager, tmp_path):
    MODE["worker"] = "hangs"
    spec = spec_for(manager, tmp_path, ready_timeout_s=2)
    runner = RecordingRunner(manager, echo=lambda s: None)
    outcome = runner.run(spec)
    assert isinstance(outcome.error, ServerNotReady)
    assert "not ready after 2 s (worker never registers)" in str(outcome.error)
    assert "worker-0" in str(outcome.error)


def test_plan_equals_what_run_starts(manager, tmp_path):
    spec = spec_for(manager, tmp_path)
    runner = RecordingRunner(manager, echo=lambda s: None)
    planned = runner.plan(spec)
    assert not spec.run_dir.exists()  # plan has no side effects
    runner.run(spec)
    import yaml

    started = yaml.safe_load((spec.run_dir / "plan.yaml").read_text())
    assert started["processes"] == planned["processes"]
    assert started["files"] == planned["files"]
    assert started["endpoints"] == planned["endpoints"]


def test_local_launcher_kills_whole_process_group(manager, tmp_path):
    """A server that forks a child which ignores TERM: the group is KILLed after the grace period."""
    import benchstack.local as local
    from benchstack.records import Allocation, Node

    alloc = Allocation(scheduler="local", nodes=[Node(name="n", address="127.0.0.1")])
    launcher = local.LocalLauncher(alloc, tmp_path, "127.0.0.1", 21500)
    code = ("import os,signal,subprocess,sys,time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import signal,time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(\"child\", flush=True); time.sleep(600)'])\n"
            "print('pid', child.pid, flush=True); time.sleep(600)\n")
    h = launcher.start(ProcessSpec(name="forker", role="x", argv=(sys.executable, "-c", code)))
    launcher.wait_ready([h], lambda: "child" in h.log_path.read_text().splitlines(), what="forker", timeout_s=10)
    child = int(next(line.split()[1] for line in h.log_path.read_text().splitlines() if line.startswith("pid")))
    assert alive(child)
    killed = launcher.stop_all(grace_s=0.5)
    assert killed == ["forker"] or killed == []  # leader exits on TERM; the child needed KILL
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_local_launcher_sets_cuda_visible_devices(tmp_path):
    import benchstack.local as local
    from benchstack.records import Allocation, Node

    alloc = Allocation(scheduler="local", nodes=[Node(name="n", address="127.0.0.1", gpus=4)])
    launcher = local.LocalLauncher(alloc, tmp_path, "127.0.0.1", 21600)
    h = launcher.start(ProcessSpec(name="g", role="x", gpus=(2, 3),
                                   argv=(sys.executable, "-c", "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])")))
    launcher.wait_ready([], lambda: launcher.poll(h) is not None, what="g", timeout_s=10)
    assert h.log_path.read_text().splitlines()[-1] == "2,3"
    assert launcher.describe(h.spec) == [
        f"env CUDA_VISIBLE_DEVICES=2,3 {sys.executable} -c " + "'import os; print(os.environ['\"'\"'CUDA_VISIBLE_DEVICES'\"'\"'])'"]


def test_missing_executable_is_a_clear_error(manager, tmp_path):
    import benchstack.local as local
    from benchstack.errors import SchedulerError
    from benchstack.records import Allocation, Node

    alloc = Allocation(scheduler="local", nodes=[Node(name="n", address="127.0.0.1")])
    launcher = local.LocalLauncher(alloc, tmp_path, "127.0.0.1", 21700)
    with pytest.raises(SchedulerError, match="cannot start 'x'.*no-such-binary"):
        launcher.start(ProcessSpec(name="x", role="x", argv=("no-such-binary", "--flag")))
