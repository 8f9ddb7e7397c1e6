"""Helpers for end-to-end tests that run the real ``bench`` CLI: invoke it, find leftovers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Sequence


def bench(args: Sequence[str], *, timeout: float = 600, env: dict | None = None,
          cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``bench ARGS`` in a child process (the real CLI) and return the completed process."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "benchstack.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=cwd)


def processes_mentioning(needles: Iterable[str]) -> list[tuple[int, str]]:
    """(pid, cmdline) of live processes whose command line or environment mentions a needle."""
    needles = [n for n in needles if n]
    me = os.getpid()
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            status = (d / "status").read_text()
            if "\nState:\tZ" in status:
                continue
            env = (d / "environ").read_bytes().decode("utf-8", "replace")
        except OSError:
            continue
        if any(n in cmd or n in env for n in needles):
            found.append((int(d.name), cmd.strip()))
    return found


def load_results(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())
