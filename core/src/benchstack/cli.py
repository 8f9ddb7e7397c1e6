"""The ``bench`` command line."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import click
import yaml

from . import __version__
from .errors import BenchError, InvalidResults
from .plugins import get_plugin_manager


class Context:
    def __init__(self, debug: bool):
        self.debug = debug


def _fail(exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(exc)
    code = getattr(exc, "exit_code", 1)
    click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(code)


def selection_options(f):
    """Options shared by ``run`` and ``plan``: they pick plugins and override recipe keys."""
    opts = [
        click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path)),
        click.option("--backend", help="Backend plugin (overrides the recipe's 'backend')."),
        click.option("--scheduler", help="Scheduler plugin (overrides 'scheduler'): local, slurm, ..."),
        click.option("--load", help="Load generator plugin (overrides 'load'): aiperf, mlperf, ..."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override a recipe key, e.g. --set sweep.concurrency=[1,4] "
                          "--set dynamo_trtllm.decode.workers=2 (value parsed as YAML). Repeatable."),
        click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Run directory (default: OUTPUT_DIR/NAME-TIMESTAMP)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _load_specs(recipe: Path, backend, scheduler, load_, overrides, run_dir, allow_invalid=False):
    from .recipe import load_specs, read_yaml

    data = read_yaml(recipe)
    selected = [x for x in (backend or data.get("backend"), scheduler or data.get("scheduler", "local"),
                            load_ or data.get("load", "aiperf")) if isinstance(x, str)]
    manager = get_plugin_manager(selected=selected)
    specs = load_specs(data, manager, recipe_path=recipe, overrides=overrides, backend=backend,
                       scheduler=scheduler, load=load_, run_dir=run_dir, allow_invalid=allow_invalid)
    return manager, specs


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="benchstack")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx, debug):
    """benchstack: benchmark LLM serving stacks, from allocation to a trustworthy result.

    \b
    bench run RECIPE.yaml      allocate, launch, wait until ready, drive load, collect, tear down
    bench plan RECIPE.yaml     show everything run would start; starts nothing
    bench plugins              list installed plugins and what they provide
    bench results RUN_DIR...   summarise, compare and plot runs
    """
    ctx.obj = Context(debug)


@cli.command()
@selection_options
@click.option("--allow-invalid", is_flag=True, help="Exit 0 even if a point is invalid.")
@click.option("--detach", is_flag=True, help="Batch schedulers: return after submitting.")
@click.pass_obj
def run(obj, recipe, backend, scheduler, load, overrides, run_dir, allow_invalid, detach):
    """Run the whole benchmark lifecycle of RECIPE and write results to its run directory.

    Exit status: 0 all points valid; 2 bad recipe or plugin; 3 a server, the scheduler or the
    load generator failed; 4 a point is invalid (unless --allow-invalid); 130 interrupted.
    """
    from .runner import Runner

    try:
        manager, specs = _load_specs(recipe, backend, scheduler, load, overrides, run_dir, allow_invalid)
        argv = list(sys.argv)
        submitted = manager.hook.bench_submit(spec=specs[0], argv=argv, detach=detach)
        if submitted is not None:
            sys.exit(submitted)
        runner = Runner(manager, echo=lambda s: click.echo(s, err=True), argv=argv)
        worst = 0
        for spec in specs:
            _ensure_model(spec)
            outcome = runner.run(spec)
            click.echo((spec.run_dir / "summary.txt").read_text())
            click.echo(f"results: {spec.run_dir / 'results.json'}", err=True)
            if outcome.error is not None:
                raise outcome.error
            if not outcome.valid and not allow_invalid:
                reasons = [f"{p['label']}: {'; '.join(p['validity']['reasons'])}"
                           for p in outcome.results["points"] if not p["validity"]["valid"]]
                worst = max(worst, InvalidResults.exit_code)
                click.secho("invalid points (use --allow-invalid to exit 0):\n  " + "\n  ".join(reasons),
                            fg="yellow", err=True)
        sys.exit(worst)
    except BenchError as exc:
        _fail(exc, obj.debug)


def _ensure_model(spec) -> None:
    if spec.model.create == "tiny":
        from .tinymodel import make_tiny_model

        make_tiny_model(Path(spec.model.path), name=spec.model.name)


@cli.command()
@selection_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.pass_obj
def plan(obj, recipe, backend, scheduler, load, overrides, run_dir, as_json):
    """Render everything `bench run` would start, with no side effects.

    Shows the submission script (batch schedulers), generated engine configs, every command with
    its environment, and the GPU and port map.
    """
    from .runner import Runner

    try:
        manager, specs = _load_specs(recipe, backend, scheduler, load, overrides, run_dir)
        runner = Runner(manager)
        plans = [runner.plan(spec) for spec in specs]
    except BenchError as exc:
        _fail(exc, obj.debug)
    if as_json:
        click.echo(json.dumps(plans if len(plans) > 1 else plans[0], indent=2))
        return
    for p in plans:
        click.echo(format_plan(p))


def format_plan(p: dict) -> str:
    lines = [f"# plan: {p['run']} / {p['deployment']}  backend={p['backend']} "
             f"scheduler={p['scheduler']} load={p['load']}",
             f"# run directory: {p['run_dir']}", "", "## nodes"]
    for n in p["allocation"]["nodes"]:
        lines.append(f"  {n['name']:<16} {n['address']:<16} {n['gpus']} GPU(s)")
    for name, text in p["submission"].items():
        lines += ["", f"## {name}", text.rstrip()]
    for path, text in p["files"].items():
        lines += ["", f"## file {path}", text.rstrip()]
    lines += ["", "## processes (start order)  GPU and port map"]
    for proc in p["processes"]:
        lines.append(f"  {proc['name']:<14} {proc['role']:<10} nodes={','.join(proc['nodes'])} "
                     f"tasks/node={proc['tasks_per_node']} gpus={proc['gpus'] or '-'} "
                     f"ports={proc['ports'] or '-'}")
        for c in proc["command"]:
            lines.append(f"    $ {c}")
    lines += ["", "## endpoints"]
    for e in p["endpoints"]:
        lines.append(f"  {e['role']:<10} {e['url']}  model={e['model']}  gpus={e['gpus']}")
    lines += ["", f"## load points ({len(p['points'])})"]
    for pt in p["points"]:
        what = (f"concurrency={pt['concurrency']}" if pt["concurrency"] is not None else
                f"rate={pt['request_rate']}" if pt["request_rate"] is not None else "")
        lines.append(f"  {pt['index']:>2} {what} isl={pt['isl']} osl={pt['osl']} "
                     f"requests={pt['num_requests']} {pt['scenario'] or ''}".rstrip())
    return "\n".join(lines) + "\n"


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def plugins(obj, as_json):
    """List installed plugins: name, distribution, version, hooks, what they provide."""
    try:
        manager = get_plugin_manager()
        infos = manager.infos()
    except BenchError as exc:
        _fail(exc, obj.debug)
    rows = []
    for rec in manager.records:
        provides = {kind: sorted(n for n, _ in infos[kind].items() if manager.owner(kind, n) == rec.name)
                    for kind in infos}
        rows.append({
            "name": rec.name,
            "dist": rec.dist,
            "version": rec.version,
            "hooks": manager.hooks_of(rec.name),
            "provides": {k: v for k, v in provides.items() if v},
            "descriptions": {n: i.description for kind in infos for n, i in infos[kind].items()
                             if manager.owner(kind, n) == rec.name},
        })
    broken = [{"name": f.name, "dist": f.dist, "error": f.error} for f in manager.failures]
    if as_json:
        click.echo(json.dumps({"plugins": rows, "failed": broken}, indent=2))
        return
    for r in rows:
        prov = "; ".join(f"{k}: {', '.join(v)}" for k, v in r["provides"].items()) or "-"
        click.echo(f"{r['name']:<14} {r['dist'] or '-'} {r['version'] or ''}")
        click.echo(f"    provides  {prov}")
        click.echo(f"    hooks     {', '.join(r['hooks'])}")
    for b in broken:
        click.secho(f"{b['name']:<14} FAILED TO LOAD ({b['dist']}): {b['error']}", fg="red")


@cli.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every point of every run to this CSV.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a Pareto plot (tokens/s/GPU vs tokens/s/user) of all runs to this PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print the merged results as JSON.")
@click.pass_obj
def results(obj, runs, csv_path, plot_path, as_json):
    """Summarise and compare runs (run directories or results.json files)."""
    from . import results as res

    loaded = []
    for r in runs:
        try:
            loaded.extend(_find_runs(r))
        except (OSError, ValueError) as exc:
            _fail(BenchError(f"{r}: not a benchstack results file ({exc})"), obj.debug)
    if not loaded:
        _fail(BenchError("no results.json found under " + ", ".join(map(str, runs))), obj.debug)
    if as_json:
        click.echo(json.dumps(loaded, indent=2, default=str))
    else:
        for run in loaded:
            md = run["metadata"]
            click.echo(f"== {md.get('name')} / {md.get('deployment')}  {md.get('backend')} "
                       f"[{md.get('scheduler')}] load={md.get('load')}  GPUs={md.get('total_gpus', 0)}"
                       f"  {md.get('start_time', '')}")
            click.echo(res.table(run))
            for e in run.get("errors", []):
                click.secho(f"   error: {e.splitlines()[0]}", fg="red")
            click.echo()
    if csv_path:
        csv_path.write_text(res.to_csv(loaded))
        click.echo(f"wrote {csv_path}", err=True)
    if plot_path:
        res.pareto_plot(loaded, plot_path)
        click.echo(f"wrote {plot_path}", err=True)


def _find_runs(path: Path) -> list[dict]:
    from .results import load_run

    if path.is_file():
        return [load_run(path)]
    direct = path / "results.json"
    if direct.exists():
        return [load_run(direct)]
    return [load_run(p) for p in sorted(path.rglob("results.json"))]


def main(argv=None):
    """Console entry point: BenchErrors are one message; anything else says to rerun with --debug."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cli.main(args=args, prog_name="bench", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BenchError as exc:
        _fail(exc, "--debug" in args)
    except SystemExit:
        raise
    except Exception as exc:
        if "--debug" in args:
            raise
        click.secho(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
                    "traceback and report it)", fg="red", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
