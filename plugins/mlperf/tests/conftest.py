"""Fixtures of the mlperf plugin's tests: one timed test server for the session, specs for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchstack.testing import make_manager, make_recipe, make_spec
from benchstack.testing import timed_server
from benchstack.testing.timed_server import start_subprocess

import benchstack_mlperf.plugin as mlperf_plugin

DEFAULTS = dict(ttft_ms=20.0, itl_ms=5.0, fail_kind=None, fail_fraction=0.0, zero_latency=False,
                role_chunk=True, default_max_tokens=16)


@pytest.fixture(scope="session")
def timed_session():
    with start_subprocess(**{k: v for k, v in DEFAULTS.items() if v is not None}) as srv:
        yield srv


@pytest.fixture
def server(timed_session):
    """The session's timed server, reset to TTFT 20 ms / ITL 5 ms with no failures."""
    timed_session.configure(**DEFAULTS)
    timed_session.reset()
    return timed_session


@pytest.fixture
def manager():
    import benchstack.local as local

    return make_manager(("mlperf", mlperf_plugin), ("timed", timed_server), ("local", local), fake=False)


@pytest.fixture
def spec_for(manager, tmp_path):
    """``spec_for(sweep={...}, mlperf={...}, timed={...})``: a RunSpec for the timed backend."""

    def make(run_dir: Path | None = None, **sections):
        data = make_recipe(backend="timed", scheduler="local", load="mlperf",
                           model={"name": "timed-model", "path": str(tmp_path / "no-model")},
                           local={"port_base": 23100}, ready_timeout_s=30, stop_grace_s=2)
        data.update(sections)
        return make_spec(data, manager, run_dir=run_dir or tmp_path / "run")

    return make
