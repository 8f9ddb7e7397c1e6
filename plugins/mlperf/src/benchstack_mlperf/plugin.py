"""Hooks of the ``mlperf`` load generator (entry point ``mlperf = "benchstack_mlperf.plugin"``)."""

from __future__ import annotations

from pathlib import Path

from benchstack import hookimpl
from benchstack.records import Endpoint, LoadgenInfo, LoadPoint, LoadResult, RunSpec

from .options import SCENARIOS, MlperfOptions

NAME = "mlperf"


@hookimpl
def bench_register_loadgens() -> list[LoadgenInfo]:
    return [LoadgenInfo(
        name=NAME, options_type=MlperfOptions,
        description="MLCommons LoadGen (Offline, Server, Interactive; performance or accuracy) "
                    "with benchstack's streaming client as the SUT")]


@hookimpl
def bench_validate(spec: RunSpec) -> list[str] | None:
    if spec.load != NAME:
        return None
    opts: MlperfOptions = spec.options_for(NAME) or MlperfOptions()
    problems = []
    for p in spec.points:
        scenario = p.scenario or opts.scenario
        if scenario not in SCENARIOS:
            problems.append(f"mlperf scenario must be one of {', '.join(SCENARIOS)}: "
                            f"{scenario!r} @ recipe.sweep.scenarios")
        elif scenario != "Offline" and p.request_rate is None and opts.target_qps is None \
                and not opts.user_conf:
            problems.append(f"mlperf {scenario} needs a target QPS: set sweep.request_rate, "
                            "mlperf.target_qps or mlperf.user_conf @ recipe.mlperf")
    if opts.user_conf and not Path(opts.user_conf).is_file():
        problems.append(f"user.conf not found: {opts.user_conf} @ recipe.mlperf.user_conf")
    if opts.dataset and not Path(opts.dataset).is_file():
        problems.append(f"dataset not found: {opts.dataset} @ recipe.mlperf.dataset")
    if opts.endpoint_type == "chat" and opts.tokens_key and not opts.input_key \
            and not opts.tokenizer and not (Path(spec.model.tokenizer_path) / "tokenizer.json").is_file():
        problems.append("token-id datasets need a tokenizer for the chat API: set mlperf.tokenizer "
                        "or endpoint_type: completions @ recipe.mlperf")
    return problems


@hookimpl
def bench_run_load(spec: RunSpec, endpoints: list[Endpoint], point: LoadPoint,
                   out_dir: Path) -> LoadResult | None:
    if spec.load != NAME:
        return None
    from .run import run_point  # LoadGen is imported only when a point runs

    return run_point(spec, endpoints, point, out_dir)
