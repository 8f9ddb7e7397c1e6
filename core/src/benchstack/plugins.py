"""The plugin manager: entry points of group ``benchstack.plugins``, typed forwarding methods."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import sys
from typing import Any, Iterable

import pluggy
from attrs import define, field

from . import hookspecs
from .errors import PluginError
from .records import BackendInfo, LoadgenInfo, SchedulerInfo

ENTRY_POINT_GROUP = "benchstack.plugins"
#: comma-separated plugin names never loaded (like tox's TOX_DISABLED_EXTERNAL_PLUGINS)
BLOCK_ENV = "BENCHSTACK_BLOCK_PLUGINS"
#: comma-separated NAME=MODULE pairs loaded like installed plugins (and in place of an installed
#: plugin of the same name), e.g. ``sglang=benchstack_sglang.plugin``: try a plugin uninstalled
EXTRA_ENV = "BENCHSTACK_EXTRA_PLUGINS"
KINDS = ("backend", "scheduler", "load")


@define
class LoadFailure:
    name: str
    dist: str
    error: str


@define
class PluginRecord:
    """One loaded plugin: entry-point name, distribution and version, module."""

    name: str
    dist: str | None
    version: str | None
    module: Any


@define
class PluginManager:
    """Wraps pluggy's manager; core calls these methods, never ``pm.hook.x`` strings."""

    pm: pluggy.PluginManager
    records: list[PluginRecord] = field(factory=list)
    failures: list[LoadFailure] = field(factory=list)
    _infos: dict[str, dict[str, Any]] | None = None
    _owners: dict[tuple[str, str], str] = field(factory=dict)

    # -- registration ------------------------------------------------------------------------
    def register(self, module: Any, name: str, dist: str | None = None, version: str | None = None):
        self.pm.register(module, name=name)
        self.records.append(PluginRecord(name=name, dist=dist, version=version, module=module))
        self._infos = None

    def infos(self) -> dict[str, dict[str, Any]]:
        """``{"backend": {name: BackendInfo}, "scheduler": {...}, "load": {...}}``; conflicts raise."""
        if self._infos is not None:
            return self._infos
        out: dict[str, dict[str, Any]] = {k: {} for k in KINDS}
        owners: dict[tuple[str, str], str] = {}
        calls = (
            ("backend", self.pm.hook.bench_register_backends, BackendInfo),
            ("scheduler", self.pm.hook.bench_register_schedulers, SchedulerInfo),
            ("load", self.pm.hook.bench_register_loadgens, LoadgenInfo),
        )
        for kind, caller, typ in calls:
            for impl in caller.get_hookimpls():
                result = impl.function() or []
                for info in result:
                    if not isinstance(info, typ):
                        raise PluginError(
                            f"plugin {impl.plugin_name!r} registered a {type(info).__name__} "
                            f"where a {typ.__name__} was expected"
                        )
                    key = (kind, info.name)
                    if key in owners and owners[key] != impl.plugin_name:
                        raise PluginError(
                            f"{kind} {info.name!r} is provided by two plugins: "
                            f"{owners[key]!r} and {impl.plugin_name!r}; uninstall one or block it "
                            f"with {BLOCK_ENV}={impl.plugin_name}"
                        )
                    owners[key] = impl.plugin_name
                    out[kind][info.name] = info
        self._infos = out
        self._owners = owners
        return out

    def owner(self, kind: str, name: str) -> str:
        self.infos()
        return self._owners[(kind, name)]

    def info(self, kind: str, name: str) -> Any:
        """The registration record of a selected name; unknown names list the choices."""
        infos = self.infos()[kind]
        if name not in infos:
            broken = [f for f in self.failures if f.name == name]
            if broken:
                raise PluginError(
                    f"{kind} {name!r} is provided by plugin {broken[0].name!r} "
                    f"({broken[0].dist}), which failed to load: {broken[0].error}"
                )
            choices = ", ".join(sorted(infos)) or "none installed"
            raise PluginError(f"unknown {kind} {name!r}; choose one of: {choices}")
        return infos[name]

    def hooks_of(self, plugin_name: str) -> list[str]:
        plugin = self.pm.get_plugin(plugin_name)
        return sorted(
            caller.name
            for caller in self.pm.get_hookcallers(plugin) or []
        )

    @property
    def hook(self):
        """The pluggy hook relay, for the runner."""
        return self.pm.hook


def _entry_points() -> Iterable[md.EntryPoint]:
    return md.entry_points(group=ENTRY_POINT_GROUP)


def _extra_from_env() -> list[tuple[str, str]]:
    """(name, module) pairs of ``BENCHSTACK_EXTRA_PLUGINS``."""
    pairs = []
    for item in os.environ.get(EXTRA_ENV, "").split(","):
        name, sep, target = (part.strip() for part in item.partition("="))
        if not item.strip():
            continue
        if not (sep and name and target):
            raise PluginError(f"{EXTRA_ENV}: expected NAME=MODULE[,NAME=MODULE...], got {item.strip()!r}")
        pairs.append((name, target))
    return pairs


def get_plugin_manager(
    *, load_entry_points: bool = True, extra: Iterable[tuple[str, Any]] = (), selected: Iterable[str] = ()
) -> PluginManager:
    """A fresh manager with the hook specs, the installed plugins and any ``extra`` ones.

    Installed plugins are the entry points plus ``BENCHSTACK_EXTRA_PLUGINS``; both are skipped
    without ``load_entry_points`` (the test kit's managers).

    A plugin that fails to import is recorded in ``failures`` and skipped, unless its name is in
    ``selected`` (then the error is raised, with its cause).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if os.environ.get("BENCHSTACK_TRACE_HOOKS"):
        pm.trace.root.setwriter(lambda s: sys.stderr.write(s))
        pm.enable_tracing()
    manager = PluginManager(pm=pm)
    blocked = {b.strip() for b in os.environ.get(BLOCK_ENV, "").split(",") if b.strip()}
    selected = set(selected)
    if load_entry_points:
        env_extra = _extra_from_env()
        seen: set[str] = {name for name, _ in env_extra}  # these replace installed namesakes
        for ep in sorted(_entry_points(), key=lambda e: e.name):
            if ep.name in blocked or ep.name in seen:
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            version = dist.version if dist is not None else None
            try:
                module = ep.load()
            except Exception as exc:  # a broken third-party plugin must not take bench down
                if ep.name in selected:
                    raise PluginError(
                        f"plugin {ep.name!r} ({dist_name}) failed to load: {type(exc).__name__}: {exc}"
                    ) from exc
                manager.failures.append(
                    LoadFailure(ep.name, dist_name or "?", f"{type(exc).__name__}: {exc}")
                )
                continue
            manager.register(module, ep.name, dist_name, version)
        for name, target in env_extra:
            if name in blocked:
                continue
            try:
                module = importlib.import_module(target)
            except Exception as exc:  # same rules as a broken entry point
                if name in selected:
                    raise PluginError(f"plugin {name!r} ({EXTRA_ENV}: {target}) failed to load: "
                                      f"{type(exc).__name__}: {exc}") from exc
                manager.failures.append(LoadFailure(name, f"{EXTRA_ENV}: {target}",
                                                    f"{type(exc).__name__}: {exc}"))
                continue
            manager.register(module, name)
    for name, module in extra:
        manager.register(module, name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements an unknown hook: {exc}") from exc
    return manager
