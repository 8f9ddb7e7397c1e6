"""Conformance checks a plugin runs against itself: ``check_backend``, ``check_scheduler``,
``check_loadgen``.

Each registers the plugin next to the kit's ``fake`` scheduler, ``stub`` backend and load
generator and the ``local`` scheduler, runs every check below, and either returns the
:class:`Conformance` report or raises one :class:`ConformanceError` listing every failure as
``check: why`` (a check that needs a failed one is skipped, not failed).

every kind
  registers   the bench_register_* hook returns a list of the right Info records naming NAME
              exactly once; options_type is None or an attrs class; no other plugin claims NAME
  recipe      a recipe selecting NAME structures, and options_for(NAME) is an options_type
  other       with other plugins selected every stage hook returns None, bench_collect None,
              bench_validate no problem, bench_teardown does not raise; nothing is started,
              written or spawned
backend
  plan        bench plan works twice with identical results, spawns and writes nothing, and
              renders as JSON
  records     a ServerSet of NAME whose servers came from launcher.start, endpoints serving
              the model, a sane GPU and port map (see :func:`process_problems`), files written
              through the launcher
  teardown    bench_teardown may be called twice, and with nothing allocated or launched
  live        (``live=True``) a whole run on the local scheduler passes and leaves no process
scheduler
  allocation  a dry-run Allocation of NAME with named nodes, a Launcher on it, distinct ports
  describe    launcher.describe shows the argv and never a secret's value; submission text
  plan        bench plan of the stub backend on this scheduler
  live        (``live=True``) see :func:`benchstack.testing.conformance_live.scheduler_live`
load generator
  live        (``live=True``) see :func:`benchstack.testing.conformance_live.loadgen_live`
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Iterator

import attrs
from attrs import define, field

from .. import hookimpl
from .. import local as local_scheduler
from ..launcher import PlanLauncher
from ..plugins import PluginManager, get_plugin_manager
from ..records import BackendInfo, LoadgenInfo, SchedulerInfo, ServerSet
from . import conformance_dry as dry_checks
from . import conformance_live as live_checks
from . import fake_scheduler, stubs
from .checks import Failed, call, expect, hook_impls, no_side_effects, short
from .factories import make_allocation, make_endpoint, make_point
from .kit import make_recipe, make_spec

__all__ = ["Conformance", "ConformanceError", "check_backend", "check_scheduler", "check_loadgen"]

_KIND_WORDS = {"backend": "backend", "scheduler": "scheduler", "load": "load generator"}
REGISTER = {"backend": ("bench_register_backends", BackendInfo),
            "scheduler": ("bench_register_schedulers", SchedulerInfo),
            "load": ("bench_register_loadgens", LoadgenInfo)}


class _Elsewhere:
    """Backend and load generator ``elsewhere``: what the "other" check selects instead."""

    @staticmethod
    @hookimpl
    def bench_register_backends():
        return [BackendInfo(name=ELSEWHERE)]

    @staticmethod
    @hookimpl
    def bench_register_loadgens():
        return [LoadgenInfo(name=ELSEWHERE)]


ELSEWHERE = "elsewhere"
KIT_PLUGINS = (("stub", stubs), ("fake", fake_scheduler), ("local", local_scheduler),
               (ELSEWHERE, _Elsewhere))


@define
class Conformance:
    """What a ``check_*`` call found: checks passed, failed (``check: why``) and skipped."""

    plugin: str
    kind: str
    name: str
    passed: list[str] = field(factory=list)
    failed: list[str] = field(factory=list)
    skipped: list[str] = field(factory=list)


class ConformanceError(AssertionError):
    """A plugin failed conformance checks; ``report`` has them all."""

    def __init__(self, report: Conformance):
        self.report = report
        lines = "".join(f"\n  - {f}" for f in report.failed)
        skipped = f"\n  (skipped: {', '.join(report.skipped)})" if report.skipped else ""
        super().__init__(f"{report.kind} {report.name!r} (plugin {report.plugin!r}) fails "
                         f"{len(report.failed)} conformance check(s):{lines}{skipped}")


# --------------------------------------------------------------------------- the session


class Session:
    """One plugin under check: its manager, recipe, specs, temporary run directory, verdicts."""

    def __init__(self, kind: str, module: ModuleType | object, name: str, plugin: str | None,
                 recipe: dict[str, Any] | None, plugins: Iterable[tuple[str, Any]], tmp: Path):
        self.kind, self.module, self.name = kind, module, name
        self.plugin = plugin or name
        self.extra = list(plugins)
        self.tmp = tmp
        self.report = Conformance(plugin=self.plugin, kind=_KIND_WORDS[kind], name=name)
        self.ok: set[str] = set()
        self.data = make_recipe(backend="stub", scheduler="fake", load="stub")
        self.data.update(copy.deepcopy(recipe or {}))
        self.data[kind] = name
        self.manager: PluginManager | None = None
        self.others: PluginManager | None = None
        self.impls: dict[str, Any] = {}
        self.spec = None

    def run(self, check: str, fn: Callable[..., Any], *args: Any, needs: Iterable[str] = ()) -> Any:
        missing = [n for n in needs if n not in self.ok]
        if missing:
            self.report.skipped.append(f"{check} (needs {', '.join(missing)})")
            return None
        try:
            value = fn(*args)
        except Failed as exc:
            self.report.failed.append(f"{check}: {exc}")
        except Exception as exc:
            self.report.failed.append(f"{check}: raised {type(exc).__name__}: {exc}")
        else:
            self.ok.add(check)
            self.report.passed.append(check)
            return value
        return None

    def common(self) -> None:
        self.run("registers", self._registers)
        self.run("recipe", self._recipe, needs=("registers",))
        self.run("other", self._other, needs=("registers",))

    def finish(self) -> Conformance:
        if self.report.failed:
            raise ConformanceError(self.report)
        return self.report

    def spec_for(self, data: dict[str, Any], sub: str) -> Any:
        return make_spec(data, self.manager, run_dir=self.tmp / sub)

    # ------------------------------------------------------------------ every kind
    def _registers(self) -> None:
        pairs = [(self.plugin, self.module)] + self.extra
        taken = {n for n, _ in pairs} | {id(m) for _, m in pairs}
        pairs += [(n, m) for n, m in KIT_PLUGINS if n not in taken and id(m) not in taken]
        self.manager = get_plugin_manager(load_entry_points=False, extra=pairs)
        # the "other" recipe is validated without the plugin: its bench_validate is called apart
        self.others = get_plugin_manager(load_entry_points=False, extra=pairs[1:])
        self.impls = hook_impls(self.manager, self.plugin)
        hook, info_type = REGISTER[self.kind]
        if hook not in self.impls:
            raise Failed(f"plugin {self.plugin!r} does not implement {hook}")
        infos = call(self.impls[hook])
        if not isinstance(infos, (list, tuple)):
            raise Failed(f"{hook} returned {short(infos)}, not a list of {info_type.__name__}")
        problems = [f"{hook} returned {short(i)}, not a {info_type.__name__}"
                    for i in infos if not isinstance(i, info_type)]
        names = [i.name for i in infos if isinstance(i, info_type)]
        if names.count(self.name) != 1:
            problems.append(f"{hook} names {self.name!r} {names.count(self.name)} times "
                            f"(it registers {names}); exactly once expected")
        for info in infos:
            opt = getattr(info, "options_type", None)
            if opt is not None and not attrs.has(opt):
                problems.append(f"options_type of {info.name!r} is {short(opt)}, not an attrs class")
        expect(problems)
        self.manager.infos()  # two plugins claiming one name raise here
        owner = self.manager.owner(self.kind, self.name)
        expect([f"{self.name!r} is provided by {owner!r}, not {self.plugin!r}"
                if owner != self.plugin else ""])

    def _recipe(self) -> None:
        self.spec = self.spec_for(self.data, "plan")
        info = self.manager.info(self.kind, self.name)
        opts = self.spec.options_for(self.name)
        if info.options_type is not None and not isinstance(opts, info.options_type):
            raise Failed(f"options_for({self.name!r}) is {short(opts)}, not a "
                         f"{info.options_type.__name__}")

    def _other(self) -> None:
        """Every hook of the plugin with only other plugins selected."""
        own = {i.name for kind in self.manager.infos().values() for i in kind.values()
               if self.manager.owner(_kind_of(i), i.name) == self.plugin}
        data = {k: v for k, v in copy.deepcopy(self.data).items() if k not in own}
        data.update(backend=ELSEWHERE, load=ELSEWHERE,
                    scheduler="local" if "fake" in own else "fake")
        spec = make_spec(data, self.others, run_dir=self.tmp / "other")
        allocation = make_allocation()
        launcher = PlanLauncher(allocation, spec.run_dir)
        servers = ServerSet(backend=ELSEWHERE, servers=(), endpoints=(make_endpoint(),))
        args = {"spec": spec, "dry_run": True, "allocation": allocation, "run_dir": spec.run_dir,
                "argv": ["bench", "run", "recipe.yaml"], "detach": False, "launcher": launcher,
                "servers": servers, "endpoints": [make_endpoint()], "point": make_point(),
                "out_dir": spec.run_dir / "points" / "00-c1"}
        problems: list[str] = []
        with no_side_effects(spec.run_dir) as side:
            for hook, impl in sorted(self.impls.items()):
                if hook.startswith("bench_register_"):
                    continue
                for point in ((make_point(), None) if hook == "bench_collect" else (args["point"],)):
                    problems += _other_answer(hook, impl, {**args, "point": point})
        if launcher.started or launcher.files:
            problems.append("started or wrote through the launcher: "
                            + ", ".join([p.name for p in launcher.started]
                                        + [f.path for f in launcher.files]))
        expect(problems + side)


def _kind_of(info: Any) -> str:
    for kind, (_, typ) in REGISTER.items():
        if isinstance(info, typ):
            return kind
    raise TypeError(info)


def _other_answer(hook: str, impl: Any, args: dict[str, Any]) -> list[str]:
    try:
        result = call(impl, **args)
    except Exception as exc:
        return [f"{hook} raised {type(exc).__name__}: {exc}"]
    if hook == "bench_validate":
        return [f"bench_validate reported {short(list(result))} for a recipe not selecting it"] \
            if result else []
    if hook == "bench_teardown" or result is None:
        return []
    return [f"{hook} returned {short(result)} instead of None"]


@contextlib.contextmanager
def session(kind: str, module: Any, name: str, plugin: str | None, recipe: dict | None,
            plugins: Iterable[tuple[str, Any]], tmp_path: Path | None) -> Iterator[Session]:
    tmp = Path(tmp_path) if tmp_path else Path(tempfile.mkdtemp(prefix="bench-conformance-"))
    tmp = tmp / f"conformance-{name}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir(parents=True)
    try:
        yield Session(kind, module, name, plugin, recipe, plugins, tmp)
    finally:
        if not tmp_path:
            shutil.rmtree(tmp.parent, ignore_errors=True)


# --------------------------------------------------------------------------- backend


def check_backend(module: Any, name: str, recipe: dict[str, Any] | None = None, *,
                  plugin: str | None = None, plugins: Iterable[tuple[str, Any]] = (),
                  live: bool = False, tmp_path: Path | None = None) -> Conformance:
    """Check backend ``name`` of ``module`` (registered as ``plugin``, default ``name``).

    ``recipe`` is a recipe dict (``make_recipe`` style) holding the backend's section; the
    scheduler defaults to the kit's ``fake`` one (give ``fake: {nodes, gpus_per_node}`` to size
    it) and the load generator to ``stub``. ``plugins`` adds (name, module) partners. With
    ``live`` the backend also runs for real on the ``local`` scheduler (``local`` section from
    ``recipe``), which needs its engine installed.
    """
    with session("backend", module, name, plugin, recipe, plugins, tmp_path) as s:
        s.common()
        planned = s.run("plan", dry_checks.backend_plan, s, needs=("recipe",))
        s.run("records", dry_checks.backend_records, s, planned, needs=("plan",))
        s.run("teardown", dry_checks.backend_teardown, s, planned, needs=("plan",))
        if live:
            s.run("live", live_checks.backend_live, s, needs=("recipe",))
        return s.finish()


# --------------------------------------------------------------------------- scheduler


def check_scheduler(module: Any, name: str, recipe: dict[str, Any] | None = None, *,
                    plugin: str | None = None, plugins: Iterable[tuple[str, Any]] = (),
                    live: bool = True, python: str | None = None,
                    tmp_path: Path | None = None) -> Conformance:
    """Check scheduler ``name`` of ``module`` with the kit's ``stub`` backend and load generator.

    With ``live`` (the default) real processes are started through its launcher (``python``,
    default this interpreter, on the allocated nodes), so run it where the scheduler works.
    """
    with session("scheduler", module, name, plugin, recipe, plugins, tmp_path) as s:
        s.common()
        parts = s.run("allocation", dry_checks.scheduler_allocation, s, needs=("recipe",))
        s.run("describe", dry_checks.scheduler_describe, s, parts, needs=("allocation",))
        s.run("plan", dry_checks.scheduler_plan, s, needs=("allocation",))
        if live:
            s.run("live", live_checks.scheduler_live, s, python or sys.executable,
                  needs=("allocation",))
        return s.finish()


# --------------------------------------------------------------------------- load generator


def check_loadgen(module: Any, name: str, recipe: dict[str, Any] | None = None, *,
                  plugin: str | None = None, plugins: Iterable[tuple[str, Any]] = (),
                  live: bool = True, tmp_path: Path | None = None) -> Conformance:
    """Check load generator ``name`` of ``module``.

    With ``live`` (the default) it drives the recipe's first load point against the kit's timed
    test server (which serves ``model.name``), so the recipe's model must be one the tool can
    load a tokenizer from.
    """
    with session("load", module, name, plugin, recipe, plugins, tmp_path) as s:
        s.common()
        if live:
            s.run("live", live_checks.loadgen_live, s, needs=("recipe",))
        return s.finish()
