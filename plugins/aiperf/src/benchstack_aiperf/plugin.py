"""AIPerf (``aiperf profile``) as a benchstack load generator: one AIPerf run per load point."""

from __future__ import annotations

import json
import os
from pathlib import Path

from attrs import field, frozen, validators as v

from benchstack import hookimpl
from benchstack.errors import LoadError
from benchstack.launcher import tail
from benchstack.metrics import metrics_from_perf_export
from benchstack.proc import find_tool, run_tool
from benchstack.records import LoadgenInfo, LoadResult

NAME = "aiperf"
EXPORT = "profile_export_aiperf.json"


@frozen(kw_only=True)
class AiperfOptions:
    """Recipe section ``aiperf``."""

    executable: str | None = None  # default: `aiperf` next to the running Python, else on PATH
    endpoint_type: str = field(default="chat", validator=v.in_(["chat", "completions"]))
    streaming: bool = True
    use_server_token_count: bool = True  # engines (and the mocker) report exact usage counts
    arrival_pattern: str = field(default="poisson", validator=v.in_(["constant", "poisson", "gamma"]))
    url_strategy: str | None = None  # with several endpoints (default: AIPerf's round robin)
    workers_max: int | None = field(default=None, validator=v.optional(v.ge(1)))
    random_seed: int | None = 0
    timeout_s: float = field(default=1800.0, validator=v.gt(0))
    extra_args: list[str] = field(factory=list)


def executable(o: AiperfOptions) -> str:
    return find_tool("aiperf", o.executable)


def command(spec, o: AiperfOptions, endpoints, point, out_dir: Path) -> list[str]:
    """The ``aiperf profile`` command line of one point."""
    argv = [executable(o), "profile", "--model", endpoints[0].model,  # the id the server lists
            "--endpoint-type", o.endpoint_type]
    if o.streaming:
        argv.append("--streaming")
    for e in endpoints:
        argv += ["--url", e.url]
    if o.url_strategy and len(endpoints) > 1:
        argv += ["--url-strategy", o.url_strategy]
    if point.concurrency is not None:
        argv += ["--concurrency", str(point.concurrency)]
    if point.request_rate is not None:
        argv += ["--request-rate", f"{point.request_rate:g}", "--arrival-pattern", o.arrival_pattern]
    if point.num_requests is not None:
        argv += ["--request-count", str(point.num_requests)]
    if point.duration_s is not None:
        argv += ["--benchmark-duration", f"{point.duration_s:g}"]
    if point.warmup_requests:
        argv += ["--warmup-request-count", str(point.warmup_requests)]
    argv += ["--isl", str(point.isl), "--osl", str(point.osl),
             # the engine must produce exactly OSL tokens: pin max_tokens and ignore EOS
             "--extra-inputs", f"max_tokens:{point.osl}", "--extra-inputs", "ignore_eos:true",
             "--tokenizer", spec.model.tokenizer_path, "--ui", "none", "--artifact-dir", str(out_dir)]
    if o.use_server_token_count:
        argv.append("--use-server-token-count")
    if o.workers_max:
        argv += ["--workers-max", str(o.workers_max)]
    if o.random_seed is not None:
        argv += ["--random-seed", str(o.random_seed)]
    return argv + list(o.extra_args)


def find_export(out_dir: Path) -> Path | None:
    direct = out_dir / EXPORT
    if direct.exists():
        return direct
    found = sorted(out_dir.rglob(EXPORT))
    return found[0] if found else None


def parse(path: Path, requested: int | None = None):
    """benchstack Metrics from an AIPerf ``profile_export_aiperf.json``."""
    data = json.loads(Path(path).read_text())
    return metrics_from_perf_export(data, requests_sent=requested), data


@hookimpl
def bench_register_loadgens():
    return [LoadgenInfo(name=NAME, options_type=AiperfOptions,
                        description="NVIDIA AIPerf: concurrency or request-rate sweeps, streaming")]


@hookimpl
def bench_run_load(spec, endpoints, point, out_dir):
    if spec.load != NAME:
        return None
    o: AiperfOptions = spec.options_for(NAME) or AiperfOptions()
    out_dir = Path(out_dir)
    argv = command(spec, o, endpoints, point, out_dir)
    env = dict(os.environ)
    # with a local tokenizer path AIPerf must not be forced offline (it then rejects the path)
    env.pop("HF_HUB_OFFLINE", None)
    log = out_dir / "aiperf.log"
    code = run_tool(argv, log, timeout_s=o.timeout_s, env=env, cwd=out_dir, what="aiperf")
    export = find_export(out_dir)
    if code != 0 or export is None:
        raise LoadError(f"aiperf failed on point {point.label} (exit {code}); last lines of {log}:\n"
                        + tail(log, 25))
    metrics, data = parse(export, point.num_requests)
    rel = lambda p: str(Path(p).relative_to(spec.run_dir)) if spec.run_dir in Path(p).parents else str(p)
    artifacts = [rel(p) for p in sorted(out_dir.rglob("*")) if p.is_file()]
    extra = {k: data[k]["avg"] for k in ("effective_concurrency", "osl_mismatch_count",
                                          "usage_discrepancy_count", "request_error_rate")
             if isinstance(data.get(k), dict) and "avg" in data[k]}
    return LoadResult(point=point, tool=NAME, metrics=metrics, artifacts=artifacts,
                      command=argv, extra=extra)
