"""The Slurm launcher: every process a named ``srun --overlap`` step inside the allocation.

GPU placement. The backend plans GPU ids per node (``ProcessSpec.gpus``, split between the
tasks of a node). Slurm cannot place overlapping steps on chosen GPUs: two ``--overlap`` steps
asking ``--gpus-per-node=2`` on one node *both* get GPUs 0,1 (seen on 22.05). So a GPU step asks
for all of the job's GPUs on its nodes (``--gpus-per-node=G``, which overlapping steps share)
and a tiny POSIX-sh wrapper narrows ``CUDA_VISIBLE_DEVICES`` for each task from
``SLURM_LOCALID`` (``bench-gpus.sh`` in the run directory): planned id *i* becomes the *i*-th
entry of the list Slurm gave the step, so it is also right where Slurm numbers a partial node's
GPUs 2,3 or uses ``ConstrainDevices`` (then 0..n-1). It is plain ``sh`` and the run directory is
mounted into containers at its own path, so it works under pyxis too.

Teardown is by step: ``scancel --signal=TERM JOB.STEP`` for each step of this run (found by
name in ``squeue -s``), ``grace_s`` to end, then ``--signal=KILL``, then a check that no step of
the run is listed any more; the local ``srun`` clients are reaped last.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

from benchstack.errors import SchedulerError
from benchstack.launcher import Launcher, PortAllocator, shell_join
from benchstack.records import Allocation, ProcessSpec, ServerHandle

from . import slurmcli
from .options import SlurmOptions

GPU_WRAPPER_FILE = "bench-gpus.sh"
GPU_WRAPPER = """\
#!/bin/sh
# benchstack: run one task of a Slurm step on its planned GPUs, then exec the command.
# usage: bench-gpus.sh GPUS_OF_LOCAL_TASK_0 GPUS_OF_LOCAL_TASK_1 ... -- COMMAND...
# Planned GPU i is the i-th entry of the CUDA_VISIBLE_DEVICES Slurm gave the step (all the
# job's GPUs on this node), or i itself when Slurm set none.
t=${SLURM_LOCALID:-0}
g=
while [ "$1" != -- ]; do
  [ "$t" -eq 0 ] && g=$1
  t=$((t - 1))
  shift
done
shift
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  IFS=,
  m=
  for i in $g; do
    n=0
    d=
    for c in $CUDA_VISIBLE_DEVICES; do
      [ "$n" -eq "$i" ] && d=$c
      n=$((n + 1))
    done
    if [ -z "$d" ]; then
      echo "benchstack: GPU $i is not among CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES of this step" >&2
      exit 97
    fi
    m=$m${m:+,}$d
  done
  unset IFS
  g=$m
fi
export CUDA_VISIBLE_DEVICES="$g"
exec "$@"
"""

# srun reads these as defaults for the step; every step here says its own shape on the command
# line, so an allocation's --ntasks/--gpus-per-task must not leak into steps through them
STEP_SHAPING_ENV = ("SLURM_NTASKS", "SLURM_NPROCS", "SLURM_NTASKS_PER_NODE", "SLURM_GPUS",
                    "SLURM_GPUS_PER_TASK", "SLURM_GPUS_PER_NODE", "SLURM_TRES_PER_TASK",
                    "SLURM_DISTRIBUTION", "SLURM_CPUS_PER_GPU", "SLURM_MEM_PER_GPU")


def run_token(run_dir: Path) -> str:
    """Six hex digits naming one run's steps (stable for a run directory)."""
    return hashlib.sha1(str(run_dir).encode()).hexdigest()[:6]


def step_prefix(run_dir: Path) -> str:
    return f"bench-{run_token(Path(run_dir))}."


class SlurmLauncher(Launcher):
    """Starts each ProcessSpec as ``srun --overlap ...`` (a subprocess of the driver)."""

    def __init__(self, allocation: Allocation, run_dir: Path, opts: SlurmOptions,
                 job_gpus: bool):
        self._ports_by_address: dict[str, set[int]] = {}
        first, end = opts.port_range(allocation.job_id)
        super().__init__(allocation, run_dir,
                         PortAllocator(base=first, limit=end, is_free=self._port_unused))
        self.opts = opts
        self.job_gpus = job_gpus  # the job holds GPU GRES (steps may then ask for them)
        self.prefix = step_prefix(self.run_dir)
        self._procs: dict[str, subprocess.Popen] = {}

    def _port_unused(self, node: int, port: int) -> bool:
        """Nodes that share an address (several slurmd on one host) share its ports too.

        The allocator takes every port this accepts, so accepting records it.
        """
        used = self._ports_by_address.setdefault(self.allocation.nodes[node].address, set())
        if port in used:
            return False
        used.add(port)
        return True

    # ------------------------------------------------------------------ the command
    def step_name(self, spec: ProcessSpec) -> str:
        return self.prefix + spec.name

    def srun_argv(self, spec: ProcessSpec) -> list[str]:
        nodes = [self.allocation.nodes[i] for i in spec.nodes]
        argv = ["srun", "--overlap", f"--job-name={self.step_name(spec)}",
                f"--nodelist={','.join(n.name for n in nodes)}", f"--nodes={len(nodes)}",
                f"--ntasks={spec.ntasks}", f"--ntasks-per-node={spec.ntasks_per_node}"]
        if spec.ntasks > 1:
            mpi = spec.mpi or self.opts.mpi
            argv += [f"--mpi={mpi}", "--label"]
        per_node = min(n.gpus for n in nodes)
        if spec.gpus and self.job_gpus and per_node > 0:
            argv.append(f"--gpus-per-node={per_node}")  # all the job's GPUs there (shared)
        argv.append("--kill-on-bad-exit=1")
        argv += self.container_args(spec)
        if spec.workdir and not self._image(spec):
            argv.append(f"--chdir={spec.workdir}")
        argv += list(self.opts.srun_extra)
        return argv + self.task_argv(spec)

    def task_argv(self, spec: ProcessSpec) -> list[str]:
        """What each task runs: the command, behind the GPU wrapper when it has GPUs."""
        if not spec.gpus:
            return list(spec.argv)
        per_task = [",".join(map(str, spec.gpus_of_task(t))) for t in range(spec.ntasks_per_node)]
        return ["sh", str(self.run_dir / GPU_WRAPPER_FILE), *per_task, "--", *spec.argv]

    def _image(self, spec: ProcessSpec) -> str | None:
        return spec.container_image or self.opts.container_image

    def container_args(self, spec: ProcessSpec) -> list[str]:
        """pyxis flags; the run directory is mounted at its own path (configs, model files)."""
        image = self._image(spec)
        if not image:
            return []
        mounts = [f"{self.run_dir}:{self.run_dir}", *self.opts.container_mounts, *spec.container_mounts]
        names = sorted(set(spec.env) | set(spec.secret_env) | set(self.opts.container_env))
        args = [f"--container-image={image}", f"--container-mounts={','.join(dict.fromkeys(mounts))}"]
        if names:
            # names only: the values come from the srun environment, never from this line
            args.append(f"--container-env={','.join(names)}")
        name = spec.container_name or self.opts.container_name
        if name:
            args.append(f"--container-name={name}")
        if spec.workdir:
            args.append(f"--container-workdir={spec.workdir}")
        return args

    def environment(self, spec: ProcessSpec) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in STEP_SHAPING_ENV}
        env.update(spec.env)
        if self.allocation.job_id:
            env["SLURM_JOB_ID"] = str(self.allocation.job_id)
        return env

    def describe(self, spec: ProcessSpec) -> list[str]:
        env = [f"{k}={v}" for k, v in sorted(spec.env.items())]
        words = (["env", *env] if env else []) + self.srun_argv(spec)
        return [shell_join(words) + f" >{shell_join([str(self.log_path(spec))])} 2>&1"]

    # ------------------------------------------------------------------ start / poll
    def _start(self, spec: ProcessSpec, log_path: Path) -> None:
        argv = self.srun_argv(spec)
        wrapper = self.run_dir / GPU_WRAPPER_FILE
        if spec.gpus and not wrapper.exists():
            wrapper.parent.mkdir(parents=True, exist_ok=True)
            wrapper.write_text(GPU_WRAPPER)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            log.write(f"# {shell_join(argv)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, env=self.environment(spec),
                                        start_new_session=True)
            except OSError as exc:
                raise SchedulerError(f"cannot start srun for {spec.name!r}: {exc.strerror}") from None
        self._procs[spec.name] = proc

    def poll(self, handle: ServerHandle) -> int | None:
        proc = self._procs.get(handle.spec.name)
        return None if proc is None else proc.poll()

    # ------------------------------------------------------------------ teardown
    def run_steps(self) -> dict[str, list[str]]:
        """Step ids of this run still listed by squeue, by step name."""
        if not self.allocation.job_id:
            return {}
        steps = slurmcli.list_steps(str(self.allocation.job_id)) or []
        out: dict[str, list[str]] = {}
        for sid, name in steps:
            if name.startswith(self.prefix):
                out.setdefault(name, []).append(sid)
        return out

    def _signal_steps(self, steps: dict[str, list[str]], sig: str) -> None:
        # one scancel per step: 22.05 reports bogus errors for several step ids in one call
        for ids in steps.values():
            for sid in ids:
                slurmcli.run(["scancel", "-Q", f"--signal={sig}", sid], check=False)

    def _wait_steps_gone(self, timeout: float) -> dict[str, list[str]]:
        deadline = time.monotonic() + timeout
        while True:
            left = self.run_steps()
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.25)

    def stop_all(self, grace_s: float) -> list[str]:
        """TERM every step of the run, KILL what is left after the grace, check none remains."""
        grace = self.opts.grace_s if self.opts.grace_s is not None else grace_s
        if not self._procs:
            return []
        try:
            killed = self._stop_steps(grace)
        except SchedulerError as exc:  # Slurm does not answer: end our srun clients at least
            killed = [f"steps of this run not confirmed gone ({exc})"]
            for proc in self._procs.values():
                _signal(proc, signal.SIGTERM)
            time.sleep(min(grace, 5.0))
        for name, proc in self._procs.items():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    killed.append(f"{name} (srun client still alive)")
        self._procs.clear()
        return killed

    def _stop_steps(self, grace: float) -> list[str]:
        names = {self.step_name(s): s.name for s in self.started if s.name in self._procs}
        steps = self.run_steps()
        self._signal_steps(steps, "TERM")
        for name, proc in self._procs.items():  # no step yet (srun still starting): end srun
            if self.prefix + name not in steps and proc.poll() is None:
                _signal(proc, signal.SIGTERM)
        left = self._wait_steps_gone(grace)
        killed = [names.get(n, n) for n in left]
        if left:
            self._signal_steps(left, "KILL")
            left = self._wait_steps_gone(10.0)
        if left:  # a step that ignores KILL (stuck in D state): cancel it the hard way
            for ids in left.values():
                for sid in ids:
                    slurmcli.run(["scancel", "-Q", sid], check=False)
            left = self._wait_steps_gone(15.0)
        return killed + [f"{names.get(n, n)} (step {','.join(ids)} still listed)"
                         for n, ids in left.items()]


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
