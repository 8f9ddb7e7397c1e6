"""Results: validity gates, results.json, summary.txt (perf_summary layout), CSV and Pareto plot."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

import attrs

from .records import LoadResult, Metrics, Validity, ValidityGates

SCHEMA_VERSION = 1


def check_validity(result: LoadResult, gates: ValidityGates) -> Validity:
    """Apply benchstack's gates to one point, plus the tool's own verdict."""
    m = result.metrics
    reasons: list[str] = []
    total = m.requests_completed + m.requests_failed
    if total == 0:
        reasons.append("no request completed")
    elif m.requests_failed / total > gates.max_failed_fraction:
        reasons.append(
            f"{m.requests_failed} of {total} requests failed "
            f"({m.requests_failed / total:.1%} > {gates.max_failed_fraction:.1%})"
        )
    out_mean = m.output_tokens.mean
    if m.requests_completed and (not out_mean or (m.output_token_throughput or 0) <= 0):
        reasons.append("zero output tokens")
    elif out_mean and out_mean < gates.min_osl_fraction * result.point.osl:
        reasons.append(
            f"mean output length {out_mean:.1f} tokens is below {gates.min_osl_fraction:.0%} of "
            f"the requested OSL {result.point.osl}"
        )
    if result.tool_validity is not None and not result.tool_validity.valid:
        reasons.extend(f"{result.tool}: {r}" for r in result.tool_validity.reasons or ["INVALID"])
    return Validity(valid=not reasons, reasons=reasons)


def derived(metrics: Metrics, gpus: int) -> dict[str, float | None]:
    """Per-GPU and per-user figures, as the field plots them.

    tokens/s/user is the decode speed one user sees, 1000 / mean ITL (ms); tokens/s/GPU is the
    output token throughput divided by every GPU of the deployment.
    """
    itl = metrics.itl_ms.mean
    per_user = 1000.0 / itl if itl else None
    per_gpu = metrics.output_token_throughput / gpus if gpus and metrics.output_token_throughput else None
    total_gpu = metrics.total_token_throughput / gpus if gpus and metrics.total_token_throughput else None
    return {
        "output_tokens_per_s_per_user": per_user,
        "output_tokens_per_s_per_gpu": per_gpu,
        "total_tokens_per_s_per_gpu": total_gpu,
    }


def point_record(result: LoadResult, validity: Validity, gpus: int, extra: dict[str, Any]) -> dict:
    rec = {
        "label": result.point.label,
        "point": attrs.asdict(result.point),
        "tool": result.tool,
        "metrics": attrs.asdict(result.metrics),
        "derived": derived(result.metrics, gpus),
        "validity": attrs.asdict(validity),
        "tool_validity": attrs.asdict(result.tool_validity) if result.tool_validity else None,
        "artifacts": list(result.artifacts),
        "command": list(result.command),
        "tool_extra": dict(result.extra),
    }
    rec.update(extra)
    return rec


class RunRecorder:
    """Accumulates one deployment's results and rewrites the files after every point."""

    def __init__(self, run_dir: Path, metadata: dict[str, Any]):
        self.run_dir = Path(run_dir)
        self.data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "metadata": metadata,
            "points": [],
            "errors": [],
        }

    def add_point(self, record: dict) -> None:
        self.data["points"].append(record)
        self.write(plot=False)  # the plot (about 1 s) is drawn once, by the final write

    def add_error(self, message: str) -> None:
        self.data["errors"].append(message)

    def update_metadata(self, **kw: Any) -> None:
        self.data["metadata"].update(kw)

    @property
    def valid(self) -> bool:
        return all(p["validity"]["valid"] for p in self.data["points"])

    def write(self, plot: bool = True) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.run_dir / "results.json", json.dumps(self.data, indent=2, default=str) + "\n")
        _atomic_write(self.run_dir / "results.csv", to_csv([self.data]))
        _atomic_write(self.run_dir / "summary.txt", summary_text(self.data))
        if plot and self.data["points"]:
            try:
                pareto_plot([self.data], self.run_dir / "pareto.png")
            except Exception as exc:  # a plot must never lose a measurement
                self.data["errors"].append(f"pareto plot failed: {exc}")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def summary_text(run: dict) -> str:
    """perf_summary.txt's layout, one block per point, plus a table of all points."""
    md = run["metadata"]
    out = io.StringIO()
    w = out.write
    w(f"benchstack {md.get('benchstack_version', '?')}  run {md.get('name', '?')}  "
      f"deployment {md.get('deployment', 'default')}\n")
    w(f"backend {md.get('backend')}  scheduler {md.get('scheduler')}  load {md.get('load')}  "
      f"model {md.get('model', {}).get('name') if isinstance(md.get('model'), dict) else md.get('model')}  "
      f"GPUs {md.get('total_gpus', 0)}\n")
    for p in run["points"]:
        m, d = p["metrics"], p["derived"]
        w("=========================================================\n")
        w(f"PERFORMANCE OVERVIEW  [{p['label']}  isl={p['point']['isl']} osl={p['point']['osl']}"
          f"{'  ' + p['point']['scenario'] if p['point'].get('scenario') else ''}]\n")
        w("=========================================================\n")
        rows = [
            ("Request Throughput (req/sec)", m["request_throughput"]),
            ("Output Token Throughput (tokens/sec)", m["output_token_throughput"]),
            ("Output Token Throughput per User (tps/user)", d["output_tokens_per_s_per_user"]),
            ("Output Token Throughput per GPU (tps/gpu)", d["output_tokens_per_s_per_gpu"]),
            ("Total Token Throughput per GPU (tokens/sec)", d["total_tokens_per_s_per_gpu"]),
            ("Average request latency (ms)", m["e2e_ms"]["mean"]),
            ("Average time to first token [TTFT] (ms)", m["ttft_ms"]["mean"]),
            ("Average time per output token [TPOT] (ms)", m["itl_ms"]["mean"]),
            ("P99 time to first token (ms)", m["ttft_ms"]["p99"]),
            ("P99 time per output token (ms)", m["itl_ms"]["p99"]),
            ("Requests completed / failed", f"{m['requests_completed']} / {m['requests_failed']}"),
        ]
        for label, value in rows:
            w(f"{label:<46}: {_fmt(value)}\n")
        verdict = "VALID" if p["validity"]["valid"] else "INVALID: " + "; ".join(p["validity"]["reasons"])
        w(f"{'Result':<46}: {verdict}\n")
    w("\n" + table(run) + "\n")
    if run.get("errors"):
        w("\nERRORS\n")
        for e in run["errors"]:
            w(f"- {e}\n")
    return out.getvalue()


TABLE_COLUMNS = (
    ("point", lambda p: p["label"]),
    ("req/s", lambda p: p["metrics"]["request_throughput"]),
    ("out tok/s", lambda p: p["metrics"]["output_token_throughput"]),
    ("tok/s/user", lambda p: p["derived"]["output_tokens_per_s_per_user"]),
    ("tok/s/gpu", lambda p: p["derived"]["output_tokens_per_s_per_gpu"]),
    ("TTFT p50", lambda p: p["metrics"]["ttft_ms"]["p50"]),
    ("TTFT p99", lambda p: p["metrics"]["ttft_ms"]["p99"]),
    ("ITL p50", lambda p: p["metrics"]["itl_ms"]["p50"]),
    ("e2e p50", lambda p: p["metrics"]["e2e_ms"]["p50"]),
    ("ok/fail", lambda p: f"{p['metrics']['requests_completed']}/{p['metrics']['requests_failed']}"),
    ("valid", lambda p: "yes" if p["validity"]["valid"] else "NO"),
)


def table(run: dict, prefix_cols: Iterable[tuple[str, Any]] = ()) -> str:
    cols = list(prefix_cols) + list(TABLE_COLUMNS)
    rows = [[h for h, _ in cols]]
    for p in run["points"]:
        rows.append([_fmt(f(p)) if not isinstance(f(p), str) else f(p) for _, f in cols])
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    return "\n".join("  ".join(c.rjust(widths[i]) for i, c in enumerate(r)) for r in rows)


CSV_FIELDS = (
    "run", "deployment", "backend", "load", "point", "concurrency", "request_rate", "scenario",
    "isl", "osl", "requests_completed", "requests_failed", "request_throughput",
    "output_token_throughput", "total_token_throughput", "tokens_per_s_per_user",
    "tokens_per_s_per_gpu", "ttft_mean_ms", "ttft_p50_ms", "ttft_p99_ms", "itl_mean_ms",
    "itl_p50_ms", "itl_p99_ms", "e2e_mean_ms", "e2e_p50_ms", "e2e_p99_ms", "valid",
)


def to_csv(runs: Iterable[dict]) -> str:
    out = io.StringIO()
    wr = csv.DictWriter(out, fieldnames=CSV_FIELDS)
    wr.writeheader()
    for run in runs:
        md = run["metadata"]
        for p in run["points"]:
            m, d, pt = p["metrics"], p["derived"], p["point"]
            wr.writerow({
                "run": md.get("name"), "deployment": md.get("deployment"), "backend": md.get("backend"),
                "load": p["tool"], "point": p["label"], "concurrency": pt.get("concurrency"),
                "request_rate": pt.get("request_rate"), "scenario": pt.get("scenario"),
                "isl": pt["isl"], "osl": pt["osl"],
                "requests_completed": m["requests_completed"], "requests_failed": m["requests_failed"],
                "request_throughput": m["request_throughput"],
                "output_token_throughput": m["output_token_throughput"],
                "total_token_throughput": m["total_token_throughput"],
                "tokens_per_s_per_user": d["output_tokens_per_s_per_user"],
                "tokens_per_s_per_gpu": d["output_tokens_per_s_per_gpu"],
                "ttft_mean_ms": m["ttft_ms"]["mean"], "ttft_p50_ms": m["ttft_ms"]["p50"],
                "ttft_p99_ms": m["ttft_ms"]["p99"], "itl_mean_ms": m["itl_ms"]["mean"],
                "itl_p50_ms": m["itl_ms"]["p50"], "itl_p99_ms": m["itl_ms"]["p99"],
                "e2e_mean_ms": m["e2e_ms"]["mean"], "e2e_p50_ms": m["e2e_ms"]["p50"],
                "e2e_p99_ms": m["e2e_ms"]["p99"], "valid": p["validity"]["valid"],
            })
    return out.getvalue()


def pareto_front(xy: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated in both coordinates (higher is better in both), sorted by x."""
    front = []
    for x, y in sorted(xy, key=lambda t: (-t[0], -t[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return sorted(front)


def pareto_plot(runs: list[dict], path: Path, labels: list[str] | None = None) -> Path:
    """Output tokens/s/GPU against tokens/s/user, one series per run, the front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    for i, run in enumerate(runs):
        md = run["metadata"]
        pts = [
            (p["derived"]["output_tokens_per_s_per_user"], _per_gpu_or_total(p), p)
            for p in run["points"]
        ]
        pts = [(x, y, p) for x, y, p in pts if x and y]
        if not pts:
            continue
        label = labels[i] if labels else f"{md.get('name')}/{md.get('deployment')} ({md.get('load')})"
        xs, ys = [x for x, _, _ in pts], [y for _, y, _ in pts]
        line = ax.plot(xs, ys, "o", label=label, alpha=0.8)[0]
        for x, y, p in pts:
            ax.annotate(p["label"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        front = pareto_front(list(zip(xs, ys)))
        ax.plot([f[0] for f in front], [f[1] for f in front], "-", color=line.get_color(), alpha=0.6)
    per_gpu = any(p["derived"]["output_tokens_per_s_per_gpu"] for r in runs for p in r["points"])
    ax.set_xlabel("output tokens/s/user")
    ax.set_ylabel("output tokens/s/GPU" if per_gpu else "output tokens/s (no GPU count)")
    ax.set_title("Throughput vs interactivity")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _per_gpu_or_total(p: dict) -> float | None:
    return p["derived"]["output_tokens_per_s_per_gpu"] or p["metrics"]["output_token_throughput"]


def load_run(path: Path) -> dict:
    """Read a results.json (or the one in a run directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    return json.loads(path.read_text())
