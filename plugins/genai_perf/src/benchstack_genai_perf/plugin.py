"""genai-perf (``genai-perf profile``) as a benchstack load generator: one run per load point."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from benchstack import hookimpl
from benchstack.errors import LoadError
from benchstack.launcher import tail
from benchstack.proc import find_tool, run_tool
from benchstack.records import Endpoint, LoadgenInfo, LoadPoint, LoadResult, RunSpec

from . import parse
from .options import GenaiPerfOptions

NAME = "genai_perf"
ARTIFACTS = "artifacts"


def executable(o: GenaiPerfOptions) -> str:
    """``genai_perf.executable``, else ``genai-perf`` next to this Python, else on PATH."""
    return find_tool("genai-perf", o.executable)


def _hostport(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


def command(spec: RunSpec, o: GenaiPerfOptions, endpoints: Sequence[Endpoint], point: LoadPoint,
            out_dir: Path) -> list[str]:
    """The ``genai-perf profile`` command line of one point (genai-perf takes one URL)."""
    argv = [executable(o), "profile", "-m", endpoints[0].model, "--endpoint-type", o.endpoint_type,
            "-u", _hostport(endpoints[0].url)]
    if o.streaming:
        argv.append("--streaming")
    argv += ["--synthetic-input-tokens-mean", str(point.isl), "--synthetic-input-tokens-stddev", "0",
             "--output-tokens-mean", str(point.osl), "--output-tokens-stddev", "0"]
    if o.ignore_eos:
        argv += ["--extra-inputs", "ignore_eos:true"]
    if point.concurrency is not None:
        argv += ["--concurrency", str(point.concurrency)]
    elif point.request_rate is not None:
        argv += ["--request-rate", f"{point.request_rate:g}"]
    else:
        argv += ["--concurrency", "1"]
    if point.num_requests is not None:
        argv += ["--request-count", str(point.num_requests)]
    elif point.duration_s is not None:
        argv += ["--measurement-interval", str(int(point.duration_s * 1000))]
    if point.warmup_requests:
        argv += ["--warmup-request-count", str(point.warmup_requests)]
    argv += ["--tokenizer", o.tokenizer or spec.model.tokenizer_path,
             "--artifact-dir", str(Path(out_dir) / ARTIFACTS), "--profile-export-file", parse.RAW]
    if o.random_seed is not None:
        argv += ["--random-seed", str(o.random_seed)]
    return argv + list(o.extra_args)


def environment(o: GenaiPerfOptions, exe: str) -> dict[str, str]:
    """genai-perf runs ``perf_analyzer`` from PATH: the executable's directory goes first."""
    env = dict(os.environ)
    exe_dir = str(Path(exe).parent) if os.sep in exe else ""
    if exe_dir:
        env["PATH"] = exe_dir + os.pathsep + env.get("PATH", "")
    env.update(o.env)
    return env


def token_counter(o: GenaiPerfOptions, spec: RunSpec):
    """Count tokens as genai-perf does (with the tokenizer), if ``tokenizers`` can load it."""
    path = Path(o.tokenizer or spec.model.tokenizer_path)
    path = path / "tokenizer.json" if path.is_dir() else path
    if not path.is_file():
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None
    tok = Tokenizer.from_file(str(path))
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids)


@hookimpl
def bench_register_loadgens() -> list[LoadgenInfo]:
    return [LoadgenInfo(name=NAME, options_type=GenaiPerfOptions,
                        description="NVIDIA genai-perf (perf_analyzer): concurrency or request rate")]


@hookimpl
def bench_validate(spec: RunSpec) -> list[str] | None:
    if spec.load != NAME:
        return None
    o: GenaiPerfOptions = spec.options_for(NAME) or GenaiPerfOptions()
    problems = []
    if o.executable and not Path(o.executable).exists() and not shutil.which(o.executable):
        problems.append(f"genai-perf executable not found: {o.executable} @ recipe.genai_perf.executable")
    return problems


@hookimpl
def bench_run_load(spec: RunSpec, endpoints: list[Endpoint], point: LoadPoint,
                   out_dir: Path) -> LoadResult | None:
    if spec.load != NAME:
        return None
    o: GenaiPerfOptions = spec.options_for(NAME) or GenaiPerfOptions()
    out_dir = Path(out_dir)
    argv = command(spec, o, endpoints, point, out_dir)
    log = out_dir / "genai_perf.log"
    code = run_tool(argv, log, timeout_s=o.timeout_s, env=environment(o, argv[0]), cwd=out_dir,
                    what="genai-perf")
    export_path = parse.find(out_dir, parse.EXPORT)
    raw_path = parse.find(out_dir, parse.RAW)
    export = json.loads(export_path.read_text()) if code == 0 and export_path else None
    raw = parse.parse_raw(raw_path, token_counter(o, spec)) if raw_path else None
    if export is None and (raw is None or not raw.requests):
        raise LoadError(f"genai-perf failed on point {point.label} (exit {code}); last lines of "
                        f"{log}:\n{tail(log, 25)}")
    metrics, source = parse.combine(export, raw)
    extra: dict[str, Any] = {"metrics_source": source}
    if export is None:
        extra["genai_perf_error"] = f"exit {code}: " + " ".join(tail(log, 3).split())[-300:]
    if len(endpoints) > 1:
        extra["warning"] = (f"genai-perf takes one URL: only {endpoints[0].url} of "
                            f"{len(endpoints)} endpoints got load")
    if raw is not None and raw.failed:
        extra["failures"] = sorted({r.error for r in raw.failed if r.error})[:5]
    artifacts = [_rel(p, spec.run_dir) for p in sorted(out_dir.rglob("*")) if p.is_file()]
    return LoadResult(point=point, tool=NAME, metrics=metrics, artifacts=artifacts,
                      command=argv, extra=extra)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)
