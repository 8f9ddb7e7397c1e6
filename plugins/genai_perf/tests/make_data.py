"""Regenerate tests/data with the real genai-perf (0.0.16 + perf_analyzer) against the timed server.

    python plugins/genai_perf/tests/make_data.py

Writes ok/ (concurrency 4, 40 requests, ISL 64, OSL 16: genai-perf's JSON/CSV and perf_analyzer's
raw export), stream_error/ (a quarter of the streams end in an in-stream error event: genai-perf
fails, the raw export remains) and zero_tokens/ (every stream is empty: genai-perf drops them).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from benchstack.records import Endpoint
from benchstack.testing import make_manager, make_recipe, make_spec
from benchstack.testing.timed_server import start_subprocess, timed_backend
from benchstack.tinymodel import make_tiny_model

import benchstack_genai_perf.plugin as plugin

DATA = Path(__file__).parent / "data"
KEEP = ("profile_export_genai_perf.json", "profile_export_genai_perf.csv", "profile_export.json")


def one(name: str, tmp: Path, model_dir: Path, fail: dict) -> None:
    manager = make_manager(("genai_perf", plugin), ("timed", timed_backend))
    spec = make_spec(make_recipe(backend="timed", load="genai_perf",
                                 sweep={"concurrency": [4], "isl": 64, "osl": 16, "num_requests": 40},
                                 model={"name": "timed-model", "path": str(model_dir)}),
                     manager, run_dir=tmp / name)
    out = tmp / name / "p0"
    out.mkdir(parents=True)
    with start_subprocess(ttft_ms=20, itl_ms=5, **fail) as srv:
        result = plugin.bench_run_load(spec, [Endpoint(url=srv.url, model="timed-model")],
                                       spec.points[0], out)
    dest = DATA / name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for f in KEEP:
        found = sorted(out.rglob(f))
        if found:
            shutil.copy(found[0], dest / f)
    print(name, result.extra, result.metrics.requests_completed, result.metrics.requests_failed)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="genai-perf-data-"))
    model_dir = make_tiny_model(tmp / "model", name="timed-model")
    one("ok", tmp, model_dir, {})
    one("stream_error", tmp, model_dir, {"fail_kind": "stream_error", "fail_fraction": 0.25})
    one("zero_tokens", tmp, model_dir, {"fail_kind": "zero_tokens", "fail_fraction": 1.0})
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
