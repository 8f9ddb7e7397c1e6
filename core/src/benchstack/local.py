"""The ``local`` scheduler: this machine is the one node; every process in its own process group.

Each process gets its own session (so its whole group can be ended: killing only the top PID of
``dynamo.vllm`` or ``vllm serve`` orphans engine processes), its own log file, and
``CUDA_VISIBLE_DEVICES`` set to the GPUs the backend planned for it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from attrs import field, frozen, validators as v

from . import hookimpl
from .errors import SchedulerError
from .launcher import Launcher, PortAllocator, env_prefix, shell_join
from .records import Allocation, Node, ProcessSpec, SchedulerInfo, ServerHandle

NAME = "local"


@frozen(kw_only=True)
class LocalOptions:
    """Recipe section ``local``."""

    address: str = "127.0.0.1"  # where servers bind and are reached
    gpus: int | None = field(default=None, validator=v.optional(v.ge(0)))  # None: count with nvidia-smi
    port_base: int = field(default=18000, validator=[v.ge(1024), v.le(65000)])


def count_gpus() -> int:
    """GPUs on this machine according to ``nvidia-smi -L`` (0 without it)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def port_is_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # servers bind with SO_REUSEADDR, so a port in TIME_WAIT is free for them (and the plan
        # stays equal to the run after a previous run on the same ports)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


class LocalLauncher(Launcher):
    """Runs each ProcessSpec as a subprocess in a new session, its output in its own log."""

    def __init__(self, allocation: Allocation, run_dir: Path, address: str, port_base: int):
        ports = PortAllocator(base=port_base, is_free=lambda node, port: port_is_free(address, port))
        super().__init__(allocation, run_dir, ports)
        self._procs: dict[str, subprocess.Popen] = {}

    def environment(self, spec: ProcessSpec) -> dict[str, str]:
        env = dict(os.environ)
        env.update(spec.env)
        if spec.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in spec.gpus)
        return env

    def describe(self, spec: ProcessSpec) -> list[str]:
        env = dict(spec.env)
        if spec.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in spec.gpus)
        words = ["env"] + [f"{k}={val}" for k, val in sorted(env.items())] if env else []
        cd = [f"cd {shell_join([spec.workdir])} &&"] if spec.workdir else []
        return [" ".join(cd + [shell_join(words + list(spec.argv))])]

    def _start(self, spec: ProcessSpec, log_path: Path) -> None:
        if spec.ntasks > 1:
            raise SchedulerError(
                f"process {spec.name!r} needs {spec.ntasks} tasks; the local scheduler starts one "
                "task per process (use --scheduler slurm for MPI workers)"
            )
        if spec.container_image:
            raise SchedulerError(
                f"process {spec.name!r} names container image {spec.container_image!r}; the local "
                "scheduler runs no containers (remove the image or use --scheduler slurm with pyxis)"
            )
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            log.write(f"# {shell_join(spec.argv)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    list(spec.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.environment(spec),
                    cwd=spec.workdir or None,
                    start_new_session=True,  # own process group: ended group-wide at teardown
                )
            except OSError as exc:
                raise SchedulerError(
                    f"cannot start {spec.name!r}: {exc.strerror}: {spec.argv[0]!r}"
                ) from None
        self._procs[spec.name] = proc

    def poll(self, handle: ServerHandle) -> int | None:
        proc = self._procs.get(handle.spec.name)
        return None if proc is None else proc.poll()

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self._procs.items()}

    def stop_all(self, grace_s: float) -> list[str]:
        """TERM every group (newest first), wait up to ``grace_s``, then KILL what is left."""
        procs = list(reversed(list(self._procs.items())))
        for _, proc in procs:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        killed: list[str] = []
        for name, proc in procs:
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            # the leader may be gone while its children still run: KILL the group regardless
            if proc.poll() is None or _group_alive(proc.pid):
                if proc.poll() is None:
                    killed.append(name)
                _signal_group(proc.pid, signal.SIGKILL)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    killed.append(f"{name} (still alive after KILL)")
        self._procs.clear()
        return killed


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


# --------------------------------------------------------------------------- hooks


@hookimpl
def bench_register_schedulers():
    return [SchedulerInfo(name=NAME, options_type=LocalOptions, description="this machine, one node")]


@hookimpl
def bench_allocate(spec, dry_run):
    if spec.scheduler != NAME:
        return None
    opts: LocalOptions = spec.options_for(NAME) or LocalOptions()
    gpus = opts.gpus if opts.gpus is not None else count_gpus()
    return Allocation(
        scheduler=NAME,
        nodes=[Node(name=socket.gethostname(), address=opts.address, gpus=gpus)],
    )


@hookimpl
def bench_make_launcher(spec, allocation, run_dir):
    if spec.scheduler != NAME:
        return None
    opts: LocalOptions = spec.options_for(NAME) or LocalOptions()
    return LocalLauncher(allocation, run_dir, opts.address, opts.port_base)


@hookimpl
def bench_collect(spec, point):
    if spec.scheduler != NAME or point is not None:
        return None
    from .records import Collected

    return Collected(plugin=NAME, metadata={"gpu": gpu_inventory()})


def gpu_inventory() -> list[dict[str, str]]:
    """GPU model and memory from nvidia-smi, for results metadata ([] without GPUs)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    rows = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            rows.append(dict(zip(("index", "name", "memory", "driver"), parts)))
    return rows


__all__ = ["LocalLauncher", "LocalOptions", "env_prefix"]
