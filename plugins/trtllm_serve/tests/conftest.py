"""Shims that put the trtllm-serve stand-in on PATH under the real executables' names."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


def write_shims(bin_dir: Path) -> Path:
    """``trtllm-serve`` runs the stand-in; ``trtllm-llmapi-launch`` execs its command (the
    stand-in itself handles MPI ranks: only rank 0 serves HTTP)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    serve = bin_dir / "trtllm-serve"
    serve.write_text(f"#!/bin/sh\nexec {sys.executable} -m benchstack_trtllm_serve.standin \"$@\"\n")
    launch = bin_dir / "trtllm-llmapi-launch"
    launch.write_text("#!/bin/sh\nexec \"$@\"\n")
    for f in (serve, launch):
        f.chmod(0o755)
    return bin_dir


@pytest.fixture
def standin_path(tmp_path, monkeypatch):
    """PATH with the stand-in first; returns the shim directory."""
    d = write_shims(tmp_path / "standin-bin")
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ.get('PATH', '')}")
    return d
