"""vLLM's Prometheus ``/metrics``: a small text-format parser and a compact per-server summary.

vLLM 0.32 names used here (all cumulative; series are summed over their labels, e.g. ``engine``):
``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``, ``vllm:request_success_total``,
``vllm:num_preemptions_total``, ``vllm:prompt_tokens_by_source_total{source=...}`` (the decode
server counts ``external_kv_transfer`` tokens there), gauges ``vllm:num_requests_running``,
``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc``, and the NIXL connector's
histograms ``vllm:nixl_xfer_time_seconds``, ``vllm:nixl_post_time_seconds``,
``vllm:nixl_bytes_transferred``, ``vllm:nixl_num_descriptors`` and counters
``vllm:nixl_num_failed_transfers_total``, ``vllm:nixl_num_failed_notifications_total``,
``vllm:nixl_num_kv_expired_reqs_total`` (recorded on the side that pulls: the decode server).
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator

Sample = tuple[str, dict[str, str], float]

#: compact key -> Prometheus series (counters and histogram _count/_sum are cumulative)
COUNTERS = {
    "prompt_tokens": "vllm:prompt_tokens_total",
    "generation_tokens": "vllm:generation_tokens_total",
    "requests_success": "vllm:request_success_total",
    "preemptions": "vllm:num_preemptions_total",
    "nixl_xfers": "vllm:nixl_xfer_time_seconds_count",
    "nixl_xfer_time_s": "vllm:nixl_xfer_time_seconds_sum",
    "nixl_post_time_s": "vllm:nixl_post_time_seconds_sum",
    "nixl_bytes": "vllm:nixl_bytes_transferred_sum",
    "nixl_descriptors": "vllm:nixl_num_descriptors_sum",
    "nixl_failed_transfers": "vllm:nixl_num_failed_transfers_total",
    "nixl_failed_notifications": "vllm:nixl_num_failed_notifications_total",
    "nixl_kv_expired_reqs": "vllm:nixl_num_kv_expired_reqs_total",
}
GAUGES = {
    "requests_running": "vllm:num_requests_running",
    "requests_waiting": "vllm:num_requests_waiting",
    "kv_cache_usage": "vllm:kv_cache_usage_perc",
}
BY_SOURCE = "vllm:prompt_tokens_by_source_total"


def parse(text: str) -> Iterator[Sample]:
    """Samples of a Prometheus text exposition: ``(name, labels, value)``; comments skipped."""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            yield _parse_line(line)
        except ValueError:
            continue  # a line we do not understand is not worth failing a run for


def _parse_line(line: str) -> Sample:
    brace = line.find("{")
    space = line.find(" ")
    labels: dict[str, str] = {}
    if brace != -1 and (space == -1 or brace < space):
        name = line[:brace]
        rest = _parse_labels(line, brace + 1, labels)
    else:
        if space == -1:
            raise ValueError(line)
        name, rest = line[:space], line[space:]
    fields = rest.split()
    if not fields or not name:
        raise ValueError(line)
    return name, labels, float(fields[0])  # float() reads NaN, +Inf, -Inf


def _parse_labels(line: str, i: int, out: dict[str, str]) -> str:
    """Read ``k="v",...}`` from ``line[i:]`` into ``out``; return what follows the brace."""
    n = len(line)
    while i < n:
        while i < n and line[i] in " ,":
            i += 1
        if i < n and line[i] == "}":
            return line[i + 1:]
        eq = line.index("=", i)
        key = line[i:eq].strip()
        if line[eq + 1] != '"':
            raise ValueError(line)
        j, value = eq + 2, []
        while line[j] != '"':
            if line[j] == "\\":
                j += 1
                value.append({"n": "\n"}.get(line[j], line[j]))
            else:
                value.append(line[j])
            j += 1
        out[key] = "".join(value)
        i = j + 1
    raise ValueError(line)


def totals(samples: Iterable[Sample]) -> dict[str, float]:
    """Sum of every series by name (over all label sets), skipping NaN."""
    out: dict[str, float] = {}
    for name, _labels, value in samples:
        if not math.isnan(value):
            out[name] = out.get(name, 0.0) + value
    return out


def summarize(text: str) -> dict[str, object]:
    """The compact dict of one scrape: counters, gauges, prompt tokens by source."""
    samples = list(parse(text))
    sums = totals(samples)
    out: dict[str, object] = {k: num(sums[s]) for k, s in COUNTERS.items() if s in sums}
    out.update({k: num(sums[s]) for k, s in GAUGES.items() if s in sums})
    by_source: dict[str, float] = {}
    for name, labels, value in samples:
        if name == BY_SOURCE and not math.isnan(value):
            src = labels.get("source", "?")
            by_source[src] = by_source.get(src, 0.0) + value
    if by_source:
        out["prompt_tokens_by_source"] = {k: num(v) for k, v in sorted(by_source.items())}
    return out


def delta(now: dict[str, object], before: dict[str, object] | None) -> dict[str, object]:
    """Counters of ``now`` minus ``before`` (what one load point did); gauges as they are now."""
    if not before:
        before = {}
    out: dict[str, object] = {}
    for key, value in now.items():
        if key in COUNTERS:
            out[key] = num(value - before.get(key, 0))  # type: ignore[operator]
        elif key == "prompt_tokens_by_source":
            prev = before.get(key) or {}
            out[key] = {s: num(v - prev.get(s, 0)) for s, v in value.items()}  # type: ignore[union-attr]
        else:
            out[key] = value
    _derive(out)
    return out


def _derive(d: dict[str, object]) -> None:
    xfers = d.get("nixl_xfers") or 0
    if xfers:
        d["nixl_xfer_time_ms_mean"] = round(1000.0 * d.get("nixl_xfer_time_s", 0) / xfers, 3)  # type: ignore[operator]
        d["nixl_bytes_mean"] = round(d.get("nixl_bytes", 0) / xfers, 1)  # type: ignore[operator]


def role_totals(per_server: dict[str, dict[str, object]], roles: dict[str, str]) -> dict[str, dict]:
    """Counters summed over the servers of each role (``{"prefill": {...}, "decode": {...}}``)."""
    out: dict[str, dict[str, object]] = {}
    for name, d in per_server.items():
        acc = out.setdefault(roles[name], {})
        for key in COUNTERS:
            if key in d:
                acc[key] = num(acc.get(key, 0) + d[key])  # type: ignore[operator]
    for acc in out.values():
        _derive(acc)
    return out


ROUTER_PREFIXES = ("benchstack_router_", "vllm_router_")


def router_counters(text: str) -> dict[str, float | int]:
    """The router's own counters (benchstack's or vllm-router's), summed over labels."""
    out = {}
    for name, value in sorted(totals(parse(text)).items()):
        for prefix in ROUTER_PREFIXES:
            if name.startswith(prefix) and name.endswith("_total"):
                out[name.removeprefix(prefix)] = num(value)
    return out


def num(x: float) -> float | int:
    """Integers stay integers in results.json; other values are rounded to microseconds."""
    if float(x).is_integer():
        return int(x)
    return round(float(x), 6)
