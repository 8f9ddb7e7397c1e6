"""One load point under LoadGen: settings, QSL, SUT, the test, then its logs as benchstack metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import attrs
import mlperf_loadgen as lg

from benchstack.client import ClientOptions, Prompt, failure_summary, metrics_from_records
from benchstack.errors import LoadError
from benchstack.records import Endpoint, LoadPoint, LoadResult, Metrics, RunSpec

from . import logs, qsl
from .options import MlperfOptions
from .sut import LoadgenSut

NAME = "mlperf"
#: benchstack's TTFT/TPOT limits (ms) when no conf sets them: MLPerf's llama2-70b Server and
#: llama2-70b-interactive values.
DEFAULT_LIMITS = {"Server": (2000.0, 200.0), "Interactive": (450.0, 40.0)}
OUTPUTS = "mlperf_outputs.jsonl"
SETTINGS = "mlperf_settings.json"
_SETTING_FIELDS = ("min_duration_ms", "max_duration_ms", "min_query_count", "max_query_count",
                   "server_target_qps", "offline_expected_qps", "ttft_latency", "tpot_latency",
                   "use_token_latencies", "performance_sample_count_override", "qsl_rng_seed",
                   "sample_index_rng_seed", "schedule_rng_seed", "sample_concatenate_permutation")


def scenario_of(point: LoadPoint, opts: MlperfOptions) -> str:
    return point.scenario or opts.scenario


def conf_name(opts: MlperfOptions, spec: RunSpec, scenario: str) -> str:
    base = opts.conf_model or spec.model.name
    return base + "-interactive" if scenario == "Interactive" else base


def build_settings(opts: MlperfOptions, spec: RunSpec, point: LoadPoint) -> lg.TestSettings:
    """LoadGen's TestSettings for ``point``, layered as the options module describes."""
    scenario = scenario_of(point, opts)
    lg_scenario = "Offline" if scenario == "Offline" else "Server"
    s = lg.TestSettings()
    s.scenario = getattr(lg.TestScenario, lg_scenario)
    s.mode = getattr(lg.TestMode, opts.mode)
    # 1. benchstack's defaults, then what the point implies
    s.use_token_latencies = True
    s.min_duration_ms = 0
    s.min_query_count = 1
    s.offline_expected_qps = 1.0
    ttft, tpot = DEFAULT_LIMITS["Interactive" if scenario == "Interactive" else "Server"]
    s.ttft_latency, s.tpot_latency = int(ttft * 1e6), int(tpot * 1e6)
    if point.num_requests is not None:
        s.min_query_count = point.num_requests
    if point.duration_s is not None:
        s.min_duration_ms = int(point.duration_s * 1000)
    # 2. MLPerf's mlperf.conf (built into LoadGen), 3. the user's user.conf
    name = conf_name(opts, spec, scenario)
    if opts.conf_model:
        rc = s.FromConfig("", name, lg_scenario, 0)
        if rc != 0:
            raise LoadError(f"LoadGen could not apply mlperf.conf for model {name!r} (code {rc})")
    if opts.user_conf:
        if not Path(opts.user_conf).is_file():
            raise LoadError(f"user.conf {opts.user_conf} does not exist")
        rc = s.FromConfig(str(opts.user_conf), name, lg_scenario, 1)
        if rc != 0:
            raise LoadError(f"LoadGen could not read {opts.user_conf} (code {rc}); "
                            "its lines are 'model.scenario.key = value'")
    # 4. the recipe's own keys
    if opts.min_duration_ms is not None:
        s.min_duration_ms = opts.min_duration_ms
    if opts.min_query_count is not None:
        s.min_query_count = opts.min_query_count
    if opts.max_query_count is not None:
        s.max_query_count = opts.max_query_count
    if opts.target_qps is not None:
        s.server_target_qps = opts.target_qps
    if opts.expected_qps is not None:
        s.offline_expected_qps = opts.expected_qps
    limit_ttft = opts.interactive_ttft_latency_ms if scenario == "Interactive" else opts.ttft_latency_ms
    limit_tpot = opts.interactive_tpot_latency_ms if scenario == "Interactive" else opts.tpot_latency_ms
    if limit_ttft is not None:
        s.ttft_latency = int(limit_ttft * 1e6)
    if limit_tpot is not None:
        s.tpot_latency = int(limit_tpot * 1e6)
    if opts.performance_sample_count is not None:
        s.performance_sample_count_override = opts.performance_sample_count
    if opts.seed is not None:
        s.qsl_rng_seed = s.sample_index_rng_seed = s.schedule_rng_seed = opts.seed
    # 5. the point's request rate: the Server target QPS (Offline: the expected QPS)
    if point.request_rate is not None:
        if lg_scenario == "Server":
            s.server_target_qps = float(point.request_rate)
        elif opts.expected_qps is None:
            s.offline_expected_qps = float(point.request_rate)
    return s


def settings_dict(s: lg.TestSettings) -> dict[str, Any]:
    out = {"scenario": s.scenario.name, "mode": s.mode.name}
    for f in _SETTING_FIELDS:
        val = getattr(s, f)
        out[f] = val if isinstance(val, (bool, int, float)) else str(val)
    return out


def tokenizer_for(opts: MlperfOptions, spec: RunSpec) -> Any:
    """The tokenizer: the option's, else the model's when it is a local directory with one."""
    if opts.tokenizer:
        return qsl.load_tokenizer(opts.tokenizer)
    path = Path(spec.model.tokenizer_path)
    if (path / "tokenizer.json").is_file():
        return qsl.load_tokenizer(path)
    return None


def build_prompts(opts: MlperfOptions, spec: RunSpec, point: LoadPoint, tokenizer: Any) -> list[Prompt]:
    if opts.dataset:
        records = qsl.read_records(opts.dataset, opts.dataset_format)
        return qsl.dataset_prompts(
            records, osl=point.osl, api=opts.endpoint_type, tokenizer=tokenizer,
            input_key=opts.input_key, tokens_key=opts.tokens_key,
            output_len_key=opts.output_len_key, max_samples=opts.max_samples)
    return qsl.synthetic_prompts(
        opts.synthetic_samples, point.isl, point.osl, isl_distribution=opts.isl_distribution,
        isl_spread=opts.isl_spread, osl_distribution=opts.osl_distribution,
        osl_spread=opts.osl_spread, seed=opts.dataset_seed, tokenizer=tokenizer)


def combine_metrics(report: logs.LoadgenReport, client: Metrics, scenario: str) -> Metrics:
    """LoadGen's latencies and throughput; request counts and token lengths from the SUT.

    Offline issues every sample at once, so LoadGen's latencies there include the wait for a
    free request slot and it reports no token latencies: TTFT, ITL and end-to-end latency come
    from the client (timed from each request's send); LoadGen's latencies stay in ``extra``.
    """
    empty = logs.Stat()
    offline = scenario == "Offline"
    ttft = empty if offline else report.stat_ns("first_token")
    tpot = empty if offline else report.stat_ns("tpot")
    e2e = empty if offline else report.stat_ns("latency")
    req_tp = report.samples_per_second
    out_tp = report.tokens_per_second
    if req_tp is None:
        req_tp = client.request_throughput
    if out_tp is None:
        out_tp = client.output_token_throughput
    total_tp = None
    if out_tp is not None and req_tp is not None and client.input_tokens.mean is not None:
        total_tp = out_tp + req_tp * client.input_tokens.mean
    return attrs.evolve(
        client,
        request_throughput=req_tp,
        output_token_throughput=out_tp,
        total_token_throughput=total_tp,
        ttft_ms=ttft if ttft.mean is not None else client.ttft_ms,
        itl_ms=tpot if tpot.mean is not None else client.itl_ms,
        e2e_ms=e2e if e2e.mean is not None else client.e2e_ms,
    )


def run_point(spec: RunSpec, endpoints: Sequence[Endpoint], point: LoadPoint, out_dir: Path) -> LoadResult:
    opts: MlperfOptions = spec.options_for(NAME) or MlperfOptions()
    if not endpoints:
        raise LoadError("mlperf: no endpoint to send load to")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scenario = scenario_of(point, opts)
    accuracy = opts.mode == "AccuracyOnly"
    settings = build_settings(opts, spec, point)
    tokenizer = tokenizer_for(opts, spec)
    prompts = build_prompts(opts, spec, point, tokenizer)
    perf_count = min(len(prompts), opts.performance_sample_count or len(prompts))
    client_opts = ClientOptions(
        api=opts.endpoint_type, stream=opts.streaming, policy=opts.endpoint_policy,
        ignore_eos=opts.ignore_eos, extra_body=dict(opts.extra_body), timeout_s=opts.request_timeout_s,
        keep_text=accuracy)
    max_inflight = opts.max_inflight
    if max_inflight is None and scenario == "Offline" and point.concurrency is not None:
        max_inflight = point.concurrency
    log_out = lg.LogOutputSettings()
    log_out.outdir = str(out_dir)
    log_out.copy_summary_to_stdout = False
    log_settings = lg.LogSettings()
    log_settings.log_output = log_out
    log_settings.enable_trace = False
    (out_dir / SETTINGS).write_text(json.dumps(
        {"requested": settings_dict(settings), "scenario": scenario, "endpoints": [e.url for e in endpoints],
         "samples": len(prompts), "performance_samples": perf_count, "max_inflight": max_inflight},
        indent=2) + "\n")
    model = endpoints[0].model
    response_tokenizer = tokenizer if opts.response_data == "token_ids" else None
    if opts.response_data == "token_ids" and tokenizer is None:
        raise LoadError("mlperf.response_data is token_ids but no tokenizer was found "
                        "(set mlperf.tokenizer)")
    with LoadgenSut([e.url for e in endpoints], model, client_opts, prompts,
                    max_inflight=max_inflight, accuracy=accuracy, tokenizer=response_tokenizer,
                    tick_ms=0.0 if scenario == "Offline" else opts.sut_tick_ms) as sut:
        sut.warmup(point.warmup_requests)
        lg_sut = lg.ConstructSUT(sut.issue_queries, sut.flush)
        lg_qsl = lg.ConstructQSL(len(prompts), perf_count, _noop, _noop)
        try:
            lg.StartTestWithLogSettings(lg_sut, lg_qsl, settings, log_settings)
        finally:
            lg.DestroyQSL(lg_qsl)
            lg.DestroySUT(lg_sut)
        records = list(sut.records)
        per_endpoint = sut.sent_per_endpoint
        outputs = dict(sut.outputs)
    report = logs.read_report(out_dir)
    if not report.values and not report.summary:
        raise LoadError(f"LoadGen wrote no logs to {out_dir}")
    if accuracy:
        with open(out_dir / OUTPUTS, "w") as fh:
            for idx in sorted(outputs):
                fh.write(json.dumps(outputs[idx]) + "\n")
    client_metrics = metrics_from_records(records)
    metrics = combine_metrics(report, client_metrics, scenario)
    artifacts = [p for p in (logs.SUMMARY, logs.DETAIL, logs.ACCURACY, SETTINGS, OUTPUTS)
                 if (out_dir / p).is_file()]
    extra = {
        "scenario": scenario,
        "mode": opts.mode,
        "loadgen": report.extra(),
        "loadgen_latency_ms": attrs.asdict(report.stat_ns("latency")),
        "client": attrs.asdict(client_metrics),
        "requests_per_endpoint": dict(zip((e.url for e in endpoints), per_endpoint)),
        "failures": failure_summary(records),
    }
    return LoadResult(
        point=point, tool=NAME, metrics=metrics,
        tool_validity=None if accuracy else report.validity,
        artifacts=[_rel(out_dir / a, spec.run_dir) for a in artifacts],
        command=("mlperf_loadgen", scenario, opts.mode),
        extra=extra,
    )


def _noop(_samples: Any) -> None:
    return None


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)
