"""LoadGen's logs: ``mlperf_log_detail.txt`` (``:::MLLOG {json}`` lines) and the summary.

The detail log holds every result key (``result_validity``, ``result_first_token_*``,
``result_time_per_output_token_*``, ...), the effective settings and LoadGen's own errors and
warnings; the summary is read for the verdict when no detail log is there.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from attrs import field, frozen

from benchstack.records import Stat, Validity

__all__ = ["LoadgenReport", "Stat", "read_report", "parse_detail", "parse_summary",
           "read_accuracy_log"]

DETAIL = "mlperf_log_detail.txt"
SUMMARY = "mlperf_log_summary.txt"
ACCURACY = "mlperf_log_accuracy.json"
_PREFIX = ":::MLLOG "
_PCTS = {"p50": "50.00", "p90": "90.00", "p95": "95.00", "p99": "99.00"}


@frozen(kw_only=True)
class LoadgenReport:
    """What LoadGen wrote: every MLLOG key (last value wins), its errors and warnings."""

    values: dict[str, Any] = field(factory=dict)
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    summary: dict[str, str] = field(factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    # ------------------------------------------------------------------ the verdict
    @property
    def validity(self) -> Validity | None:
        """LoadGen's VALID/INVALID with the reasons it gives; None when it gave none (accuracy runs)."""
        verdict = self.values.get("result_validity") or self.summary.get("Result is")
        if verdict is None:
            return None
        if str(verdict).upper() == "VALID":
            return Validity(valid=True)
        reasons = []
        checks = (("result_min_duration_met", "Min duration satisfied", "min duration not satisfied"),
                  ("result_min_queries_met", "Min queries satisfied", "min query count not satisfied"),
                  ("result_perf_constraints_met", "Performance constraints satisfied",
                   "performance constraints not satisfied (TTFT/TPOT/latency limits)"),
                  ("early_stopping_met", "Early stopping satisfied", "early stopping not satisfied"))
        for key, summary_key, text in checks:
            met = self.values.get(key)
            if met is None and summary_key in self.summary:
                met = self.summary[summary_key].strip().lower() == "yes"
            if met is False:
                if key == "early_stopping_met":
                    detail = " ".join(_squash(self.values.get(k, "")) for k in
                                      ("early_stopping_ttft_result", "early_stopping_tpot_result",
                                       "early_stopping_result"))
                    text += f" ({detail.strip()})" if detail.strip() else ""
                reasons.append(text)
        why = _squash(self.values.get("result_invalid_reason", ""))
        if why:
            reasons.append(why)
        reasons.extend(f"LoadGen error: {e}" for e in self.errors)
        return Validity(valid=False, reasons=reasons or ["LoadGen says INVALID"])

    # ------------------------------------------------------------------ numbers
    def stat_ns(self, kind: str) -> Stat:
        """``latency``, ``first_token`` or ``tpot`` as a Stat in ms (empty if not reported)."""
        v = self.values
        if kind == "latency":
            keys = {"mean": "result_mean_latency_ns", "min": "result_min_latency_ns",
                    "max": "result_max_latency_ns"}
            keys.update({s: f"result_{p}_percentile_latency_ns" for s, p in _PCTS.items()})
        elif kind == "first_token":
            keys = {"mean": "result_first_token_mean_latency_ns",
                    "min": "result_first_token_min_latency_ns",
                    "max": "result_first_token_max_latency_ns"}
            keys.update({s: f"result_first_token_{p}_percentile_latency_ns" for s, p in _PCTS.items()})
        elif kind == "tpot":
            keys = {"mean": "result_time_to_output_token_mean",
                    "min": "result_time_to_output_token_min",
                    "max": "result_time_to_output_token_max"}
            keys.update({s: f"result_time_per_output_token_{p}_percentile_ns" for s, p in _PCTS.items()})
        else:
            raise ValueError(kind)
        got = {s: float(v[k]) / 1e6 for s, k in keys.items() if isinstance(v.get(k), (int, float))}
        return Stat(**got) if got else Stat()

    @property
    def samples_per_second(self) -> float | None:
        for k in ("result_completed_samples_per_sec", "result_samples_per_second"):
            if isinstance(self.values.get(k), (int, float)):
                return float(self.values[k])
        return None

    @property
    def tokens_per_second(self) -> float | None:
        for k in ("result_completed_tokens_per_second", "result_tokens_per_second"):
            if isinstance(self.values.get(k), (int, float)):
                return float(self.values[k])
        return None

    def extra(self) -> dict[str, Any]:
        """Numbers worth keeping in results.json beyond benchstack's Metrics."""
        keep = ("loadgen_version", "effective_scenario", "effective_test_mode", "effective_target_qps",
                "effective_min_duration_ms", "effective_min_query_count", "effective_min_sample_count",
                "effective_samples_per_query", "generated_query_count", "result_query_count",
                "result_overlatency_query_count", "result_scheduled_samples_per_sec",
                "result_token_throughput_with_loadgen_overhead", "requested_server_ttft_latency",
                "requested_server_tpot_latency", "result_validity", "early_stopping_met")
        out = {k: self.values[k] for k in keep if k in self.values}
        if self.errors:
            out["errors"] = list(self.errors)
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def _squash(text: Any) -> str:
    return re.sub(r"\s+", " ", str(text or "")).strip()


def parse_detail(text: str) -> tuple[dict[str, Any], list[str], list[str]]:
    """(values, errors, warnings) of a detail log's MLLOG lines."""
    values: dict[str, Any] = {}
    errors: list[str] = []
    warnings: list[str] = []
    for line in text.splitlines():
        if not line.startswith(_PREFIX):
            continue
        try:
            entry = json.loads(line[len(_PREFIX):])
        except ValueError:
            continue
        key, value = entry.get("key"), entry.get("value")
        meta = entry.get("metadata") or {}
        if meta.get("is_error"):
            errors.append(f"{key}: {_squash(value)}")
        elif meta.get("is_warning"):
            warnings.append(f"{key}: {_squash(value)}")
        if key:
            values[key] = value
    return values, errors, warnings


def parse_summary(text: str) -> dict[str, str]:
    """``key : value`` lines of the summary (first occurrence wins)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        key = key.strip()
        if key and key not in out:
            out[key] = value.strip()
    return out


def read_report(directory: Path) -> LoadgenReport:
    """The report of the LoadGen logs in ``directory`` (empty if it wrote none)."""
    directory = Path(directory)
    values: dict[str, Any] = {}
    errors: list[str] = []
    warnings: list[str] = []
    detail = directory / DETAIL
    if detail.is_file():
        values, errors, warnings = parse_detail(detail.read_text(errors="replace"))
    summary = directory / SUMMARY
    summ = parse_summary(summary.read_text(errors="replace")) if summary.is_file() else {}
    return LoadgenReport(values=values, errors=tuple(errors), warnings=tuple(warnings), summary=summ)


def read_accuracy_log(path: Path) -> list[dict[str, Any]]:
    """The entries of ``mlperf_log_accuracy.json`` (``qsl_idx``, hex ``data``, ``token_count``)."""
    text = Path(path).read_text().strip()
    if not text:
        return []
    # LoadGen writes one object per line with a trailing comma before the closing bracket
    # on some versions; tolerate it
    text = re.sub(r",\s*\]\s*$", "]", text)
    return json.loads(text)
