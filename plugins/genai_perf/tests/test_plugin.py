"""The genai_perf plugin: command lines, environment, failures, and agreement with the server's truth."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from benchstack.errors import LoadError, RecipeError
from benchstack.records import Endpoint
from benchstack.testing.timed_server import compare_to_truth, start_subprocess

import benchstack_genai_perf.plugin as plugin
from benchstack_genai_perf.options import GenaiPerfOptions

#: genai-perf's own client overhead on TTFT and e2e, measured by benchmarks/client.py on this
#: machine: perf_analyzer's TTFT error p50 at concurrency 16 was 0.62-0.91 ms; rounded up
GENAI_PERF_OVERHEAD_MS = 1.0


def test_command_line(spec_for, tmp_path):
    spec = spec_for(sweep={"concurrency": [8], "isl": 100, "osl": 20, "num_requests": 50,
                           "warmup_requests": 4}, genai_perf={"extra_args": ["--verbose"]})
    eps = [Endpoint(url="http://10.0.0.1:8000", model="served-name")]
    argv = plugin.command(spec, spec.options_for("genai_perf"), eps, spec.points[0], tmp_path)
    assert argv[1:8] == ["profile", "-m", "served-name", "--endpoint-type", "chat", "-u", "10.0.0.1:8000"]
    text = " ".join(argv)
    for part in ("--streaming", "--synthetic-input-tokens-mean 100", "--output-tokens-mean 20",
                 "--output-tokens-stddev 0", "--extra-inputs ignore_eos:true", "--concurrency 8",
                 "--request-count 50", "--warmup-request-count 4", "--tokenizer /models/tiny",
                 f"--artifact-dir {tmp_path / 'artifacts'}", "--profile-export-file profile_export.json"):
        assert part in text, part
    assert argv[-1] == "--verbose"
    rate = spec_for(sweep={"request_rate": [2.5], "duration_s": 30},
                    genai_perf={"streaming": False, "tokenizer": "/tok", "ignore_eos": False,
                                "endpoint_type": "completions"})
    text = " ".join(plugin.command(rate, rate.options_for("genai_perf"), eps, rate.points[0], tmp_path))
    assert "--request-rate 2.5" in text and "--measurement-interval 30000" in text
    assert "--streaming" not in text and "ignore_eos" not in text and "--tokenizer /tok" in text
    assert "--endpoint-type completions" in text


def test_executable_and_path(monkeypatch, tmp_path):
    assert plugin.executable(GenaiPerfOptions(executable="/opt/gp")) == "/opt/gp"
    beside = Path(sys.executable).parent / "genai-perf"
    if beside.exists():  # the bootstrap's venv: genai-perf next to this Python
        assert plugin.executable(GenaiPerfOptions()) == str(beside)
    env = plugin.environment(GenaiPerfOptions(env={"X": "1"}), "/opt/tools/genai-perf")
    assert env["PATH"].split(os.pathsep)[0] == "/opt/tools" and env["X"] == "1"


def test_missing_executable_is_a_recipe_error(spec_for):
    with pytest.raises(RecipeError, match="genai-perf executable not found"):
        spec_for(genai_perf={"executable": "/nonexistent/genai-perf"})


def fake_tool(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "genai-perf"
    exe.write_text(f"#!{sys.executable}\nimport sys\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


def test_tool_failure_is_a_load_error_with_the_log(spec_for, tmp_path):
    exe = fake_tool(tmp_path, "print('Thread [0] had error: OpenAI response returns HTTP code 500')\n"
                              "sys.exit(99)")
    spec = spec_for(genai_perf={"executable": exe})
    out = tmp_path / "p"
    out.mkdir()
    with pytest.raises(LoadError) as e:
        plugin.bench_run_load(spec, [Endpoint(url="http://127.0.0.1:9", model="m")], spec.points[0], out)
    assert "genai-perf failed on point c1 (exit 99)" in str(e.value)
    assert "HTTP code 500" in str(e.value)


def test_agrees_with_server_truth(spec_for, tiny_model, tmp_path):
    """The real genai-perf: within 2 % or 1 ms plus its own measured overhead."""
    spec = spec_for(model_path=str(tiny_model),
                    sweep={"concurrency": [4], "isl": 32, "osl": 32, "num_requests": 60})
    problems = []
    with start_subprocess(ttft_ms=20, itl_ms=5) as srv:
        for attempt in range(2):
            srv.reset()
            out = tmp_path / f"a{attempt}"
            out.mkdir()
            result = plugin.bench_run_load(spec, [Endpoint(url=srv.url, model="timed-model")],
                                           spec.points[0], out)
            truth = srv.stats()
            problems = compare_to_truth(result.metrics, truth, overhead_ms=GENAI_PERF_OVERHEAD_MS)
            if not problems:
                break
    m = result.metrics
    print(f"genai-perf: TTFT p50 {m.ttft_ms.p50:.2f} vs {truth['ttft_ms']['p50']:.2f}, ITL "
          f"{m.itl_ms.mean:.3f} vs {truth['itl_ms']['mean']:.3f}, {m.request_throughput:.2f} vs "
          f"{truth['request_throughput']:.2f} req/s")
    assert not problems, problems
    assert m.requests_completed == 60 and m.output_tokens.mean == 32
    assert result.extra["metrics_source"] == "genai-perf"
    assert any(a.endswith("profile_export_genai_perf.json") for a in result.artifacts)
