"""benchstack's test kit for plugin authors (opt-in pytest plugin: ``-p benchstack.testing``).

- managers with chosen plugins, recipe dicts, RunSpecs, plans and golden files (:mod:`.kit`);
- record factories: ``make_allocation``, ``make_endpoint``, ``make_point``, ``make_metrics``, ...
  (:mod:`.factories`);
- conformance checks a plugin runs against itself: ``check_backend``, ``check_scheduler``,
  ``check_loadgen`` (:mod:`.conformance`);
- the ``fake`` scheduler (N nodes x G GPUs, starts nothing), the ``stub`` backend and load
  generator, the timed OpenAI test server, helpers for end-to-end tests (:mod:`.e2e`);
- pytest fixtures ``bench_manager``, ``bench_recipe``, ``bench_cli``, ``bench_timed_server``,
  ``bench_no_leftovers`` (:mod:`.fixtures`), enabled by ``-p benchstack.testing`` or
  ``pytest_plugins = ["benchstack.testing"]``; importing this package alone needs no pytest.

docs/plugins.md ("Testing a plugin") shows them at work.
"""

from __future__ import annotations

from . import fake_scheduler, stubs
from .conformance import Conformance, ConformanceError, check_backend, check_loadgen, check_scheduler
from .factories import (make_allocation, make_endpoint, make_load_result, make_metrics, make_node,
                        make_point, make_process, make_server_set, make_stat)
from .kit import (BASE_RECIPE, UPDATE_GOLDEN_ENV, assert_golden, make_manager, make_recipe,
                  make_spec, plan, plan_text, recipe_errors)

#: what ``-p benchstack.testing`` registers with pytest besides this module: the fixtures
pytest_plugins = ["benchstack.testing.fixtures"]

__all__ = [
    "BASE_RECIPE", "UPDATE_GOLDEN_ENV", "make_manager", "make_recipe", "make_spec", "plan",
    "plan_text", "recipe_errors", "assert_golden",
    "make_node", "make_allocation", "make_endpoint", "make_point", "make_stat", "make_metrics",
    "make_load_result", "make_process", "make_server_set",
    "Conformance", "ConformanceError", "check_backend", "check_scheduler", "check_loadgen",
    "fake_scheduler", "stubs",
]
