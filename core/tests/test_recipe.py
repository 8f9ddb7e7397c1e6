"""Recipe loading: every error one line with its path; overrides; sweep expansion."""

from __future__ import annotations

import attrs
import pytest
from attrs import field, frozen, validators as v

from benchstack import hookimpl
from benchstack.errors import RecipeError
from benchstack.recipe import apply_overrides, read_yaml
from benchstack.records import BackendInfo, LoadgenInfo
from benchstack.testing import make_manager, make_recipe, make_spec


@frozen(kw_only=True)
class Role:
    workers: int = field(default=1, validator=[v.instance_of(int), v.ge(1)])
    tp: int = 1


@frozen(kw_only=True)
class DemoOptions:
    decode: Role = field(factory=Role)
    mode: str = field(default="agg", validator=v.in_(["agg", "disagg"]))
    model_dir: str


class demo_backend:
    @staticmethod
    @hookimpl
    def bench_register_backends():
        return [BackendInfo(name="demo", options_type=DemoOptions)]


class demo_load:
    @staticmethod
    @hookimpl
    def bench_register_loadgens():
        return [LoadgenInfo(name="demoload")]


@pytest.fixture
def manager():
    return make_manager(("demo", demo_backend), ("demoload", demo_load))


def recipe(**kw):
    base = make_recipe(backend="demo", load="demoload", demo={"model_dir": "/m"})
    base.update(kw)
    return base


def error_lines(data, manager, overrides=()):
    with pytest.raises(RecipeError) as exc:
        make_spec(data, manager, overrides=overrides)
    return exc.value.lines


def test_valid_recipe_structures_plugin_section(manager):
    spec = make_spec(recipe(demo={"model_dir": "/m", "decode": {"workers": 3}}), manager)
    assert spec.options_for("demo").decode.workers == 3
    assert [p.concurrency for p in spec.points] == [1, 2]


def test_bad_value_names_field_and_path(manager):
    lines = error_lines(recipe(demo={"model_dir": "/m", "decode": {"workers": 0}}), manager)
    assert lines == ["'workers' must be >= 1: 0 @ recipe.demo.decode"]


def test_unknown_key_in_plugin_section(manager):
    lines = error_lines(recipe(demo={"model_dir": "/m", "decode": {"wokers": 2}}), manager)
    assert len(lines) == 1
    assert "unknown key 'wokers'" in lines[0] and lines[0].endswith("@ recipe.demo.decode")
    assert "known keys: tp, workers" in lines[0]


def test_unknown_top_level_key_lists_choices(manager):
    lines = error_lines(recipe(sweeep={}), manager)
    assert len(lines) == 1
    assert lines[0].startswith("unknown key 'sweeep' @ recipe")
    assert "sweep" in lines[0] and "demo" in lines[0]


def test_wrong_type(manager):
    lines = error_lines(recipe(sweep={"concurrency": [1, "four"], "isl": 8}), manager)
    assert lines == ["expected an integer, got 'four' @ recipe.sweep.concurrency[1]"]


def test_wrong_type_bool_is_not_an_int(manager):
    lines = error_lines(recipe(demo={"model_dir": "/m", "decode": {"tp": True}}), manager)
    assert lines == ["expected an integer, got True @ recipe.demo.decode.tp"]


def test_missing_field(manager):
    lines = error_lines(recipe(demo={}), manager)
    assert lines == ["required key missing @ recipe.demo.model_dir"]


def test_missing_core_field(manager):
    data = recipe()
    del data["model"]["path"]
    assert error_lines(data, manager) == ["required key missing @ recipe.model.path"]


def test_several_errors_reported_together(manager):
    lines = error_lines(recipe(demo={"model_dir": 5, "decode": {"workers": -1}},
                               sweep={"isl": 0}), manager)
    assert sorted(lines) == sorted([
        "'isl' must be >= 1: 0 @ recipe.sweep",
        "'workers' must be >= 1: -1 @ recipe.demo.decode",
        "expected a string, got 5 @ recipe.demo.model_dir",
    ])


def test_class_level_validator_message_kept(manager):
    lines = error_lines(recipe(demo={"model_dir": "/m", "mode": "x"}), manager)
    assert len(lines) == 1
    assert lines[0].startswith("'mode' must be in ['agg', 'disagg']") and lines[0].endswith("@ recipe.demo")


def test_unknown_backend_lists_choices(manager):
    lines = error_lines(recipe(backend="sglang"), manager)
    assert lines == ["unknown backend 'sglang'; choose one of: demo @ recipe.backend"]


def test_set_overrides_parse_yaml_values(manager):
    spec = make_spec(recipe(), manager, overrides=["sweep.concurrency=[4, 8]", "demo.decode.workers=2",
                                                   "demo.mode=disagg"])
    assert [p.concurrency for p in spec.points] == [4, 8]
    assert spec.options_for("demo").decode.workers == 2
    assert spec.options_for("demo").mode == "disagg"


def test_set_override_errors_name_the_override(manager):
    with pytest.raises(RecipeError, match="expected KEY.PATH=VALUE"):
        apply_overrides({}, ["nonsense"])
    with pytest.raises(RecipeError, match="'recipe.name' is a str, not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])
    # an override that makes the recipe wrong is reported like a recipe error
    assert error_lines(recipe(), manager, overrides=["demo.decode.workers=0"]) == [
        "'workers' must be >= 1: 0 @ recipe.demo.decode"]


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\nbackend: [unclosed\n")
    with pytest.raises(RecipeError) as exc:
        read_yaml(p)
    assert str(p) in str(exc.value) and "line" in str(exc.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="cannot read recipe"):
        read_yaml(tmp_path / "nope.yaml")


def test_concurrency_and_rate_exclusive(manager):
    lines = error_lines(recipe(sweep={"concurrency": [1], "request_rate": [2.0]}), manager)
    assert lines == ["give either 'concurrency' or 'request_rate', not both @ recipe.sweep"]


def test_requests_per_concurrency(manager):
    spec = make_spec(recipe(sweep={"concurrency": [1, 16], "requests_per_concurrency": 8,
                                   "min_requests": 10}), manager)
    assert [p.num_requests for p in spec.points] == [10, 128]


def test_deployment_variants(manager):
    data = recipe(deployments=[{"name": "tp1", "set": {"demo.decode.tp": 1}},
                               {"name": "tp2", "set": {"demo.decode.tp": 2}}])
    from benchstack.recipe import load_specs
    from pathlib import Path

    specs = load_specs(data, manager, run_dir=Path("/runs/x"))
    assert [s.deployment for s in specs] == ["tp1", "tp2"]
    assert [s.options_for("demo").decode.tp for s in specs] == [1, 2]
    assert specs[1].run_dir == Path("/runs/x/tp2")


def test_relative_model_path_becomes_absolute(manager, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = make_spec(recipe(model={"name": "m", "path": "./models/m"}), manager)
    assert spec.model.path == str(tmp_path / "models" / "m")
    spec = make_spec(recipe(model={"name": "m", "path": "nvidia/DeepSeek-R1-FP4"}), manager)
    assert spec.model.path == "nvidia/DeepSeek-R1-FP4"
