"""The dry conformance checks: plans and records, with nothing started.

``s`` is the :class:`benchstack.testing.conformance.Session` of the plugin under check.
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from attrs import define

from ..launcher import Launcher, PlanLauncher
from ..plugins import PluginManager
from ..records import Allocation, Endpoint, FileSpec, ProcessSpec, ServerHandle, ServerSet
from ..runner import Runner, render_plan
from .checks import Failed, call, env_set, expect, no_side_effects, process_problems, short

# --------------------------------------------------------------------------- backend


@define
class Planned:
    allocation: Allocation
    launcher: PlanLauncher
    servers: ServerSet
    rendered: dict[str, Any]


def plan_parts(manager: PluginManager, spec: Any) -> Planned:
    """``bench plan`` step by step (as :meth:`Runner.plan`), keeping the launcher and records."""
    hook = manager.hook
    allocation = hook.bench_allocate(spec=spec, dry_run=True)
    if not isinstance(allocation, Allocation):
        raise Failed(f"scheduler {spec.scheduler!r} gave {short(allocation)}, not an Allocation")
    real = hook.bench_make_launcher(spec=spec, allocation=allocation, run_dir=spec.run_dir)
    if not isinstance(real, Launcher):
        raise Failed(f"scheduler {spec.scheduler!r} gave {short(real)}, not a Launcher")
    launcher = PlanLauncher(allocation, spec.run_dir, describe_with=real)
    servers = hook.bench_launch_servers(spec=spec, allocation=allocation, launcher=launcher)
    if not isinstance(servers, ServerSet):
        raise Failed(f"bench_launch_servers returned {short(servers)}, not a ServerSet")
    submission = hook.bench_render_submission(spec=spec, allocation=allocation) or {}
    return Planned(allocation, launcher, servers, render_plan(spec, allocation, launcher, servers,
                                                              submission))


def backend_plan(s: Any) -> Planned:
    with no_side_effects(s.spec.run_dir) as side:
        try:
            first = plan_parts(s.manager, s.spec)
            second = plan_parts(s.manager, s.spec)
        except OSError:  # what the guard raised for a refused start: report the start
            expect(side)
            raise
    expect(side)
    if first.rendered != second.rendered:
        keys = [k for k in first.rendered if first.rendered[k] != second.rendered.get(k)]
        raise Failed(f"two plans of one recipe differ in {keys} (module-level state?)")
    try:
        json.dumps(first.rendered)
    except (TypeError, ValueError) as exc:
        raise Failed(f"the plan does not render as JSON (bench plan --json): {exc}") from None
    return first


def backend_records(s: Any, planned: Planned) -> None:
    servers, launcher, spec = planned.servers, planned.launcher, s.spec
    problems = [] if servers.backend == s.name else [
        f"ServerSet.backend is {servers.backend!r}, not {s.name!r}"]
    started = {p.name: p for p in launcher.started}
    for h in servers.servers:
        if not isinstance(h, ServerHandle):
            problems.append(f"ServerSet.servers holds {short(h)}, not a ServerHandle")
        elif started.get(h.spec.name) != h.spec or h.log_path != launcher.log_path(h.spec):
            problems.append(f"server {h.spec.name!r} was not started through launcher.start")
    if not servers.endpoints:
        problems.append("ServerSet.endpoints is empty (where does load go?)")
    for e in servers.endpoints:
        if not isinstance(e, Endpoint):
            problems.append(f"ServerSet.endpoints holds {short(e)}, not an Endpoint")
            continue
        if not e.url.startswith(("http://", "https://")):
            problems.append(f"endpoint URL {e.url!r} is not http(s)")
        if e.model != spec.model.name:
            problems.append(f"endpoint {e.url} serves {e.model!r}, not the recipe's {spec.model.name!r}")
        if e.server is not None and e.server not in started:
            problems.append(f"endpoint {e.url} names server {e.server!r}, which was not started")
    if not isinstance(servers.total_gpus, int) or servers.total_gpus < 0:
        problems.append(f"total_gpus is {servers.total_gpus!r}, not an int >= 0")
    written = {(f.path, f.content) for f in launcher.files}
    problems += [f"file {f.path!r} in ServerSet.files was not written with launcher.write_file"
                 for f in servers.files if not isinstance(f, FileSpec) or (f.path, f.content) not in written]
    expect(problems + process_problems(launcher.started, planned.allocation))


def backend_teardown(s: Any, planned: Planned) -> None:
    impl = s.impls.get("bench_teardown")
    if impl is None:
        return
    for allocation, servers in ((planned.allocation, planned.servers),
                                (planned.allocation, planned.servers), (None, None)):
        call(impl, spec=s.spec, allocation=allocation, servers=servers)


# --------------------------------------------------------------------------- scheduler


def scheduler_allocation(s: Any) -> tuple[Allocation, Launcher]:
    allocation = s.manager.hook.bench_allocate(spec=s.spec, dry_run=True)
    if not isinstance(allocation, Allocation):
        raise Failed(f"bench_allocate(dry_run=True) returned {short(allocation)}, not an Allocation")
    problems = [] if allocation.scheduler == s.name else [
        f"Allocation.scheduler is {allocation.scheduler!r}, not {s.name!r}"]
    names = [n.name for n in allocation.nodes]
    if not names or len(set(names)) != len(names):
        problems.append(f"nodes must be named once each: {names}")
    problems += [f"node {n.name}: address {n.address!r}, gpus {n.gpus!r}" for n in allocation.nodes
                 if not n.address or not isinstance(n.gpus, int) or n.gpus < 0]
    launcher = s.manager.hook.bench_make_launcher(spec=s.spec, allocation=allocation,
                                                  run_dir=s.spec.run_dir)
    if not isinstance(launcher, Launcher):
        raise Failed(f"bench_make_launcher returned {short(launcher)}, not a Launcher")
    ports = launcher.ports.take(0, 3)
    if len(set(ports)) != 3 or not all(isinstance(p, int) and 0 < p < 65536 for p in ports):
        problems.append(f"launcher.ports.take(0, 3) gave {ports}")
    expect(problems)
    return allocation, launcher


SECRET = "BENCH_CONFORMANCE_SECRET"


def scheduler_describe(s: Any, parts: tuple[Allocation, Launcher]) -> None:
    allocation, launcher = parts
    value = f"s3cret-{uuid.uuid4().hex}"
    argv = (sys.executable, "-c", "import sys; print(sys.argv)")
    proc = ProcessSpec(name="probe-0", role="probe", argv=argv, env={"BENCH_VISIBLE": "1"},
                       secret_env=(SECRET,), gpus=(0,) if allocation.nodes[0].gpus else ())
    with env_set(SECRET, value):
        lines = launcher.describe(proc)
        submission = s.manager.hook.bench_render_submission(spec=s.spec, allocation=allocation)
    if not isinstance(lines, list) or not lines or not all(isinstance(x, str) for x in lines):
        raise Failed(f"launcher.describe returned {short(lines)}, not a list of str")
    text = "\n".join(lines)
    problems = [f"launcher.describe does not show {a!r}: {text}" for a in argv if a not in text]
    if value in text:
        problems.append("launcher.describe shows a secret's value (secret_env is by name only)")
    if submission is not None:
        if not isinstance(submission, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in submission.items()):
            problems.append(f"bench_render_submission returned {short(submission)}, not {{str: str}}")
        elif any(value in v for v in submission.values()):
            problems.append("bench_render_submission shows a secret's value")
    expect(problems)


def scheduler_plan(s: Any) -> None:
    plan = Runner(s.manager, echo=lambda _: None, argv=["bench"]).plan(s.spec)
    json.dumps(plan)
    expect([] if [p["name"] for p in plan["processes"]] == ["stub-0"]
           else [f"the stub backend's plan has processes {plan['processes']}"])
