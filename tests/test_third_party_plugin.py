"""A plugin written from outside: examples/plugins/benchstack-sglang as a wheel in a fresh venv.

The example is built into a wheel, installed into a fresh virtual environment next to
benchstack, and then ``bench plugins`` lists it, ``bench plan --backend sglang`` renders its
deployment and its own tests (which use only ``benchstack.testing``) pass against the installed
wheel; after ``pip uninstall`` ``bench`` no longer knows it.

The fresh venv sees benchstack through a ``.pth`` file that adds ``.venv``'s site-packages
(``site.addsitedir``, so the editable installs there work too), while the plugin is installed
into the fresh venv's own site-packages. Installing benchstack itself from the checkout into the
venv, with its dependencies from the pip cache, took 112 s on the 2-core CI machine (25 s venv
with pip, 87 s ``pip install core``): too slow for every run, and it proves nothing more about
plugin discovery, which is by entry point wherever the distributions lie.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugins" / "benchstack-sglang"


def run(argv, *, cwd=None, timeout=300, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    env.pop("PYTHONPATH", None)
    env.pop("BENCHSTACK_EXTRA_PLUGINS", None)
    env.pop("BENCHSTACK_BLOCK_PLUGINS", None)
    r = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        pytest.fail(f"{' '.join(map(str, argv))} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def build_wheel(src: Path, out: Path) -> Path:
    """``pip wheel`` of a copy of the example (an in-tree build would leave build/ behind)."""
    copy = out / "src"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", out / "dist", copy]
    if importlib.util.find_spec("wheel") is not None:
        # offline: this venv's setuptools builds it (setuptools < 70.1 needs the wheel package)
        argv[4:4] = ["--no-build-isolation", "--no-index"]
    run(argv, timeout=600)
    (wheel,) = (out / "dist").glob("benchstack_sglang-*.whl")
    return wheel


def fresh_venv(path: Path) -> Path:
    """A venv of this Python without pip, seeing this venv's site-packages through a .pth file."""
    run([sys._base_executable, "-m", "venv", "--without-pip", path])
    python = path / "bin" / "python"
    purelib = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    ours = sysconfig.get_paths()["purelib"]
    assert Path(ours) in map(Path, site.getsitepackages())
    (purelib / "_benchstack_dev.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return python


def bench(python: Path, *args, check=True) -> subprocess.CompletedProcess:
    return run([python, "-m", "benchstack.cli", *args], check=check, timeout=120)


def sglang_entry(python: Path) -> dict | None:
    data = json.loads(bench(python, "plugins", "--json").stdout)
    assert not data["failed"], data["failed"]
    return next((p for p in data["plugins"] if p["name"] == "sglang"), None)


RECIPE = """\
name: third-party
backend: dynamo_trtllm      # bench plan --backend sglang overrides it
scheduler: local
load: aiperf
model: {name: meta-llama/Llama-3.1-8B-Instruct, path: /models/Llama-3.1-8B-Instruct}
local: {gpus: 8, port_base: 24000}
sglang:
  prefill: {workers: 2, tp: 2}
  decode: {workers: 1, tp: 4}
  router: {policy: round_robin}
sweep: {concurrency: [8], isl: 1024, osl: 128, num_requests: 64}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("third-party")
    return build_wheel(EXAMPLE, tmp), tmp


def test_wheel_declares_the_entry_point(built):
    wheel, _ = built
    with zipfile.ZipFile(wheel) as z:
        eps = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))).decode()
        assert not [n for n in z.namelist() if n.startswith("benchstack/")], "the wheel must not carry core"
    assert "[benchstack.plugins]\nsglang = benchstack_sglang.plugin" in eps


def test_install_list_plan_test_uninstall(built):
    wheel, tmp = built
    python = fresh_venv(tmp / "venv")
    recipe = tmp / "recipe.yaml"
    recipe.write_text(RECIPE)

    # a fresh venv next to benchstack: the built-in plugins, no sglang
    assert sglang_entry(python) is None
    before = bench(python, "plan", "--backend", "sglang", recipe, check=False)
    assert before.returncode == 2 and "unknown backend 'sglang'; choose one of: " in before.stderr

    run([python, "-m", "pip", "install", "--no-deps", "--no-index", wheel])
    where = run([python, "-c", "import benchstack_sglang; print(benchstack_sglang.__file__)"]).stdout
    assert where.startswith(str(tmp / "venv")), where

    entry = sglang_entry(python)
    assert entry == {
        "name": "sglang", "dist": "benchstack-sglang", "version": "0.1.0",
        "hooks": ["bench_collect", "bench_discover_endpoints", "bench_launch_servers",
                  "bench_register_backends", "bench_validate"],
        "provides": {"backend": ["sglang"]},
        "descriptions": {"sglang": "SGLang servers behind the SGLang router (aggregated or prefill/decode)"}}
    listing = bench(python, "plugins").stdout
    assert "sglang         benchstack-sglang 0.1.0\n    provides  backend: sglang\n" in listing

    plan = bench(python, "plan", "--backend", "sglang", recipe).stdout
    assert "backend=sglang scheduler=local load=aiperf" in plan
    for gpus in ("0,1", "2,3"):
        assert f"env CUDA_VISIBLE_DEVICES={gpus} python3 -m sglang.launch_server " in plan
    assert plan.count("--disaggregation-mode prefill") == 2
    assert "env CUDA_VISIBLE_DEVICES=4,5,6,7 python3 -m sglang.launch_server" in plan
    assert "python3 -m sglang_router.launch_router --pd-disaggregation --prefill http://127.0.0.1:" in plan
    assert "--policy round_robin" in plan
    as_json = json.loads(bench(python, "plan", "--backend", "sglang", recipe, "--json").stdout)
    assert [p["name"] for p in as_json["processes"]] == ["prefill-0", "prefill-1", "decode-0", "router"]
    assert as_json["total_gpus"] == 8

    # the plugin's own tests, against the installed wheel, with only the test kit
    tests = tmp / "example-tests"
    shutil.copytree(EXAMPLE, tests, ignore=shutil.ignore_patterns("__pycache__", "src", "*.egg-info"))
    result = run([python, "-m", "pytest", "-q"], cwd=tests, check=False, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout

    run([python, "-m", "pip", "uninstall", "-y", "benchstack-sglang"])
    assert sglang_entry(python) is None
    after = bench(python, "plan", "--backend", "sglang", recipe, check=False)
    assert after.returncode == 2 and "unknown backend 'sglang'" in after.stderr
