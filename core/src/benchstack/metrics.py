"""Metric helpers shared by load plugins: distributions, unit normalisation, perf-export parsing."""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

from .records import Metrics, Stat

_TO_MS = {"ms": 1.0, "s": 1000.0, "sec": 1000.0, "us": 1e-3, "ns": 1e-6}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of already sorted values; q in [0, 100]."""
    if not sorted_values:
        raise ValueError("no values")
    k = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return float(sorted_values[lo])
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo))


def stat_of(values: Iterable[float]) -> Stat:
    """Distribution of raw samples (empty -> all None)."""
    vals = sorted(float(v) for v in values if v is not None)
    if not vals:
        return Stat()
    mean = sum(vals) / len(vals)
    var = sum((v - mean) ** 2 for v in vals) / len(vals)
    return Stat(
        mean=mean, min=vals[0], max=vals[-1], p50=percentile(vals, 50), p90=percentile(vals, 90),
        p95=percentile(vals, 95), p99=percentile(vals, 99), std=math.sqrt(var),
    )


def scale_stat(stat: Stat, factor: float) -> Stat:
    return Stat(**{k: (None if v is None else v * factor) for k, v in _stat_items(stat)})


def _stat_items(stat: Stat):
    return ((k, getattr(stat, k)) for k in ("mean", "min", "max", "p50", "p90", "p95", "p99", "std"))


def stat_from_export(entry: Mapping[str, Any] | None, to_ms: bool = False) -> Stat:
    """A genai-perf/AIPerf export entry (``{"unit", "avg", "p50", ...}``) as a Stat.

    With ``to_ms`` the entry's ``unit`` is converted to milliseconds.
    """
    if not entry:
        return Stat()
    factor = 1.0
    if to_ms:
        unit = str(entry.get("unit", "ms")).lower()
        if unit not in _TO_MS:
            raise ValueError(f"unknown latency unit {unit!r}")
        factor = _TO_MS[unit]

    def g(key):
        val = entry.get(key)
        return None if val is None else float(val) * factor

    return Stat(mean=g("avg"), min=g("min"), max=g("max"), p50=g("p50"), p90=g("p90"),
                p95=g("p95"), p99=g("p99"), std=g("std"))


def _scalar(data: Mapping[str, Any], key: str) -> float | None:
    entry = data.get(key)
    if isinstance(entry, Mapping):
        val = entry.get("avg")
        return None if val is None else float(val)
    return None if entry is None else float(entry)


def metrics_from_perf_export(data: Mapping[str, Any], *, requests_sent: int | None = None) -> Metrics:
    """Normalise a ``profile_export_*.json`` of genai-perf (0.0.16) or AIPerf (0.13).

    Both use the same keys (``time_to_first_token``, ``inter_token_latency``, ...); AIPerf adds
    ``completed_request_count``, ``error_request_count``/``error_summary`` and
    ``benchmark_duration``. Latencies are converted to ms from each entry's own unit.
    """
    completed = _scalar(data, "completed_request_count")
    if completed is None:
        completed = _scalar(data, "request_count") or 0.0
    failed = _scalar(data, "error_request_count")
    if failed is None:
        failed = float(sum(int(e.get("count", 0)) for e in data.get("error_summary") or []
                           if isinstance(e, Mapping)))
    out_tp = _scalar(data, "output_token_throughput")
    total_tp = _scalar(data, "total_token_throughput")
    req_tp = _scalar(data, "request_throughput")
    osl = stat_from_export(data.get("output_sequence_length"))
    isl = stat_from_export(data.get("input_sequence_length"))
    if total_tp is None and req_tp is not None and osl.mean is not None and isl.mean is not None:
        total_tp = req_tp * (osl.mean + isl.mean)
    duration = _scalar(data, "benchmark_duration")
    if duration is not None and str((data.get("benchmark_duration") or {}).get("unit", "sec")) == "ms":
        duration /= 1000.0
    if duration is None and req_tp:
        duration = completed / req_tp
    sent = requests_sent if requests_sent is not None else int(completed + failed)
    return Metrics(
        duration_s=duration,
        requests_sent=sent,
        requests_completed=int(completed),
        requests_failed=int(failed),
        request_throughput=req_tp,
        output_token_throughput=out_tp,
        total_token_throughput=total_tp,
        ttft_ms=stat_from_export(data.get("time_to_first_token"), to_ms=True),
        itl_ms=stat_from_export(data.get("inter_token_latency"), to_ms=True),
        e2e_ms=stat_from_export(data.get("request_latency"), to_ms=True),
        input_tokens=isl,
        output_tokens=osl,
    )
