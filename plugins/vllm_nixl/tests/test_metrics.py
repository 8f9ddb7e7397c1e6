"""The Prometheus parser and the compact summary, on /metrics text of a real vLLM 0.32 P/D pair."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchstack_vllm_nixl import metrics, probe

DATA = Path(__file__).parent / "data"


def _text(role: str) -> str:
    return (DATA / f"vllm-0.32-{role}.prom").read_text()


def test_parse_labels_escapes_and_special_values():
    text = "\n".join([
        "# HELP x a help line",
        "# TYPE x counter",
        'x_total{a="1",b="with \\"quote\\", comma}",c="back\\\\slash"} 3.0',
        "y 4",
        "z{} +Inf",
        "w NaN 1700000000",
        "garbage line that is not a sample",
        "",
    ])
    samples = list(metrics.parse(text))
    assert samples[0] == ("x_total", {"a": "1", "b": 'with "quote", comma}', "c": "back\\slash"}, 3.0)
    assert samples[1] == ("y", {}, 4.0)
    assert samples[2][0] == "z" and samples[2][2] == float("inf")
    assert [s[0] for s in samples] == ["x_total", "y", "z", "w"]
    assert "w" not in metrics.totals(samples)  # NaN is skipped


def test_summary_of_real_decode_server_shows_nixl_transfers():
    d = metrics.summarize(_text("decode"))
    assert d["nixl_xfers"] == 8
    assert d["nixl_bytes"] == 2097152
    assert d["nixl_xfer_time_s"] == pytest.approx(0.024447)
    assert d["nixl_failed_transfers"] == 0
    assert d["prompt_tokens"] == 610 and d["generation_tokens"] == 128
    assert d["requests_success"] == 8
    # the decode server computed none of the prompt: all of it came over NIXL
    assert d["prompt_tokens_by_source"] == {"external_kv_transfer": 610, "local_cache_hit": 0,
                                            "local_compute": 0}
    json.dumps(d)  # results.json material


def test_summary_of_real_prefill_server():
    p = metrics.summarize(_text("prefill"))
    assert p["nixl_xfers"] == 0  # transfers are recorded where they are read: on decode
    assert p["generation_tokens"] == 8  # one token per request
    assert p["prompt_tokens_by_source"]["local_compute"] == 610


def test_delta_counts_one_point_and_keeps_gauges():
    before = {"prompt_tokens": 100, "nixl_xfers": 2, "nixl_xfer_time_s": 0.004, "nixl_bytes": 1000,
              "kv_cache_usage": 0.5, "prompt_tokens_by_source": {"external_kv_transfer": 100}}
    now = {"prompt_tokens": 300, "nixl_xfers": 6, "nixl_xfer_time_s": 0.012, "nixl_bytes": 5000,
           "kv_cache_usage": 0.25, "prompt_tokens_by_source": {"external_kv_transfer": 300}}
    d = metrics.delta(now, before)
    assert d["prompt_tokens"] == 200 and d["nixl_xfers"] == 4
    assert d["nixl_xfer_time_ms_mean"] == pytest.approx(2.0)
    assert d["nixl_bytes_mean"] == 1000
    assert d["kv_cache_usage"] == 0.25
    assert d["prompt_tokens_by_source"] == {"external_kv_transfer": 200}
    assert metrics.delta(now, None)["nixl_xfers"] == 6


def test_role_totals():
    per = {"decode-0": {"nixl_xfers": 3, "nixl_xfer_time_s": 0.003, "kv_cache_usage": 0.1},
           "decode-1": {"nixl_xfers": 1, "nixl_xfer_time_s": 0.001},
           "prefill-0": {"prompt_tokens": 10}}
    roles = {"decode-0": "decode", "decode-1": "decode", "prefill-0": "prefill"}
    t = metrics.role_totals(per, roles)
    assert t["decode"]["nixl_xfers"] == 4
    assert t["decode"]["nixl_xfer_time_ms_mean"] == pytest.approx(1.0)
    assert "kv_cache_usage" not in t["decode"]  # gauges are per server only
    assert t["prefill"] == {"prompt_tokens": 10}


def test_collect_saves_raw_text_and_point_deltas(tmp_path, monkeypatch):
    """bench_collect's work without servers: scrapes are served from the sample files."""
    texts = {"http://p": _text("prefill"), "http://d": _text("decode")}
    zero = {"http://p": "vllm:prompt_tokens_total 0\n", "http://d": "vllm:nixl_xfer_time_seconds_count 2\n"}
    served = [zero, texts]
    monkeypatch.setattr(probe, "scrape", lambda urls, timeout_s: {
        n: served[0][u] for n, u in urls.items()})
    info = {"urls": {"prefill-0": "http://p", "decode-0": "http://d"},
            "roles": {"prefill-0": "prefill", "decode-0": "decode"}}
    probe.baseline(tmp_path, info["urls"], 1.0)
    served.pop(0)
    out = tmp_path / "points" / "00-c2"
    meta, artifacts = probe.collect(tmp_path, out, info, final=False, timeout_s=1.0)
    assert artifacts == ["points/00-c2/metrics/prefill-0.prom", "points/00-c2/metrics/decode-0.prom"]
    assert (out / "metrics" / "decode-0.prom").read_text() == texts["http://d"]
    assert meta["scope"] == "point"
    assert meta["roles"]["decode"]["nixl_xfers"] == 6  # 8 since start, 2 before the point
    assert meta["servers"]["decode-0"]["url"] == "http://d"
    final, _ = probe.collect(tmp_path, tmp_path, info, final=True, timeout_s=1.0)
    assert final["scope"] == "deployment" and final["roles"]["decode"]["nixl_xfers"] == 8
    json.dumps(meta)


def test_collect_reports_unreachable_servers(tmp_path):
    info = {"urls": {"decode-0": "http://127.0.0.1:9"}, "roles": {"decode-0": "decode"}}
    meta, artifacts = probe.collect(tmp_path, tmp_path / "p", info, final=False, timeout_s=1.0)
    assert artifacts == [] and "decode-0" in meta["errors"]


def test_router_counters_of_both_routers():
    vr = metrics.router_counters((DATA / "vllm-router-0.1.17.prom").read_text())
    assert vr["pd_prefill_requests_total"] == 8 and vr["pd_decode_requests_total"] == 8
    assert "worker_health" not in str(vr)  # gauges are left out
    ours = metrics.router_counters("benchstack_router_requests_total 3\n"
                                   'benchstack_router_upstream_requests_total{role="decode",url="u"} 3\n')
    assert ours == {"requests_total": 3, "upstream_requests_total": 3}
