"""Regenerate tests/data with the real LoadGen against the timed test server.

    python plugins/mlperf/tests/make_data.py

Writes server/ (200 queries at 40 QPS: INVALID, early stopping), offline/ (100 samples: VALID),
accuracy/ (AccuracyOnly, 8 samples: mlperf_log_accuracy.json and the decoded outputs). The
parser tests read these files; they are what LoadGen itself wrote.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from benchstack.records import Endpoint
from benchstack.testing import make_manager, make_recipe, make_spec
from benchstack.testing.timed_server import start_subprocess, timed_backend

import benchstack_mlperf.plugin as plugin
from benchstack_mlperf.run import run_point

DATA = Path(__file__).parent / "data"
KEEP = ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json",
        "mlperf_outputs.jsonl", "mlperf_settings.json")


def one(name: str, tmp: Path, url: str, sweep: dict, mlperf: dict) -> None:
    manager = make_manager(("mlperf", plugin), ("timed", timed_backend))
    spec = make_spec(make_recipe(backend="timed", load="mlperf", sweep=sweep, mlperf=mlperf,
                                 model={"name": "timed-model", "path": "/nonexistent"}),
                     manager, run_dir=tmp / name)
    out = tmp / name / "p0"
    result = run_point(spec, [Endpoint(url=url, model="timed-model")], spec.points[0], out)
    dest = DATA / name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for f in KEEP:
        if (out / f).exists():
            shutil.copy(out / f, dest / f)
    print(name, result.tool_validity, result.metrics.request_throughput)


def main() -> None:
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="mlperf-data-"))
    with start_subprocess(ttft_ms=20, itl_ms=5) as srv:
        one("server", tmp, srv.url, {"scenarios": ["Server"], "request_rate": [40], "isl": 64,
                                     "osl": 32, "num_requests": 200}, {"seed": 1})
        one("offline", tmp, srv.url, {"scenarios": ["Offline"], "concurrency": [16], "isl": 64,
                                      "osl": 32, "num_requests": 100}, {"seed": 1})
        one("accuracy", tmp, srv.url, {"scenarios": ["Offline"], "isl": 16, "osl": 8,
                                       "num_requests": 8},
            {"mode": "AccuracyOnly", "synthetic_samples": 8, "seed": 1})
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
