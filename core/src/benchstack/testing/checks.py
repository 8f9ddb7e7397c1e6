"""Primitives of the conformance checks: verdicts, calling one plugin's hooks, side-effect guards."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..plugins import PluginManager
from ..records import Allocation, ProcessSpec


class Failed(AssertionError):
    """One check's verdict; the message says why."""


def expect(problems: Iterable[str]) -> None:
    """Fail the current check with every (non-empty) problem, joined by ``; ``."""
    problems = [p for p in problems if p]
    if problems:
        raise Failed("; ".join(problems))


def short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def hook_impls(manager: PluginManager, plugin_name: str) -> dict[str, Any]:
    """``{hook name: pluggy HookImpl}`` of one registered plugin."""
    plugin = manager.pm.get_plugin(plugin_name)
    out = {}
    for caller in manager.pm.get_hookcallers(plugin) or []:
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin:
                out[caller.name] = impl
    return out


def call(impl: Any, **kwargs: Any) -> Any:
    """Call one implementation as pluggy does: with the subset of arguments it accepts."""
    return impl.function(*[kwargs[a] for a in impl.argnames])


@contextlib.contextmanager
def env_set(key: str, value: str) -> Iterator[None]:
    """``os.environ[key] = value`` inside the block (children started there inherit it)."""
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


@contextlib.contextmanager
def no_side_effects(run_dir: Path) -> Iterator[list[str]]:
    """Refuse (and list) process starts and the creation of ``run_dir`` inside the block.

    Every ``subprocess`` start goes through ``Popen._execute_child``, so ``subprocess.run`` and
    a ``from subprocess import Popen`` done long before are caught as well.
    """
    found: list[str] = []
    real_exec, real_system = subprocess.Popen._execute_child, os.system
    existed = Path(run_dir).exists()

    def refuse_exec(self, args, *rest, **kw):  # Popen's private signature
        found.append(f"started {short(args, 80)} itself (processes go through launcher.start)")
        raise OSError("the conformance check forbids starting processes here")

    def refuse_system(command):
        found.append(f"ran {short(command, 80)} with os.system")
        return 1

    subprocess.Popen._execute_child, os.system = refuse_exec, refuse_system
    try:
        yield found
    finally:
        subprocess.Popen._execute_child, os.system = real_exec, real_system
    if not existed and Path(run_dir).exists():
        found.append(f"created {run_dir} (files go through launcher.write_file)")


def process_problems(started: Iterable[ProcessSpec], allocation: Allocation) -> list[str]:
    """What is wrong with a deployment's processes on ``allocation``.

    Node indices inside the allocation; GPU ids below the node's GPU count and never given to two
    processes of one node; no port listened on twice on one node; argv a non-empty list of str;
    env values str; a ``secret_env`` name never in ``env``.
    """
    problems: list[str] = []
    gpu_owner: dict[tuple[int, int], str] = {}
    port_owner: dict[tuple[int, int], str] = {}
    nodes = allocation.nodes
    for p in started:
        if not p.argv or not all(isinstance(a, str) for a in p.argv):
            problems.append(f"{p.name}: argv must be a non-empty list of str: {short(p.argv)}")
        if not all(isinstance(v, str) for v in p.env.values()):
            problems.append(f"{p.name}: env values must be str: {short(dict(p.env))}")
        leaked = sorted(set(p.secret_env) & set(p.env))
        if leaked:
            problems.append(f"{p.name}: secret {leaked} in env (pass secrets by name only)")
        for n in p.nodes:
            if not 0 <= n < len(nodes):
                problems.append(f"{p.name}: node index {n} outside the allocation of {len(nodes)}")
                continue
            for g in p.gpus:
                if not 0 <= g < nodes[n].gpus:
                    problems.append(f"{p.name}: GPU {g} on {nodes[n].name}, which has {nodes[n].gpus}")
                elif gpu_owner.setdefault((n, g), p.name) != p.name:
                    problems.append(f"GPU {g} of {nodes[n].name} given to {gpu_owner[(n, g)]} "
                                    f"and {p.name}")
            for port in p.ports:
                if port_owner.setdefault((n, port), p.name) != p.name:
                    problems.append(f"port {port} of {nodes[n].name} used by "
                                    f"{port_owner[(n, port)]} and {p.name}")
    return problems
