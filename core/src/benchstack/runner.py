"""The runner: stage order, one launch per deployment, teardown always (also on signals)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import attrs
import yaml
from attrs import define, field

from . import __version__
from .errors import BenchError, Interrupted, LoadError, PluginError, ServerFailed
from .launcher import Launcher, PlanLauncher
from .plugins import PluginManager
from .recipe import dump_resolved
from .records import Allocation, Endpoint, LoadResult, RunSpec, ServerSet
from .results import RunRecorder, check_validity, point_record


@define
class Outcome:
    """What one deployment's run left: its directory, whether every point was valid, errors."""

    run_dir: Path
    valid: bool
    error: BaseException | None = None
    killed: list[str] = field(factory=list)
    results: dict | None = None


def _git_state(path: Path) -> dict[str, Any] | None:
    try:
        sha = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain"],
                               capture_output=True, text=True, timeout=5).stdout.strip() != ""
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"commit": sha.stdout.strip(), "dirty": dirty}


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGTERM (and SIGHUP) into :class:`Interrupted` so teardown runs as for Ctrl-C."""

    def handler(signum, frame):
        raise Interrupted(f"stopped by signal {signal.Signals(signum).name}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Defer Ctrl-C and SIGTERM while tearing down, so teardown itself is not cut short."""
    pending: list[int] = []
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, lambda n, f: pending.append(n)) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class Runner:
    """Drives the lifecycle of each deployment through the plugin hooks."""

    def __init__(self, manager: PluginManager, echo: Callable[[str], None] = print,
                 argv: list[str] | None = None):
        self.manager = manager
        self.hook = manager.hook
        self.echo = echo
        self.argv = argv if argv is not None else sys.argv

    # ------------------------------------------------------------------ shared stages
    def _allocate(self, spec: RunSpec, dry_run: bool) -> Allocation:
        allocation = self.hook.bench_allocate(spec=spec, dry_run=dry_run)
        if allocation is None:
            raise PluginError(f"scheduler {spec.scheduler!r} returned no allocation")
        return allocation

    def _launcher(self, spec: RunSpec, allocation: Allocation) -> Launcher:
        launcher = self.hook.bench_make_launcher(spec=spec, allocation=allocation, run_dir=spec.run_dir)
        if launcher is None:
            raise PluginError(f"scheduler {spec.scheduler!r} provides no launcher")
        return launcher

    def _launch(self, spec: RunSpec, allocation: Allocation, launcher: Launcher) -> ServerSet:
        servers = self.hook.bench_launch_servers(spec=spec, allocation=allocation, launcher=launcher)
        if servers is None:
            raise PluginError(f"backend {spec.backend!r} did not launch anything")
        return servers

    # ------------------------------------------------------------------ plan
    def plan(self, spec: RunSpec) -> dict[str, Any]:
        """Everything ``run`` would start, rendered; no side effects."""
        allocation = self._allocate(spec, dry_run=True)
        real = self._launcher(spec, allocation)
        launcher = PlanLauncher(allocation, spec.run_dir, describe_with=real)
        servers = self._launch(spec, allocation, launcher)
        submission = self.hook.bench_render_submission(spec=spec, allocation=allocation) or {}
        return render_plan(spec, allocation, launcher, servers, submission)

    # ------------------------------------------------------------------ run
    def run(self, spec: RunSpec) -> Outcome:
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_inputs(spec)
        recorder = RunRecorder(spec.run_dir, self._metadata(spec))
        allocation: Allocation | None = None
        launcher: Launcher | None = None
        servers: ServerSet | None = None
        error: BaseException | None = None
        killed: list[str] = []
        t0 = time.monotonic()
        with signals_raise():
            try:
                allocation = self._allocate(spec, dry_run=False)
                recorder.update_metadata(
                    job_id=allocation.job_id,
                    nodes=[attrs.asdict(n) for n in allocation.nodes],
                )
                launcher = self._launcher(spec, allocation)
                self.echo(f"launching {spec.backend} on {len(allocation.nodes)} node(s) "
                          f"[{spec.scheduler}]; logs in {spec.run_dir / 'logs'}")
                servers = self._launch(spec, allocation, launcher)
                self._record_started(spec, allocation, launcher, servers)
                recorder.update_metadata(total_gpus=servers.total_gpus,
                                         servers=[s.spec.name for s in servers.servers])
                endpoints = self.hook.bench_discover_endpoints(spec=spec, servers=servers, launcher=launcher)
                if not endpoints:
                    raise PluginError(f"backend {spec.backend!r} found no endpoint")
                self.echo(f"ready after {time.monotonic() - t0:.1f} s: "
                          + ", ".join(f"{e.role} {e.url}" for e in endpoints))
                recorder.update_metadata(endpoints=[attrs.asdict(e) for e in endpoints],
                                         ready_after_s=round(time.monotonic() - t0, 3))
                for point in spec.points:
                    self._run_point(spec, servers, list(endpoints), point, launcher, recorder)
                self._collect(spec, servers, list(endpoints), None, spec.run_dir, recorder)
            except (KeyboardInterrupt, Interrupted) as exc:
                error = exc if isinstance(exc, Interrupted) else Interrupted("stopped by Ctrl-C")
            except BaseException as exc:  # kept in results, re-raised after teardown
                error = exc
            finally:
                with shielded():
                    if launcher is not None:
                        killed = launcher.stop_all(spec.stop_grace_s)
                    try:
                        self.hook.bench_teardown(spec=spec, allocation=allocation, servers=servers)
                    except Exception as exc:  # teardown problems are reported, never hide the run
                        recorder.add_error(f"teardown: {type(exc).__name__}: {exc}")
                    if error is not None:
                        recorder.add_error(_one_line(error))
                    if killed:
                        recorder.add_error("had to KILL after the grace period: " + ", ".join(killed))
                    recorder.update_metadata(end_time=dt.datetime.now().isoformat(timespec="seconds"),
                                             duration_s=round(time.monotonic() - t0, 3))
                    recorder.write()
        return Outcome(run_dir=spec.run_dir, valid=recorder.valid and error is None, error=error,
                       killed=killed, results=recorder.data)

    def _run_point(self, spec, servers, endpoints: list[Endpoint], point, launcher, recorder) -> None:
        out_dir = spec.run_dir / "points" / f"{point.index:02d}-{point.label}"
        out_dir.mkdir(parents=True, exist_ok=True)
        self.echo(f"point {point.label}: {spec.load} isl={point.isl} osl={point.osl} "
                  f"requests={point.num_requests or '-'}")
        t = time.monotonic()
        try:
            result: LoadResult | None = self.hook.bench_run_load(
                spec=spec, endpoints=endpoints, point=point, out_dir=out_dir
            )
        except LoadError:
            # a tool that failed because a server died: report the server (the cause) first
            self._check_alive(servers, launcher, f"load point {point.label}")
            raise
        if result is None:
            raise PluginError(f"load generator {spec.load!r} did not run point {point.label}")
        self._check_alive(servers, launcher, f"load point {point.label}")
        validity = check_validity(result, spec.validity)
        extra = self._collect(spec, servers, endpoints, point, out_dir, recorder)
        record = point_record(result, validity, servers.total_gpus, {"server_metrics": extra})
        record["wall_s"] = round(time.monotonic() - t, 3)
        recorder.add_point(record)
        m = result.metrics
        self.echo(f"point {point.label}: {m.request_throughput or 0:.2f} req/s, "
                  f"{m.output_token_throughput or 0:.1f} tok/s, TTFT p50 {m.ttft_ms.p50 or 0:.1f} ms, "
                  f"ITL p50 {m.itl_ms.p50 or 0:.2f} ms, {m.requests_completed} ok / "
                  f"{m.requests_failed} failed" + ("" if validity.valid else
                                                   "  INVALID: " + "; ".join(validity.reasons)))

    def _check_alive(self, servers: ServerSet, launcher: Launcher, what: str) -> None:
        for h in servers.servers:
            code = launcher.poll(h)
            if code is not None:
                raise ServerFailed(h.spec.name, code, launcher.log_tail(h), what=what)

    def _collect(self, spec, servers, endpoints, point, out_dir, recorder) -> dict[str, Any]:
        gathered: dict[str, Any] = {}
        for c in self.hook.bench_collect(spec=spec, servers=servers, endpoints=endpoints,
                                         point=point, out_dir=out_dir):
            if c is None:
                continue
            gathered[c.plugin] = dict(c.metadata)
            if point is None:
                recorder.update_metadata(**{f"collected_{c.plugin}": dict(c.metadata)})
        return gathered

    # ------------------------------------------------------------------ bookkeeping
    def _write_inputs(self, spec: RunSpec) -> None:
        if spec.recipe_path and Path(spec.recipe_path).exists():
            (spec.run_dir / "recipe.yaml").write_text(Path(spec.recipe_path).read_text())
        (spec.run_dir / "resolved.yaml").write_text(dump_resolved(spec))

    def _record_started(self, spec, allocation, launcher, servers) -> None:
        plan = render_plan(spec, allocation, launcher, servers, {})
        (spec.run_dir / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))

    def _metadata(self, spec: RunSpec) -> dict[str, Any]:
        plugins = {r.name: {"dist": r.dist, "version": r.version} for r in self.manager.records}
        return {
            "name": spec.name,
            "deployment": spec.deployment,
            "backend": spec.backend,
            "scheduler": spec.scheduler,
            "load": spec.load,
            "model": attrs.asdict(spec.model),
            "benchstack_version": __version__,
            "plugins": plugins,
            "command": [os.path.basename(self.argv[0])] + list(self.argv[1:]),
            "cwd_git": _git_state(Path.cwd()),
            "host": platform.node(),
            "python": platform.python_version(),
            "start_time": dt.datetime.now().isoformat(timespec="seconds"),
            "validity_gates": attrs.asdict(spec.validity),
        }


def render_plan(spec: RunSpec, allocation: Allocation, launcher: Launcher, servers: ServerSet,
                submission: dict[str, str]) -> dict[str, Any]:
    """The plan as data: nodes, files, processes (with exact commands), GPU and port map."""
    nodes = allocation.nodes
    procs = []
    for p in launcher.started:
        procs.append({
            "name": p.name,
            "role": p.role,
            "nodes": [nodes[i].name for i in p.nodes],
            "tasks_per_node": p.ntasks_per_node,
            "gpus": list(p.gpus),
            "ports": list(p.ports),
            "command": launcher.describe(p),
        })
    return {
        "run": spec.name,
        "deployment": spec.deployment,
        "backend": spec.backend,
        "scheduler": spec.scheduler,
        "load": spec.load,
        "run_dir": str(spec.run_dir),
        "allocation": {
            "job_id": allocation.job_id,
            "nodes": [{"name": n.name, "address": n.address, "gpus": n.gpus} for n in nodes],
        },
        "submission": dict(submission),
        "files": {f.path: f.content for f in launcher.files},
        "processes": procs,
        "endpoints": [attrs.asdict(e) for e in servers.endpoints],
        "total_gpus": servers.total_gpus,
        "points": [attrs.asdict(p) for p in spec.points],
    }


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, BenchError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
