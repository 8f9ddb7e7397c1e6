"""A ``fake`` scheduler for unit tests: N nodes with G GPUs each, nothing is ever started.

Its launcher describes commands like the local one and refuses to start anything, so backend
tests can plan multi-node deployments (GPU maps, ports, generated configs) without a cluster.
"""

from __future__ import annotations

from pathlib import Path

from attrs import field, frozen, validators as v

from .. import hookimpl
from ..launcher import Launcher, PortAllocator, shell_join
from ..records import Allocation, Node, ProcessSpec, SchedulerInfo

NAME = "fake"


@frozen(kw_only=True)
class FakeOptions:
    nodes: int = field(default=1, validator=v.ge(1))
    gpus_per_node: int = field(default=4, validator=v.ge(0))
    port_base: int = 8000


class FakeLauncher(Launcher):
    def _start(self, spec: ProcessSpec, log_path: Path) -> None:
        raise AssertionError("the fake scheduler starts nothing; use it with bench plan only")

    def poll(self, handle):
        return None

    def stop_all(self, grace_s):
        return []

    def describe(self, spec: ProcessSpec) -> list[str]:
        env = dict(spec.env)
        if spec.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, spec.gpus))
        words = (["env"] + [f"{k}={val}" for k, val in sorted(env.items())]) if env else []
        nodes = ",".join(self.allocation.nodes[i].name for i in spec.nodes)
        return [f"[{nodes} x{spec.ntasks_per_node}] " + shell_join(words + list(spec.argv))]


@hookimpl
def bench_register_schedulers():
    return [SchedulerInfo(name=NAME, options_type=FakeOptions, description="test kit: planned nodes")]


@hookimpl
def bench_allocate(spec, dry_run):
    if spec.scheduler != NAME:
        return None
    o = spec.options_for(NAME) or FakeOptions()
    return Allocation(
        scheduler=NAME,
        job_id="0",
        nodes=[Node(name=f"node{i + 1}", address=f"10.0.0.{i + 11}", gpus=o.gpus_per_node)
               for i in range(o.nodes)],
    )


@hookimpl
def bench_make_launcher(spec, allocation, run_dir):
    if spec.scheduler != NAME:
        return None
    o = spec.options_for(NAME) or FakeOptions()
    return FakeLauncher(allocation, run_dir, PortAllocator(base=o.port_base))
