"""The batch script: ``#SBATCH`` lines for the allocation, a body that runs the driver in-job.

The body ``exec``s ``python -m benchstack.cli run ...`` (the same command line the user typed,
``--run-dir`` pinned, ``--detach`` dropped) on the allocation's first node. Because of the
``exec`` the driver *is* the batch shell, so ``scancel --batch --signal=TERM`` and
``--signal=B:TERM@N`` before the time limit reach it directly and it tears down in order.
No secret is written: the job inherits the submitting environment (sbatch's ``--export=ALL``).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Sequence

from benchstack.records import RunSpec

from .options import SlurmOptions, time_limit_seconds

DRIVER_LOG = "driver.log"  # the driver's stderr: progress lines, errors (streamed when following)
DRIVER_OUT = "driver.out"  # the driver's stdout: the summary
SCRIPT = "job.sbatch"

# global options of `bench` (before the subcommand) and run/plan options that take no value
_GLOBAL_FLAGS = {"--debug"}
_DROP_FLAGS = {"--detach", "--json"}


def base_run_dir(spec: RunSpec) -> Path:
    """The run directory the job gets: the recipe's, above its deployment folders."""
    run_dir = Path(spec.run_dir)
    if spec.deployment != "default":
        run_dir = run_dir.parent
    return run_dir if run_dir.is_absolute() else Path.cwd() / run_dir


def job_argv(argv: Sequence[str] | None, spec: RunSpec, run_dir: Path,
             python: str | None = None) -> list[str]:
    """The in-job driver command: ``argv``'s ``bench run|plan ...`` made ``run`` with ``--run-dir``.

    Without a usable ``argv`` (the test kit, an API caller) it is rebuilt from ``spec``.
    """
    python = python or sys.executable
    args = list(argv or [])[1:]
    globals_: list[str] = []
    while args and args[0] in _GLOBAL_FLAGS:
        globals_.append(args.pop(0))
    if args and args[0] in ("run", "plan"):
        rest, out, skip = args[1:], [], False
        for a in rest:
            if skip:
                skip = False
            elif a == "--run-dir":
                skip = True
            elif a.startswith("--run-dir=") or a in _DROP_FLAGS:
                continue
            else:
                out.append(a)
    else:
        recipe = str(spec.recipe_path) if spec.recipe_path else "RECIPE.yaml"
        out = [recipe, "--backend", spec.backend, "--scheduler", spec.scheduler, "--load", spec.load]
    return [python, "-m", "benchstack.cli", *globals_, "run", *out, "--run-dir", str(run_dir)]


def sbatch_lines(spec: RunSpec, opts: SlurmOptions, run_dir: Path, cwd: Path) -> list[str]:
    """The ``#SBATCH`` options, in a fixed order (``sbatch_extra`` last: later lines win)."""
    q = shlex.quote
    lines = [f"--job-name={opts.job_name or 'bench-' + spec.name}", f"--nodes={opts.nodes}"]
    # a benchmark is never re-run behind the user's back (after a node failure, say)
    lines.append("--no-requeue")
    if opts.gpus_per_node:
        lines.append(f"--gpus-per-node={opts.gpus_per_node}")
    if opts.exclusive:
        lines.append("--exclusive")  # every CPU of each node: steps with many tasks fit
    if opts.partition:
        lines.append(f"--partition={opts.partition}")
    if opts.account:
        lines.append(f"--account={opts.account}")
    if opts.time_limit:
        lines.append(f"--time={opts.time_limit}")
        limit = time_limit_seconds(opts.time_limit)
        before = min(opts.term_before_end_s, limit // 4)
        if before > 0:
            # TERM the driver (the batch shell) before the limit so it tears down and writes results
            lines.append(f"--signal=B:TERM@{before}")
    lines += [f"--chdir={q(str(cwd))}", f"--output={q(str(run_dir / DRIVER_OUT))}",
              f"--error={q(str(run_dir / DRIVER_LOG))}"]
    return lines + list(opts.sbatch_extra)


def render_sbatch(spec: RunSpec, opts: SlurmOptions, argv: Sequence[str], run_dir: Path,
                  cwd: Path) -> str:
    """The whole batch script for ``spec`` whose body runs ``argv`` (from :func:`job_argv`)."""
    head = [
        "#!/bin/bash",
        f"# benchstack: {spec.name} ({spec.backend} / {spec.load}), written by benchstack-scheduler-slurm",
        *[f"#SBATCH {line}" for line in sbatch_lines(spec, opts, run_dir, cwd)],
        "#",
        "# The job inherits the submitting environment (sbatch --export=ALL): no secret is written",
        "# here. The driver runs on the allocation's first node and starts every server as an",
        "# `srun --overlap` step; `exec` makes it the batch shell, so TERM reaches it directly.",
        "set -eu",
        'echo "benchstack: job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, driver on $(hostname)" >&2',
        "exec " + " ".join(shlex.quote(a) for a in argv),
    ]
    return "\n".join(head) + "\n"
