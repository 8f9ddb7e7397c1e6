"""Fixtures for the Slurm plugin's tests: the real cluster and the probe plugin (see slurm_fixtures)."""

import importlib.util
import sys
from pathlib import Path


def _load_fixtures():
    name = "benchstack_slurm_test_fixtures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("slurm_fixtures.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_fx = _load_fixtures()
slurm_cluster = _fx.slurm_cluster
probe_dir = _fx.probe_dir
