"""LoadGen log parsing, on logs the real LoadGen wrote here (tests/data, see make_data.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchstack_mlperf import logs

DATA = Path(__file__).parent / "data"


def test_server_log_invalid_by_early_stopping_with_loadgen_words():
    r = logs.read_report(DATA / "server")
    assert r.get("effective_scenario") == "Server"
    v = r.validity
    assert v is not None and not v.valid
    assert any("early stopping not satisfied" in x and "Would need to run at least" in x
               for x in v.reasons), v.reasons
    assert r.errors == ()


def test_server_log_numbers_in_ms():
    r = logs.read_report(DATA / "server")
    ttft, tpot, e2e = r.stat_ns("first_token"), r.stat_ns("tpot"), r.stat_ns("latency")
    raw = r.values
    assert ttft.p50 == pytest.approx(raw["result_first_token_50.00_percentile_latency_ns"] / 1e6)
    assert ttft.p99 == pytest.approx(raw["result_first_token_99.00_percentile_latency_ns"] / 1e6)
    assert tpot.mean == pytest.approx(raw["result_time_to_output_token_mean"] / 1e6)
    assert tpot.p90 == pytest.approx(raw["result_time_per_output_token_90.00_percentile_ns"] / 1e6)
    assert e2e.max == pytest.approx(raw["result_max_latency_ns"] / 1e6)
    # the timed server: TTFT 20 ms, ITL 5 ms, OSL 32 -> e2e about 20 + 31 * 5 ms
    assert 19 < ttft.p50 < 60 and 4 < tpot.p50 < 8 and 170 < e2e.p50 < 300
    assert r.samples_per_second == pytest.approx(raw["result_completed_samples_per_sec"])
    assert r.tokens_per_second == pytest.approx(raw["result_completed_tokens_per_second"])
    assert r.tokens_per_second == pytest.approx(32 * r.samples_per_second, rel=0.01)


def test_offline_log_valid_with_throughput_only():
    r = logs.read_report(DATA / "offline")
    assert r.validity is not None and r.validity.valid
    assert r.get("effective_scenario") == "Offline"
    assert r.stat_ns("first_token").mean is None  # Offline reports no token latencies
    assert r.samples_per_second == pytest.approx(r.get("result_samples_per_second"))
    assert r.tokens_per_second == pytest.approx(32 * r.samples_per_second, rel=0.01)
    assert r.get("result_query_count") == 1 and r.get("generated_samples_per_query") == 100


def test_summary_alone_gives_the_verdict(tmp_path):
    (tmp_path / logs.SUMMARY).write_text((DATA / "server" / logs.SUMMARY).read_text())
    v = logs.read_report(tmp_path).validity
    assert v is not None and not v.valid and v.reasons == ("early stopping not satisfied",)
    (tmp_path / logs.SUMMARY).write_text((DATA / "offline" / logs.SUMMARY).read_text())
    assert logs.read_report(tmp_path).validity.valid


def test_accuracy_run_has_no_verdict_and_keeps_outputs():
    r = logs.read_report(DATA / "accuracy")
    assert r.validity is None
    entries = logs.read_accuracy_log(DATA / "accuracy" / logs.ACCURACY)
    assert sorted(e["qsl_idx"] for e in entries) == list(range(8))
    outputs = [json.loads(line) for line in (DATA / "accuracy" / "mlperf_outputs.jsonl").read_text().splitlines()]
    by_idx = {o["qsl_idx"]: o for o in outputs}
    for e in entries:  # the response data LoadGen logged is the decoded text, as UTF-8
        assert bytes.fromhex(e["data"]).decode() == by_idx[e["qsl_idx"]]["text"]
        assert e["token_count"] == by_idx[e["qsl_idx"]]["output_tokens"] == 8


def test_loadgen_errors_make_the_point_invalid():
    line = (':::MLLOG {"key": "error_runtime", "value": "QSL mismatch", "time_ms": 1, '
            '"metadata": {"is_error": true, "is_warning": false}}')
    values, errors, warnings = logs.parse_detail(
        line + '\n:::MLLOG {"key": "result_validity", "value": "INVALID", "metadata": {}}\n')
    r = logs.LoadgenReport(values=values, errors=tuple(errors), warnings=tuple(warnings))
    assert not r.validity.valid
    assert "LoadGen error: error_runtime: QSL mismatch" in r.validity.reasons
