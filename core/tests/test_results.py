"""Validity gates, results files and `bench results` (summarise, compare, plot)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from benchstack.cli import cli
from benchstack.metrics import metrics_from_perf_export, percentile, stat_of
from benchstack.records import LoadPoint, LoadResult, Metrics, Stat, Validity, ValidityGates
from benchstack.results import RunRecorder, check_validity, pareto_front, point_record

GATES = ValidityGates(max_failed_fraction=0.01, min_osl_fraction=0.9)


def result(completed=100, failed=0, osl_mean=64.0, out_tp=1000.0, tool_validity=None, osl=64, c=4):
    m = Metrics(requests_sent=completed + failed, requests_completed=completed, requests_failed=failed,
                request_throughput=10.0, output_token_throughput=out_tp, total_token_throughput=3 * out_tp,
                ttft_ms=Stat(mean=20.0, p50=19.0, p99=30.0), itl_ms=Stat(mean=5.0, p50=5.0, p99=6.0),
                e2e_ms=Stat(mean=335.0, p50=330.0, p99=360.0), output_tokens=Stat(mean=osl_mean))
    return LoadResult(point=LoadPoint(index=0, concurrency=c, isl=128, osl=osl), tool="t", metrics=m,
                      tool_validity=tool_validity)


def test_valid_point():
    assert check_validity(result(), GATES) == Validity(valid=True, reasons=())


def test_gate_failed_requests():
    v = check_validity(result(completed=97, failed=3), GATES)
    assert not v.valid and v.reasons == ("3 of 100 requests failed (3.0% > 1.0%)",)


def test_gate_zero_output_tokens():
    v = check_validity(result(osl_mean=0.0, out_tp=0.0), GATES)
    assert not v.valid and v.reasons == ("zero output tokens",)


def test_gate_short_outputs():
    v = check_validity(result(osl_mean=40.0), GATES)
    assert not v.valid
    assert v.reasons == ("mean output length 40.0 tokens is below 90% of the requested OSL 64",)


def test_gate_tool_verdict():
    v = check_validity(result(tool_validity=Validity(valid=False, reasons=["early stopping not met"])), GATES)
    assert v.reasons == ("t: early stopping not met",)


def test_gate_nothing_completed():
    v = check_validity(result(completed=0, failed=5), GATES)
    assert "no request completed" not in v.reasons and not v.valid
    v = check_validity(result(completed=0, failed=0), GATES)
    assert v.reasons == ("no request completed",)


def test_percentiles_match_numpy_definition():
    vals = sorted([1.0, 2.0, 3.0, 4.0, 10.0])
    assert percentile(vals, 50) == 3.0
    assert percentile(vals, 90) == pytest.approx(7.6)
    s = stat_of([4, 1, 3, 2, 10])
    assert (s.min, s.max, s.mean, s.p50) == (1.0, 10.0, 4.0, 3.0)


def test_perf_export_units_are_normalised():
    data = {"time_to_first_token": {"unit": "s", "avg": 0.02, "p50": 0.019},
            "inter_token_latency": {"unit": "ns", "avg": 5e6},
            "request_latency": {"unit": "ms", "avg": 300.0},
            "request_throughput": {"unit": "requests/sec", "avg": 4.0},
            "request_count": {"avg": 40}, "output_sequence_length": {"avg": 64},
            "input_sequence_length": {"avg": 128}}
    m = metrics_from_perf_export(data)
    assert m.ttft_ms.mean == pytest.approx(20.0) and m.ttft_ms.p50 == pytest.approx(19.0)
    assert m.itl_ms.mean == pytest.approx(5.0)
    assert m.total_token_throughput == pytest.approx(4.0 * 192)
    assert m.duration_s == pytest.approx(10.0)
    with pytest.raises(ValueError, match="unknown latency unit"):
        metrics_from_perf_export({"time_to_first_token": {"unit": "fortnights", "avg": 1}})


def test_pareto_front():
    assert pareto_front([(1, 10), (2, 8), (1.5, 5), (3, 2), (2.5, 1)]) == [(1, 10), (2, 8), (3, 2)]


def write_run(path, name, points):
    rec = RunRecorder(path, {"name": name, "deployment": "default", "backend": "b", "scheduler": "local",
                             "load": "t", "total_gpus": 2})
    for c, tp in points:
        r = result(out_tp=tp, c=c)
        rec.add_point(point_record(r, check_validity(r, GATES), 2, {}))
    return path


def test_run_files_and_summary_layout(tmp_path):
    run = write_run(tmp_path / "a", "a", [(1, 100.0), (8, 700.0)])
    summary = (run / "summary.txt").read_text()
    assert summary.count("PERFORMANCE OVERVIEW") == 2
    assert "Output Token Throughput per GPU (tps/gpu)     : 350.00" in summary
    assert "Average time per output token [TPOT] (ms)     : 5.00" in summary
    rows = list(csv.DictReader(io.StringIO((run / "results.csv").read_text())))
    assert [r["concurrency"] for r in rows] == ["1", "8"]
    assert float(rows[1]["tokens_per_s_per_gpu"]) == 350.0
    assert float(rows[0]["tokens_per_s_per_user"]) == 200.0  # 1000 / ITL 5 ms
    data = json.loads((run / "results.json").read_text())
    assert data["points"][1]["derived"]["output_tokens_per_s_per_gpu"] == 350.0


def test_bench_results_compares_and_plots(tmp_path):
    write_run(tmp_path / "runs" / "a", "a", [(1, 100.0), (8, 700.0)])
    write_run(tmp_path / "runs" / "b", "b", [(1, 120.0)])
    out = CliRunner().invoke(cli, ["results", str(tmp_path / "runs"), "--csv", str(tmp_path / "all.csv"),
                                   "--plot", str(tmp_path / "all.png")])
    assert out.exit_code == 0, out.output
    assert "== a / default" in out.output and "== b / default" in out.output
    assert len((tmp_path / "all.csv").read_text().splitlines()) == 4
    assert (tmp_path / "all.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_results_rejects_non_results(tmp_path):
    (tmp_path / "x.json").write_text("not json")
    out = CliRunner().invoke(cli, ["results", str(tmp_path / "x.json")])
    assert out.exit_code != 0 and "not a benchstack results file" in out.output
