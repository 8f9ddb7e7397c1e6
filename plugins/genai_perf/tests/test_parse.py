"""genai-perf's artifacts as the real tool wrote them here (tests/data, see make_data.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchstack.records import LoadPoint, LoadResult, ValidityGates
from benchstack.results import check_validity

from benchstack_genai_perf import parse

DATA = Path(__file__).parent / "data"
POINT = LoadPoint(index=0, concurrency=4, isl=64, osl=16, num_requests=40)


def load(name):
    export = DATA / name / parse.EXPORT
    data = json.loads(export.read_text()) if export.exists() else None
    raw = parse.parse_raw(DATA / name / parse.RAW)
    return data, raw


def validity(metrics):
    return check_validity(LoadResult(point=POINT, tool="genai_perf", metrics=metrics), ValidityGates())


def test_export_units_and_keys():
    data, raw = load("ok")
    m, source = parse.combine(data, raw)
    assert source == "genai-perf"
    assert m.requests_completed == 40 and m.requests_failed == 0 and m.requests_sent == 40
    assert m.ttft_ms.mean == pytest.approx(data["time_to_first_token"]["avg"])  # already ms
    assert m.itl_ms.p99 == pytest.approx(data["inter_token_latency"]["p99"])
    assert m.e2e_ms.p50 == pytest.approx(data["request_latency"]["p50"])
    assert m.request_throughput == pytest.approx(data["request_throughput"]["avg"])
    assert m.output_token_throughput == pytest.approx(data["output_token_throughput"]["avg"])
    assert m.output_tokens.mean == 16 and m.input_tokens.mean == 64
    assert validity(m).valid


def test_raw_export_agrees_with_genai_perf():
    data, raw = load("ok")
    own = raw.metrics()
    # the same perf_analyzer timestamps: benchstack's arithmetic gives genai-perf's numbers
    # (genai-perf's TTFT, like benchstack's, is the first response with content, not the role chunk)
    assert own.ttft_ms.mean == pytest.approx(data["time_to_first_token"]["avg"], rel=1e-9)
    assert own.ttft_ms.p99 == pytest.approx(data["time_to_first_token"]["p99"], rel=1e-9)
    assert own.e2e_ms.mean == pytest.approx(data["request_latency"]["avg"], rel=1e-9)
    assert own.itl_ms.mean == pytest.approx(data["inter_token_latency"]["avg"], rel=1e-6)
    assert own.output_tokens.mean == 16  # content events here; genai-perf re-tokenizes
    assert all(r.tokens == 16 and r.error is None for r in raw.requests)


def test_in_stream_errors_fail_requests():
    data, raw = load("stream_error")
    assert data is None  # genai-perf stopped: "Detected an error event in the SSE response"
    m, source = parse.combine(data, raw)
    assert source == "perf_analyzer export"
    assert (m.requests_completed, m.requests_failed) == (30, 10)
    assert {r.error for r in raw.failed} == {"in-stream error: injected in-stream failure"}
    v = validity(m)
    assert not v.valid and "10 of 40 requests failed (25.0% > 1.0%)" in v.reasons


def test_zero_token_streams_are_not_dropped():
    data, raw = load("zero_tokens")
    assert data["request_count"]["avg"] == 0  # genai-perf left every empty stream out
    m, _ = parse.combine(data, raw)
    assert m.requests_completed == 40 and m.output_tokens.mean == 0
    assert "zero output tokens" in validity(m).reasons


def test_token_counter_is_used_for_lengths():
    raw = parse.parse_raw(DATA / "ok" / parse.RAW, count_tokens=lambda text: len(text.split()))
    assert {r.tokens for r in raw.requests} == {16}
