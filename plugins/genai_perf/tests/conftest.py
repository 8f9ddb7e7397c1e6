"""Fixtures of the genai_perf plugin's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchstack.testing import make_manager, make_recipe, make_spec
from benchstack.testing import timed_server

import benchstack_genai_perf.plugin as genai_perf_plugin


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """benchstack's tiny model (its tokenizer is what genai-perf needs), built once."""
    from benchstack.tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny", name="timed-model")


@pytest.fixture
def manager():
    import benchstack.local as local

    return make_manager(("genai_perf", genai_perf_plugin), ("timed", timed_server), ("local", local),
                        fake=False)


@pytest.fixture
def spec_for(manager, tmp_path):
    def make(model_path: str = "/models/tiny", run_dir: Path | None = None, **sections):
        data = make_recipe(backend="timed", scheduler="local", load="genai_perf",
                           model={"name": "timed-model", "path": str(model_path)},
                           local={"port_base": 23500}, ready_timeout_s=30, stop_grace_s=2)
        data.update(sections)
        return make_spec(data, manager, run_dir=run_dir or tmp_path / "run")

    return make
