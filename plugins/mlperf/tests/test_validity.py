"""Each validity gate, triggered through the real runner (timed backend, local scheduler, mlperf),
and the CLI's exit status: 4 on an invalid point, 0 with --allow-invalid, the reason printed."""

from __future__ import annotations

import json

import pytest
import yaml

from benchstack.runner import Runner

OFFLINE = {"scenarios": ["Offline"], "concurrency": [8], "isl": 16, "osl": 16, "num_requests": 40}


@pytest.fixture
def gated(spec_for, manager):
    """``gated(timed={...}, sweep={...})``: run one point through the runner, return its record."""

    def run(timed=None, sweep=None, **kw):
        spec = spec_for(sweep=sweep or OFFLINE, timed={"ttft_ms": 5, "itl_ms": 1, **(timed or {})}, **kw)
        outcome = Runner(manager, echo=lambda s: None, argv=["bench"]).run(spec)
        assert outcome.error is None, outcome.error
        return outcome.results["points"][0]

    return run


def test_valid_point_passes_every_gate(gated):
    p = gated()
    assert p["validity"]["valid"] and not p["validity"]["reasons"]
    assert p["metrics"]["requests_completed"] == 40 and p["tool_validity"]["valid"]


@pytest.mark.parametrize("kind", ["http500", "stream_error"])
def test_failed_requests_over_threshold(gated, kind):
    p = gated(timed={"fail_kind": kind, "fail_fraction": 0.1})
    m = p["metrics"]
    assert m["requests_failed"] == 4 and m["requests_completed"] == 36
    assert not p["validity"]["valid"]
    assert "4 of 40 requests failed (10.0% > 1.0%)" in p["validity"]["reasons"]
    err = "HTTP 500" if kind == "http500" else "in-stream error"
    assert any(err in f for f in p["tool_extra"]["failures"])


def test_failures_under_threshold_stay_valid(gated):
    p = gated(timed={"fail_kind": "http500", "fail_fraction": 0.025},
                  validity={"max_failed_fraction": 0.05})
    assert p["metrics"]["requests_failed"] == 1 and p["validity"]["valid"]


def test_zero_output_tokens(gated):
    p = gated(timed={"fail_kind": "zero_tokens", "fail_fraction": 1.0})
    assert p["metrics"]["requests_failed"] == 0 and p["metrics"]["output_tokens"]["mean"] == 0
    assert "zero output tokens" in p["validity"]["reasons"]


def test_output_far_below_osl(gated):
    p = gated(timed={"fail_kind": "short", "fail_fraction": 1.0, "short_fraction": 0.5})
    assert p["metrics"]["output_tokens"]["mean"] == 8
    assert ("mean output length 8.0 tokens is below 90% of the requested OSL 16"
            in p["validity"]["reasons"])


def test_loadgen_invalid(gated):
    # 30 Server queries cannot satisfy LoadGen's early stopping: MLPerf says INVALID
    p = gated(sweep={"scenarios": ["Server"], "request_rate": [50], "isl": 16, "osl": 16,
                         "num_requests": 30})
    assert p["metrics"]["requests_failed"] == 0
    assert p["tool_validity"]["valid"] is False
    assert any(r.startswith("mlperf: early stopping not satisfied") for r in p["validity"]["reasons"])


def test_cli_exit_status_and_reasons(tmp_path):
    """``bench run``: exit 4 naming the reason; 0 with --allow-invalid; ``bench results`` shows both."""
    from benchstack.testing.e2e import bench

    env = {"BENCHSTACK_EXTRA_PLUGINS": "timed=benchstack.testing.timed_server"}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "gates", "backend": "timed", "scheduler": "local", "load": "mlperf",
        "model": {"name": "timed-model", "path": str(tmp_path / "no-model")},
        "local": {"port_base": 23300}, "ready_timeout_s": 30, "stop_grace_s": 2,
        "sweep": OFFLINE,
        "timed": {"ttft_ms": 5, "itl_ms": 1, "fail_kind": "short", "fail_fraction": 1.0},
    }))
    bad = bench(["run", str(recipe), "--run-dir", str(tmp_path / "runs" / "a")], env=env, timeout=120)
    assert bad.returncode == 4, bad.stderr
    assert "invalid points (use --allow-invalid to exit 0)" in bad.stderr
    assert "mean output length 8.0 tokens is below 90% of the requested OSL 16" in bad.stderr
    allowed = bench(["run", str(recipe), "--allow-invalid", "--run-dir", str(tmp_path / "runs" / "b"),
                     "--set", "timed.fail_kind=zero_tokens"], env=env, timeout=120)
    assert allowed.returncode == 0, allowed.stderr
    assert "zero output tokens" in allowed.stdout  # summary.txt names the reason
    shown = bench(["results", str(tmp_path / "runs"), "--json"], env=env, timeout=60)
    runs = json.loads(shown.stdout)
    assert [r["points"][0]["validity"]["reasons"] for r in runs] == [
        ["mean output length 8.0 tokens is below 90% of the requested OSL 16"], ["zero output tokens"]]
