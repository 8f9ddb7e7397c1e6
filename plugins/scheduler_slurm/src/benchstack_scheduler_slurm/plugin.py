"""The ``slurm`` scheduler's hooks.

Outside an allocation ``bench run --scheduler slurm`` submits a batch job whose body runs the
same command in-job (``bench_submit``) and follows it. Inside one (``SLURM_JOB_ID`` set: the
batch job itself, ``salloc``, an interactive step) the driver runs here and adopts the
allocation: nodes from ``SLURM_JOB_NODELIST``, addresses from ``scontrol show node``, GPUs from
``scontrol show job -d``; every process becomes an ``srun --overlap`` step (:mod:`.launcher`).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Mapping

from benchstack import hookimpl
from benchstack.errors import SchedulerError
from benchstack.records import Allocation, Collected, Node, RunSpec, SchedulerInfo

from . import slurmcli
from .follow import submit
from .launcher import GPU_WRAPPER, GPU_WRAPPER_FILE, SlurmLauncher, step_prefix
from .options import SlurmOptions
from .sbatch import SCRIPT, base_run_dir, job_argv, render_sbatch

NAME = "slurm"


def options(spec: RunSpec) -> SlurmOptions:
    return spec.options_for(NAME) or SlurmOptions()


def in_allocation(env: Mapping[str, str] | None = None) -> bool:
    return bool((os.environ if env is None else env).get("SLURM_JOB_ID"))


# --------------------------------------------------------------------------- allocation


def adopt(env: Mapping[str, str], opts: SlurmOptions) -> Allocation:
    """The allocation this process runs in (batch job, salloc shell, ...)."""
    job_id = env["SLURM_JOB_ID"]
    detail = slurmcli.run(["scontrol", "show", "job", "-d", job_id]).stdout
    job = slurmcli.parse_record(detail)
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or job.get("NodeList", "")
    if not nodelist or nodelist == "(null)":
        raise SchedulerError(f"job {job_id} has no nodes yet (state {job.get('JobState', '?')})")
    names = slurmcli.hostnames(nodelist)
    if len(names) < opts.nodes:
        raise SchedulerError(f"job {job_id} has {len(names)} node(s) ({nodelist}) but the recipe "
                             f"asks for slurm.nodes={opts.nodes}: allocate more or lower it")
    records = slurmcli.parse_records(
        slurmcli.run(["scontrol", "show", "node", ",".join(names)]).stdout, "NodeName")
    by_name = {r.get("NodeName"): r for r in records}
    job_gpus = slurmcli.job_gpus_per_node(detail)
    if not any(job_gpus.values()):  # no per-node GRES detail: the job's per-node request
        # 22.05 "gres:gpu:4", later "gres/gpu:4"
        per_node = slurmcli.gres_gpu_count(re.sub(r"gres[:/]", "", job.get("TresPerNode", "")))
        job_gpus = {name: per_node for name in names} if per_node else {}
    holds_gpus = any(job_gpus.values())
    nodes = []
    for name in names:
        rec = by_name.get(name, {})
        addr = rec.get("NodeAddr", "")
        gpus = job_gpus.get(name, 0)
        if not holds_gpus and opts.gpus_per_node:
            gpus = opts.gpus_per_node  # the job asked no GPU GRES; trust the recipe's count
        nodes.append(Node(name=name, address=addr if addr and addr != "(null)" else name, gpus=gpus))
    return Allocation(scheduler=NAME, job_id=job_id, nodes=nodes, info={
        "adopted": True, "job_gpus": holds_gpus, "nodelist": nodelist,
        "job_name": job.get("JobName", ""), "partition": job.get("Partition", ""),
        "account": job.get("Account", ""),
    })


def planned(opts: SlurmOptions) -> Allocation:
    """What a job of ``opts`` would get, for ``bench plan``: placeholders node1..nodeN."""
    gpus = opts.gpus_per_node or 0
    return Allocation(scheduler=NAME, job_id=None,
                      nodes=[Node(name=f"node{i}", address=f"node{i}", gpus=gpus)
                             for i in range(1, opts.nodes + 1)],
                      info={"adopted": False, "job_gpus": gpus > 0})


def render_submission(spec: RunSpec, argv: list[str] | None = None, python: str | None = None,
                      cwd: Path | None = None) -> str:
    """The batch script ``bench run`` would submit for ``spec`` from ``cwd``."""
    run_dir = base_run_dir(spec)
    return render_sbatch(spec, options(spec), job_argv(argv, spec, run_dir, python), run_dir,
                         cwd or Path.cwd())


# --------------------------------------------------------------------------- hooks


@hookimpl
def bench_register_schedulers():
    return [SchedulerInfo(name=NAME, options_type=SlurmOptions,
                          description="Slurm: sbatch job (or the allocation bench runs in), "
                                      "one srun step per process, pyxis containers")]


@hookimpl
def bench_submit(spec, argv, detach):
    if spec.scheduler != NAME or in_allocation():
        return None  # in-job: this process is the driver
    return submit(spec, options(spec), argv, detach)


@hookimpl
def bench_allocate(spec, dry_run):
    if spec.scheduler != NAME:
        return None
    opts = options(spec)
    if in_allocation():
        return adopt(os.environ, opts)
    if dry_run:
        return planned(opts)
    raise SchedulerError("not inside a Slurm allocation (SLURM_JOB_ID is not set): `bench run "
                         "--scheduler slurm` submits a batch job, or run it inside `salloc`")


@hookimpl
def bench_make_launcher(spec, allocation, run_dir):
    if spec.scheduler != NAME:
        return None
    return SlurmLauncher(allocation, run_dir, options(spec),
                         job_gpus=bool(allocation.info.get("job_gpus")))


@hookimpl
def bench_render_submission(spec, allocation):
    if spec.scheduler != NAME:
        return None
    if allocation.info.get("adopted"):
        return {SCRIPT: f"# nothing to submit: bench runs inside job {allocation.job_id} "
                        f"({allocation.info.get('nodelist')}) and adopts it\n"}
    return {SCRIPT: render_submission(spec, argv=sys.argv), GPU_WRAPPER_FILE: GPU_WRAPPER}


@hookimpl
def bench_collect(spec, point):
    if spec.scheduler != NAME or point is not None or not in_allocation():
        return None
    job_id = os.environ["SLURM_JOB_ID"]
    proc = slurmcli.run(["scontrol", "show", "job", job_id], check=False)
    job = slurmcli.parse_record(proc.stdout) if proc.returncode == 0 else {}
    version = slurmcli.run(["scontrol", "--version"], check=False).stdout.strip()
    return Collected(plugin=NAME, metadata={
        "job_id": job_id,
        "job_name": job.get("JobName"),
        "job_state": job.get("JobState"),
        "nodelist": job.get("NodeList") or os.environ.get("SLURM_JOB_NODELIST"),
        "nodes": slurmcli.hostnames(job["NodeList"]) if job.get("NodeList") else [],
        "partition": job.get("Partition"),
        "account": job.get("Account"),
        "batch": job.get("BatchFlag") == "1",
        "slurm_version": version.split()[-1] if version else None,
    })


@hookimpl
def bench_teardown(spec, allocation):
    """Belt and braces after the launcher: no step of this run may outlive it."""
    if spec.scheduler != NAME or allocation is None or not allocation.job_id:
        return None
    prefix = step_prefix(Path(spec.run_dir))
    steps = slurmcli.list_steps(str(allocation.job_id)) or []
    for sid, name in steps:
        if name.startswith(prefix):
            slurmcli.run(["scancel", "-Q", "--signal=KILL", sid], check=False)
    return None
