"""Run an external tool (a load generator) as a child in its own process group, always reaped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

from .errors import LoadError
from .launcher import shell_join, tail


def find_tool(name: str, override: str | None = None) -> str:
    """``override`` if given, else ``name`` next to the running Python (its venv), else on PATH."""
    if override:
        return override
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name) or name


def run_tool(argv: Sequence[str], log_path: Path, *, timeout_s: float,
             env: Mapping[str, str] | None = None, cwd: Path | None = None, what: str = "") -> int:
    """Run ``argv`` to completion with output in ``log_path``; return its exit code.

    The tool runs in its own session; on timeout, Ctrl-C, SIGTERM or any error its whole process
    group is ended (TERM, 5 s, KILL) before the exception propagates. A missing executable or a
    timeout raises :class:`LoadError` naming the tool and its log.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    what = what or os.path.basename(argv[0])
    with open(log_path, "ab") as log:
        log.write(f"# {shell_join(argv)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=dict(env) if env else None,
                                    cwd=cwd, start_new_session=True)
        except OSError as exc:
            raise LoadError(f"cannot run {what}: {exc.strerror}: {argv[0]!r} "
                            "(is it installed? see scripts/bootstrap)") from None
        try:
            code = proc.wait(timeout=timeout_s)
            _end(proc)  # workers the tool left behind in its group
            return code
        except subprocess.TimeoutExpired:
            _end(proc)
            raise LoadError(f"{what} did not finish within {timeout_s:g} s; last lines of "
                            f"{log_path}:\n{tail(log_path, 20)}") from None
        except BaseException:
            _end(proc)
            raise


def _end(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
