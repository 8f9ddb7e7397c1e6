"""GPU count and inventory parsed from nvidia-smi output captured on a real H200 machine."""

from __future__ import annotations

import subprocess
from pathlib import Path

import benchstack.local as local

DATA = Path(__file__).parent / "data"


def fake_smi(monkeypatch, present=True):
    monkeypatch.setattr(local.shutil, "which", lambda exe: "/usr/bin/nvidia-smi" if present else None)

    def run(argv, **kw):
        text = (DATA / ("nvidia-smi-L.txt" if argv[1] == "-L" else "nvidia-smi-query.csv")).read_text()
        return subprocess.CompletedProcess(argv, 0, stdout=text, stderr="")

    monkeypatch.setattr(local.subprocess, "run", run)


def test_real_h200_output(monkeypatch):
    fake_smi(monkeypatch)
    assert local.count_gpus() == 1
    assert local.gpu_inventory() == [
        {"index": "0", "name": "NVIDIA H200", "memory": "143771 MiB", "driver": "580.159.04"}]


def test_no_nvidia_smi(monkeypatch):
    fake_smi(monkeypatch, present=False)
    assert local.count_gpus() == 0 and local.gpu_inventory() == []
