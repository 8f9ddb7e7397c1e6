"""LoadGen settings: benchstack defaults < point < mlperf.conf < user.conf < recipe keys < point rate."""

from __future__ import annotations

import pytest

from benchstack.errors import LoadError, RecipeError

from benchstack_mlperf.run import build_settings


def settings(spec_for, sweep, **mlperf):
    spec = spec_for(sweep=sweep, mlperf=mlperf)
    return build_settings(spec.options_for("mlperf"), spec, spec.points[0])


def test_defaults_and_point(spec_for):
    s = settings(spec_for, {"scenarios": ["Server"], "request_rate": [12.5], "num_requests": 300,
                            "duration_s": 2})
    assert s.scenario.name == "Server" and s.mode.name == "PerformanceOnly"
    assert s.server_target_qps == 12.5 and s.min_query_count == 300 and s.min_duration_ms == 2000
    assert (s.ttft_latency, s.tpot_latency) == (2000 * 10**6, 200 * 10**6)
    assert s.use_token_latencies


def test_interactive_is_server_with_tighter_limits(spec_for):
    s = settings(spec_for, {"scenarios": ["Interactive"], "request_rate": [4]})
    assert s.scenario.name == "Server"
    assert (s.ttft_latency, s.tpot_latency) == (450 * 10**6, 40 * 10**6)
    s = settings(spec_for, {"scenarios": ["Interactive"], "request_rate": [4]},
                 interactive_ttft_latency_ms=300, interactive_tpot_latency_ms=25, ttft_latency_ms=9999)
    assert (s.ttft_latency, s.tpot_latency) == (300 * 10**6, 25 * 10**6)


def test_offline_uses_the_point_rate_as_expected_qps(spec_for):
    s = settings(spec_for, {"scenarios": ["Offline"], "request_rate": [50], "num_requests": 64})
    assert s.scenario.name == "Offline" and s.offline_expected_qps == 50 and s.min_query_count == 64
    s = settings(spec_for, {"scenarios": ["Offline"], "request_rate": [50]}, expected_qps=7)
    assert s.offline_expected_qps == 7


def test_mlperf_conf_of_a_model(spec_for):
    # MLPerf's own mlperf.conf (built into LoadGen): llama2-70b Server 2000/200 ms, 10 min minimum,
    # the interactive variant 450/40 ms
    s = settings(spec_for, {"scenarios": ["Server"], "request_rate": [3], "num_requests": 10},
                 conf_model="llama2-70b")
    assert s.min_duration_ms == 600000 and s.server_target_qps == 3
    assert (s.ttft_latency, s.tpot_latency) == (2000 * 10**6, 200 * 10**6)
    s = settings(spec_for, {"scenarios": ["Interactive"], "request_rate": [3]},
                 conf_model="llama3_1-8b", min_duration_ms=1000)
    assert (s.ttft_latency, s.tpot_latency) == (500 * 10**6, 30 * 10**6)
    assert s.min_duration_ms == 1000  # recipe keys win over the conf


def test_user_conf_then_recipe_keys(spec_for, tmp_path):
    conf = tmp_path / "user.conf"
    conf.write_text("# a user.conf\n"
                    "timed-model.Server.target_qps = 7.5\n"
                    "*.Server.ttft_latency = 1234\n"
                    "*.*.min_query_count = 77\n"
                    "*.Offline.target_qps = 33\n")
    s = settings(spec_for, {"scenarios": ["Server"], "num_requests": 5}, user_conf=str(conf))
    assert s.server_target_qps == 7.5 and s.ttft_latency == 1234 * 10**6 and s.min_query_count == 77
    s = settings(spec_for, {"scenarios": ["Server"], "request_rate": [2]}, user_conf=str(conf),
                 min_query_count=500, ttft_latency_ms=100)
    assert s.server_target_qps == 2 and s.min_query_count == 500 and s.ttft_latency == 100 * 10**6
    s = settings(spec_for, {"scenarios": ["Offline"]}, user_conf=str(conf))
    assert s.offline_expected_qps == 33


def test_bad_user_conf_is_a_load_error(spec_for, tmp_path):
    conf = tmp_path / "user.conf"
    conf.write_text("*.Server.target_qps = fast\n")
    with pytest.raises(LoadError, match="could not read"):
        settings(spec_for, {"scenarios": ["Server"], "request_rate": [1]}, user_conf=str(conf))


def test_recipe_errors_name_their_path(spec_for, tmp_path):
    with pytest.raises(RecipeError) as e:
        spec_for(sweep={"scenarios": ["Server"]}, mlperf={})
    assert "mlperf Server needs a target QPS" in str(e.value) and "recipe.mlperf" in str(e.value)
    with pytest.raises(RecipeError) as e:
        spec_for(sweep={"scenarios": ["Batch"]}, mlperf={})
    assert "scenario must be one of Offline, Server, Interactive: 'Batch'" in str(e.value)
    for bad, words in (({"mode": "Fast"}, "'mode' must be in"),
                       ({"endpoint_policy": "random"}, "'endpoint_policy' must be in"),
                       ({"isl_spread": 2}, "'isl_spread' must be <= 1"),
                       ({"target_qps": "fast"}, "expected a number")):
        with pytest.raises(RecipeError) as e:
            spec_for(sweep={"scenarios": ["Offline"]}, mlperf=bad)
        assert words in str(e.value) and "recipe.mlperf" in str(e.value), str(e.value)
    with pytest.raises(RecipeError, match="user.conf not found"):
        spec_for(sweep={"scenarios": ["Offline"]}, mlperf={"user_conf": str(tmp_path / "nope.conf")})
