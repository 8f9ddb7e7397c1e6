"""Fixtures for the cross-plugin end-to-end tests.

The Slurm cluster fixtures live with the Slurm plugin's tests
(``plugins/scheduler_slurm/tests/slurm_fixtures.py``); they are loaded here by path, as one
module, so both test trees share the session's cluster.
"""

import importlib.util
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]
_FIXTURES = _REPO / "plugins" / "scheduler_slurm" / "tests" / "slurm_fixtures.py"


def _load_slurm_fixtures():
    name = "benchstack_slurm_test_fixtures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _FIXTURES)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_slurm = _load_slurm_fixtures()
slurm_cluster = _slurm.slurm_cluster
probe_dir = _slurm.probe_dir
