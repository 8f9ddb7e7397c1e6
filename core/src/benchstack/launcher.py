"""The launcher: the one door through which backends cause side effects.

A scheduler gives the backend a :class:`Launcher`. The backend writes its generated files and
starts its processes through it, and waits for readiness through it. ``bench plan`` hands the
backend a :class:`PlanLauncher` that records everything and starts nothing, so plan and run share
one code path and the plan is, by construction, what run starts.
"""

from __future__ import annotations

import abc
import time
from pathlib import Path
from typing import Callable, Iterable

from attrs import define, field

from .errors import ServerFailed, ServerNotReady
from .records import Allocation, FileSpec, ProcessSpec, ServerHandle


class Launcher(abc.ABC):
    """Starts processes on an allocation, owns them, and ends them all at teardown."""

    #: True for a launcher that starts nothing (``bench plan``).
    dry_run: bool = False

    def __init__(self, allocation: Allocation, run_dir: Path, ports: "PortAllocator | None" = None):
        self.allocation = allocation
        self.run_dir = Path(run_dir)
        self.ports = ports or PortAllocator()
        self.files: list[FileSpec] = []
        self.started: list[ProcessSpec] = []

    # -- what backends call ------------------------------------------------------------------
    def write_file(self, spec: FileSpec) -> Path:
        """Write a generated file into the run directory and return its absolute path."""
        path = self.run_dir / spec.path
        self.files.append(spec)
        if not self.dry_run:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(spec.content)
        return path

    def path(self, relative: str) -> Path:
        """Absolute path of a run-directory file, as the processes will see it."""
        return self.run_dir / relative

    def start(self, spec: ProcessSpec) -> ServerHandle:
        """Start ``spec`` (or, in a plan, record it) and return its handle."""
        if any(s.name == spec.name for s in self.started):
            raise ValueError(f"process name {spec.name!r} used twice in one deployment")
        self.started.append(spec)
        log_path = self.log_path(spec)
        if not self.dry_run:
            self._start(spec, log_path)
        return ServerHandle(spec=spec, log_path=log_path)

    def wait_ready(
        self,
        handles: Iterable[ServerHandle],
        check: Callable[[], bool | str],
        *,
        what: str,
        timeout_s: float,
        interval_s: float = 0.2,
    ) -> None:
        """Poll ``check`` until it returns True; fail at once if one of ``handles`` exits.

        ``check`` may return a string describing what is still missing; it goes into the
        timeout error. In a plan this returns immediately.
        """
        if self.dry_run:
            return
        handles = list(handles)
        deadline = time.monotonic() + timeout_s
        last: bool | str = False
        while True:
            for h in handles:
                code = self.poll(h)
                if code is not None:
                    raise ServerFailed(h.spec.name, code, self.log_tail(h), what=what)
            try:
                last = check()
            except Exception as exc:  # a check that raises is "not yet"
                last = f"{type(exc).__name__}: {exc}"
            if last is True:
                return
            if time.monotonic() >= deadline:
                tails = {h.spec.name: self.log_tail(h) for h in handles}
                raise ServerNotReady(what, timeout_s, str(last) if last else "", tails)
            time.sleep(interval_s)

    # -- what schedulers implement -----------------------------------------------------------
    def log_path(self, spec: ProcessSpec) -> Path:
        return self.run_dir / "logs" / f"{spec.name}.log"

    @abc.abstractmethod
    def _start(self, spec: ProcessSpec, log_path: Path) -> None:
        """Really start the process; called only outside plans."""

    @abc.abstractmethod
    def poll(self, handle: ServerHandle) -> int | None:
        """Exit code of a started process, or None while it runs."""

    @abc.abstractmethod
    def stop_all(self, grace_s: float) -> list[str]:
        """End every process this launcher started (TERM, wait ``grace_s``, KILL).

        Returns the names of processes that had to be killed or could not be confirmed gone.
        """

    def describe(self, spec: ProcessSpec) -> list[str]:
        """The exact command line(s) the scheduler runs for ``spec`` (shown by ``bench plan``)."""
        return [shell_join(env_prefix(spec) + list(spec.argv))]

    def log_tail(self, handle: ServerHandle, lines: int = 30) -> str:
        return tail(handle.log_path, lines)


class PlanLauncher(Launcher):
    """Records files and processes; starts nothing. Wraps a real launcher to describe commands."""

    dry_run = True

    def __init__(self, allocation: Allocation, run_dir: Path, describe_with: Launcher | None = None):
        super().__init__(allocation, run_dir, describe_with.ports if describe_with else None)
        self._describer = describe_with

    def _start(self, spec, log_path):  # pragma: no cover - never called in a plan
        raise AssertionError("a plan starts nothing")

    def poll(self, handle):
        return None

    def stop_all(self, grace_s):
        return []

    def describe(self, spec):
        return self._describer.describe(spec) if self._describer else super().describe(spec)


def tail(path: Path, lines: int = 30) -> str:
    """Last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def shell_join(argv: Iterable[str]) -> str:
    import shlex

    return " ".join(shlex.quote(str(a)) for a in argv)


def env_prefix(spec: ProcessSpec) -> list[str]:
    """``env K=V ...`` words for a process spec; secret variables appear by name only."""
    words = [f"{k}={v}" for k, v in sorted(spec.env.items())]
    return (["env"] + words) if words else []


@define
class PortAllocator:
    """Hands out ports per node so servers on one node, and runs on one node, never collide.

    ``is_free(node_index, port)`` decides whether a port may be used; the local scheduler binds
    to check, a cluster scheduler uses a per-job window.
    """

    base: int = 18000
    limit: int = 60000
    is_free: Callable[[int, int], bool] = field(default=lambda node, port: True)
    _taken: dict[int, set[int]] = field(factory=dict)

    def take(self, node: int, count: int = 1) -> list[int]:
        """``count`` distinct free ports on node ``node``."""
        taken = self._taken.setdefault(node, set())
        out: list[int] = []
        port = self.base
        while len(out) < count:
            if port >= self.limit:
                raise RuntimeError(f"no free port left on node {node} in {self.base}..{self.limit}")
            if port not in taken and self.is_free(node, port):
                taken.add(port)
                out.append(port)
            port += 1
        return out

    def one(self, node: int) -> int:
        return self.take(node, 1)[0]

    def reserve(self, node: int, port: int) -> int:
        """Claim a port the recipe fixed (e.g. a frontend port), so no other server gets it."""
        taken = self._taken.setdefault(node, set())
        if port in taken:
            raise ValueError(f"port {port} on node {node} is already given to another server")
        taken.add(port)
        return port
