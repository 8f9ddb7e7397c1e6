"""Hook specifications: the whole contract between benchstack's core and its plugins.

Stage hooks chosen by name (scheduler, backend, load generator) are ``firstresult``: an
implementation returns ``None`` when the selection in ``spec`` is not its own. Broadcast hooks
(registration, collect, teardown) let every plugin contribute. Implementations may accept any
subset of a hook's arguments, so hooks grow by adding arguments.

Lifecycle, per deployment::

    bench_allocate -> bench_make_launcher -> bench_launch_servers -> bench_discover_endpoints
        -> per load point: bench_run_load, bench_collect(point=...)
    -> bench_collect(point=None) -> bench_teardown (always, also on errors and signals)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .launcher import Launcher
    from .records import (
        Allocation,
        BackendInfo,
        Collected,
        Endpoint,
        LoadgenInfo,
        LoadPoint,
        LoadResult,
        RunSpec,
        SchedulerInfo,
        ServerSet,
    )

PROJECT = "benchstack"
hookspec = pluggy.HookspecMarker(PROJECT)


# =========================================================================== registration


@hookspec
def bench_register_backends() -> "list[BackendInfo]":
    """Return the backends this plugin provides.

    Each ``BackendInfo.options_type`` (an attrs class) is what the recipe section named like the
    backend is structured into, before anything starts; ``spec.options_for(name)`` returns it.
    """


@hookspec
def bench_register_schedulers() -> "list[SchedulerInfo]":
    """Return the schedulers this plugin provides (options as for backends)."""


@hookspec
def bench_register_loadgens() -> "list[LoadgenInfo]":
    """Return the load generators this plugin provides (options as for backends)."""


@hookspec
def bench_validate(spec: "RunSpec") -> "list[str] | None":
    """Cross-field checks of a resolved recipe, before anything starts.

    Return one line per problem, each naming its path (``'workers' must be >= 1: 0 @
    recipe.dynamo_trtllm.decode``). Every plugin is asked; only check what is yours.
    """


# =========================================================================== allocate


@hookspec(firstresult=True)
def bench_allocate(spec: "RunSpec", dry_run: bool) -> "Allocation | None":
    """Return the nodes for this deployment if ``spec.scheduler`` is yours, else ``None``.

    With ``dry_run`` (``bench plan``) describe the allocation you would get without making it.
    """


@hookspec(firstresult=True)
def bench_make_launcher(
    spec: "RunSpec", allocation: "Allocation", run_dir: Path
) -> "Launcher | None":
    """Return the launcher that starts processes on ``allocation`` if it is yours, else ``None``."""


@hookspec(firstresult=True)
def bench_submit(spec: "RunSpec", argv: "list[str]", detach: bool) -> "int | None":
    """Run the driver elsewhere (e.g. as a batch job) if ``spec.scheduler`` is yours and it must.

    Return the run's exit code (or 0 after submitting with ``detach``); return ``None`` to run the
    driver in this process (the local scheduler; Slurm inside an allocation). ``argv`` is the
    ``bench run`` command line the job must run in-job.
    """


@hookspec(firstresult=True)
def bench_render_submission(spec: "RunSpec", allocation: "Allocation") -> "dict[str, str] | None":
    """Scheduler: the files a submission would write (e.g. ``{"job.sbatch": text}``), for plans."""


# =========================================================================== launch + discover


@hookspec(firstresult=True)
def bench_launch_servers(
    spec: "RunSpec", allocation: "Allocation", launcher: "Launcher"
) -> "ServerSet | None":
    """Start the deployment if ``spec.backend`` is yours, else return ``None``.

    Write generated configs with ``launcher.write_file`` and start every process with
    ``launcher.start``; never call subprocess or srun yourself. Wait with ``launcher.wait_ready``
    where a later process needs an earlier one (etcd before workers). Ports come from
    ``launcher.ports``. Called once per deployment; the servers serve every load point.
    Under ``bench plan`` the launcher records instead of starting, and waits return at once.
    """


@hookspec(firstresult=True)
def bench_discover_endpoints(
    spec: "RunSpec", servers: "ServerSet", launcher: "Launcher"
) -> "list[Endpoint] | None":
    """Wait until the deployment really serves, then return its endpoints (``None`` if not yours).

    Ready means: every server's health endpoint answers, the model is listed, and routers report
    the expected number of workers of each role. Use ``launcher.wait_ready`` so that a server
    that exits fails the run at once with its log tail, and keep to ``spec.ready_timeout_s``.
    """


# =========================================================================== load


@hookspec(firstresult=True)
def bench_run_load(
    spec: "RunSpec", endpoints: "list[Endpoint]", point: "LoadPoint", out_dir: Path
) -> "LoadResult | None":
    """Drive one load point against ``endpoints`` if ``spec.load`` is yours, else ``None``.

    Keep the tool's own artifacts under ``out_dir`` and return normalised metrics (ms, per
    second). Raise :class:`benchstack.errors.LoadError` if the tool itself failed.
    """


# =========================================================================== collect + teardown


@hookspec
def bench_collect(
    spec: "RunSpec",
    servers: "ServerSet",
    endpoints: "list[Endpoint]",
    point: "LoadPoint | None",
    out_dir: Path,
) -> "Collected | None":
    """Add metadata and artifacts to the results.

    Called after each load point (``point`` set, ``out_dir`` is the point's directory: e.g.
    scrape server metrics) and once at the end of the deployment (``point`` is ``None``).
    """


@hookspec
def bench_teardown(
    spec: "RunSpec", allocation: "Allocation | None", servers: "ServerSet | None"
) -> None:
    """Undo what you did beyond starting processes (temporary files, an allocation you made).

    Always called, also after errors, Ctrl-C and SIGTERM. The launcher has already ended every
    process it started. Must not raise for something that is already gone.
    """
