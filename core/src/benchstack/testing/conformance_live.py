"""The live conformance checks: real processes, then /proc to prove that none is left.

Every process a check starts carries a unique token (in its environment, and in its argv where
the check writes the argv), so whatever survives teardown is found in /proc, reported, and then
killed so that a failing check does not leak processes itself.
"""

from __future__ import annotations

import copy
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from ..errors import ServerFailed
from ..records import Allocation, LoadResult, Metrics, ProcessSpec
from ..results import check_validity
from ..runner import Runner
from .checks import Failed, call, env_set, expect
from .e2e import processes_mentioning
from .factories import make_endpoint

#: environment variable holding the token of a live check (inherited by every child)
MARKER_ENV = "BENCH_CONFORMANCE_TOKEN"

# what the probes print is spelled apart in their code: a launcher may log the command line
_READY, _EXIT = "probe is up", "probe exits with 3"
_GROUP = ("import subprocess, sys, time\n"
          "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', sys.argv[1]])\n"
          "print('probe is', 'up', flush=True)\n"
          "time.sleep(600)\n")
_STUBBORN = ("import signal, time\n"
             "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
             "print('probe is', 'up', flush=True)\n"
             "time.sleep(600)\n")
_QUIT = "import sys; print('probe exits with', 3, flush=True); sys.exit(3)"


def _token() -> str:
    return f"bench-conformance-{uuid.uuid4().hex[:12]}"


def leftovers(needle: str, wait_s: float = 3.0) -> list[str]:
    """Processes still mentioning ``needle`` after up to ``wait_s``; they are then KILLed."""
    deadline = time.monotonic() + wait_s
    found = processes_mentioning([needle])
    while found and time.monotonic() < deadline:
        time.sleep(0.1)
        found = processes_mentioning([needle])
    for pid, _ in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return [f"pid {pid}: {cmd[:100]}" for pid, cmd in found]


def _wait_for(fn: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    value = fn()
    while value is None and time.monotonic() < deadline:
        time.sleep(0.05)
        value = fn()
    return value


# --------------------------------------------------------------------------- backend


def backend_live(s: Any) -> None:
    """A whole run (local scheduler, stub load) passes, and teardown leaves no process."""
    data = copy.deepcopy(s.data)
    data.update(scheduler="local", load="stub")
    spec = s.spec_for(data, "live")
    token = _token()
    with env_set(MARKER_ENV, token):
        outcome = Runner(s.manager, echo=lambda _: None, argv=["bench", "run"]).run(spec)
    left = leftovers(token)
    problems = []
    if outcome.error is not None:
        lines = str(outcome.error).splitlines()
        problems.append(f"the run failed: {' | '.join(lines[:12])}")
    if left:
        problems.append(f"{len(left)} process(es) outlived teardown: {'; '.join(left)}")
    if not (spec.run_dir / "results.json").exists():
        raise Failed("no results.json after the run")
    expect(problems)


# --------------------------------------------------------------------------- scheduler


def scheduler_live(s: Any, python: str) -> None:
    """Start, log, poll and fail fast through the scheduler's launcher; stop_all leaves nothing.

    Three probes: one that starts a child in its own process group (ending only the leader
    would orphan it, as with engines that fork workers), one that ignores SIGTERM (it must be
    KILLed after the grace period and reported), one that prints a line and exits with 3 (poll
    gives 3, its log has the line, wait_ready fails at once). Then bench_teardown, twice.
    """
    spec = s.spec_for(s.data, "live")
    allocation = s.manager.hook.bench_allocate(spec=spec, dry_run=False)
    if not isinstance(allocation, Allocation):
        raise Failed(f"bench_allocate(dry_run=False) returned {allocation!r}, not an Allocation")
    token, problems, launcher, stopped = _token(), [], None, False
    try:
        launcher = s.manager.hook.bench_make_launcher(spec=spec, allocation=allocation,
                                                      run_dir=spec.run_dir)

        def start(name: str, code: str):
            return launcher.start(ProcessSpec(name=name, role="probe", argv=(python, "-c", code, token),
                                              env={MARKER_ENV: token}))

        group, stubborn, quitter = start("group", _GROUP), start("stubborn", _STUBBORN), start("quitter", _QUIT)
        launcher.wait_ready([group, stubborn], lambda: all(
            _READY in launcher.log_tail(h) for h in (group, stubborn)) or f"no {_READY!r} in the logs",
            what="conformance probes", timeout_s=60)
        code = _wait_for(lambda: launcher.poll(quitter), 30)
        if code != 3:
            problems.append(f"poll() of a process that exited with 3 gave {code!r}")
        if _EXIT not in launcher.log_tail(quitter):
            problems.append(f"the log of a process lacks its output: {launcher.log_path(quitter)}")
        if launcher.poll(group) is not None:
            problems.append("poll() of a running process is not None")
        try:
            launcher.wait_ready([quitter], lambda: False, what="an exited probe", timeout_s=10)
            problems.append("wait_ready did not raise ServerFailed for a process that had exited")
        except ServerFailed:
            pass
        killed = launcher.stop_all(1.0)
        stopped = True
        if not any(k.startswith("stubborn") for k in killed):
            problems.append(f"stop_all did not report 'stubborn' (ignores SIGTERM) as killed: {killed}")
    finally:
        if launcher is not None and not stopped:
            launcher.stop_all(1.0)
        left = leftovers(token)
        impl = s.impls.get("bench_teardown")
        if impl is not None:
            for _ in range(2):
                call(impl, spec=spec, allocation=allocation, servers=None)
    if left:
        problems.append(f"stop_all left {len(left)} process(es) running: {'; '.join(left)}")
    expect(problems)


# --------------------------------------------------------------------------- load generator


def loadgen_live(s: Any) -> None:
    """One point against the kit's timed server: right records, every request, nothing left."""
    from .timed_server import start_subprocess

    spec = s.spec
    point = spec.points[0]
    out_dir = spec.run_dir / "points" / f"{point.index:02d}-{point.label}"
    out_dir.mkdir(parents=True, exist_ok=True)
    server = start_subprocess(model=spec.model.name, ttft_ms=2.0, itl_ms=1.0)
    try:
        endpoint = make_endpoint(url=server.url, model=spec.model.name, server="timed")
        result = s.manager.hook.bench_run_load(spec=spec, endpoints=[endpoint], point=point,
                                               out_dir=out_dir)
        truth = server.stats()
    finally:
        server.stop()
    left = leftovers(str(out_dir))
    if not isinstance(result, LoadResult):
        raise Failed(f"bench_run_load returned {result!r:.120}, not a LoadResult")
    problems = [f"{len(left)} process(es) outlived the point: {'; '.join(left)}" if left else ""]
    if result.point != point:
        problems.append(f"LoadResult.point is {result.point}, not the point asked for")
    if not isinstance(result.metrics, Metrics):
        raise Failed(f"LoadResult.metrics is {result.metrics!r:.120}, not Metrics")
    m = result.metrics
    if point.num_requests and m.requests_completed != point.num_requests:
        problems.append(f"{m.requests_completed} requests completed, {point.num_requests} asked for")
    if m.requests_completed > truth["completed"]:
        problems.append(f"{m.requests_completed} completed, but the server served {truth['completed']}")
    if not m.output_token_throughput:
        problems.append("no output token throughput")
    validity = check_validity(result, spec.validity)
    if not validity.valid:
        problems.append(f"the point is invalid: {'; '.join(validity.reasons)}")
    for a in result.artifacts:
        if Path(a).is_absolute() or not (spec.run_dir / a).exists():
            problems.append(f"artifact {a!r} is not a path relative to the run directory")
    if not all(isinstance(w, str) for w in result.command):
        problems.append(f"LoadResult.command must be str words: {result.command!r:.120}")
    expect(problems)
