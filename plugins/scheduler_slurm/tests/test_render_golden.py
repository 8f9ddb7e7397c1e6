"""Golden files: the sbatch script and every srun line `bench plan --scheduler slurm` shows,
with and without pyxis containers. Paths that differ between machines are placeholders."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from attrs import frozen

from benchstack import hookimpl
from benchstack.records import BackendInfo, Endpoint, LoadgenInfo, ProcessSpec, ServerSet
from benchstack.testing import assert_golden, make_manager, make_recipe, make_spec, plan

from benchstack_scheduler_slurm import plugin as slurm_plugin
from benchstack_scheduler_slurm.sbatch import job_argv

GOLDEN = Path(__file__).parent / "golden"
RUN_DIR = "/runs/test"


@frozen(kw_only=True)
class LayoutOptions:
    image: str | None = None  # the backend names a container for every process
    pmi2: bool = False  # the MPI worker asks for --mpi=pmi2 itself


class layout:
    """A deployment shaped like the field's: frontend, a 2-GPU worker, a 2-node MPI worker."""

    @staticmethod
    @hookimpl
    def bench_register_backends():
        return [BackendInfo(name="layout", options_type=LayoutOptions)]

    @staticmethod
    @hookimpl
    def bench_register_loadgens():
        return [LoadgenInfo(name="none")]

    @staticmethod
    @hookimpl
    def bench_launch_servers(spec, allocation, launcher):
        if spec.backend != "layout":
            return None
        head = allocation.nodes[0]
        port = launcher.ports.one(0)
        o = spec.options_for("layout")
        image = o.image
        front = launcher.start(ProcessSpec(
            name="frontend", role="frontend", ports=(port,), env={"DYN_NAMESPACE": "bench"},
            secret_env=("HF_TOKEN",), container_image=image,
            argv=("python3", "-m", "dynamo.frontend", "--http-host", head.address,
                  "--http-port", str(port))))
        prefill = launcher.start(ProcessSpec(
            name="prefill-0", role="prefill", nodes=(0,), gpus=(2, 3), workdir="/work dir",
            env={"NCCL_DEBUG": "INFO", "ODD": "a,b c"}, container_image=image,
            container_mounts=("/models:/models",), container_name="bench-prefill",
            argv=("python3", "-m", "dynamo.trtllm", "--disaggregation-mode", "prefill")))
        decode = launcher.start(ProcessSpec(
            name="decode-0", role="decode", nodes=(1, 2), ntasks_per_node=4, gpus=(0, 1, 2, 3),
            mpi="pmi2" if o.pmi2 else None, container_image=image,
            argv=("trtllm-llmapi-launch", "python3", "-m", "dynamo.trtllm",
                  "--disaggregation-mode", "decode")))
        return ServerSet(backend="layout", servers=[front, prefill, decode], total_gpus=10,
                         endpoints=[Endpoint(url=f"http://{head.address}:{port}", model="m")])


def manager():
    return make_manager(("slurm", slurm_plugin), ("layout", layout))


def recipe(**slurm):
    return make_recipe(backend="layout", scheduler="slurm",
                       slurm={"nodes": 3, "gpus_per_node": 4, **slurm})


def render(p: dict) -> str:
    """The parts of a plan this plugin owns, machine paths replaced by placeholders."""
    out = []
    for name, text in p["submission"].items():
        out += [f"## {name}", text.rstrip(), ""]
    out.append("## srun lines")
    for proc in p["processes"]:
        out.append(f"# {proc['name']}: nodes={','.join(proc['nodes'])} gpus={proc['gpus']} "
                   f"ports={proc['ports']}")
        out += proc["command"]
    text = "\n".join(out) + "\n"
    return text.replace(sys.executable, "{python}").replace(str(Path.cwd()), "{cwd}")


@pytest.fixture(autouse=True)
def _plan_argv(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the job's --chdir: {cwd} in golden files
    # what the user typed; the job must run the same, as `run`, with the run dir pinned
    monkeypatch.setattr(sys, "argv", ["bench", "plan", "recipe.yaml", "--scheduler", "slurm",
                                      "--set", "sweep.concurrency=[1, 2]", "--json"])
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


def test_plan_without_containers():
    p = plan(recipe(partition="batch", account="llm", time_limit="01:30:00",
                    sbatch_extra=["--qos=high", "--constraint=h100"]), manager(), RUN_DIR)
    assert_golden(GOLDEN / "plan_plain.txt", render(p))


def test_plan_with_containers():
    data = recipe(container_image="nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime:0.4.0",
                  container_mounts=["/lustre:/lustre"], container_env=["NCCL_IB_HCA"],
                  srun_extra=["--cpu-bind=none"], exclusive=False, job_name="dsr1-disagg")
    data["layout"] = {"pmi2": True}
    p = plan(data, manager(), RUN_DIR)
    text = render(p)
    assert "hf_" not in text.lower().replace("hf_token", "")  # secrets by name only
    assert_golden(GOLDEN / "plan_containers.txt", text)


def test_process_image_wins_over_recipe_image():
    data = recipe(container_image="recipe/image:1")
    data["layout"] = {"image": "backend/image:2"}
    p = plan(data, manager(), RUN_DIR)
    lines = [c for proc in p["processes"] for c in proc["command"]]
    assert all("--container-image=backend/image:2" in c for c in lines)


def test_plan_allocation_is_placeholders():
    p = plan(recipe(), manager(), RUN_DIR)
    nodes = p["allocation"]["nodes"]
    assert [n["name"] for n in nodes] == ["node1", "node2", "node3"]
    assert all(n["gpus"] == 4 for n in nodes) and p["allocation"]["job_id"] is None


# --------------------------------------------------------------------------- the job's argv


def _spec(**kw):
    return make_spec(recipe(), manager(), kw.get("run_dir", RUN_DIR))


@pytest.mark.parametrize("argv, expected", [
    (["bench", "run", "r.yaml", "--detach", "--run-dir", "/old", "--scheduler", "slurm"],
     ["run", "r.yaml", "--scheduler", "slurm"]),
    (["bench", "--debug", "plan", "r.yaml", "--json", "--run-dir=/old", "--set", "a.b=c d"],
     ["--debug", "run", "r.yaml", "--set", "a.b=c d"]),
    (["/venv/bin/bench", "run", "r.yaml", "--allow-invalid"], ["run", "r.yaml", "--allow-invalid"]),
])
def test_job_argv_keeps_the_command_and_pins_the_run_dir(argv, expected):
    out = job_argv(argv, _spec(), Path("/runs/x"), python="/py")
    assert out == ["/py", "-m", "benchstack.cli", *expected, "--run-dir", "/runs/x"]


def test_job_argv_without_a_bench_command_line_is_rebuilt_from_the_spec():
    out = job_argv(["pytest", "-x"], _spec(), Path("/runs/x"), python="/py")
    assert out == ["/py", "-m", "benchstack.cli", "run", "RECIPE.yaml", "--backend", "layout",
                   "--scheduler", "slurm", "--load", "none", "--run-dir", "/runs/x"]


def test_sbatch_quotes_paths_and_execs_the_driver(tmp_path):
    run_dir = tmp_path / "my runs"
    spec = make_spec(recipe(time_limit="10"), manager(), run_dir)
    text = slurm_plugin.render_submission(spec, ["bench", "run", "r y.yaml"], python="/py",
                                          cwd=Path("/a dir"))
    assert f"#SBATCH --output='{run_dir}/driver.out'" in text
    assert "#SBATCH --chdir='/a dir'" in text
    assert "#SBATCH --signal=B:TERM@120" in text  # 10 minutes: TERM 2 minutes before the end
    assert text.rstrip().endswith(f"exec /py -m benchstack.cli run 'r y.yaml' --run-dir '{run_dir}'")


def test_short_time_limit_terms_the_driver_in_the_last_quarter():
    spec = make_spec(recipe(time_limit="4"), manager(), RUN_DIR)
    assert "#SBATCH --signal=B:TERM@60" in slurm_plugin.render_submission(spec, None, "/py", Path("/"))


def test_deployments_share_one_job_directory():
    data = recipe()
    data["deployments"] = [{"name": "small", "set": {}}, {"name": "big", "set": {}}]
    spec = make_spec(data, manager(), RUN_DIR)
    assert spec.run_dir == Path(RUN_DIR) / "small"
    text = slurm_plugin.render_submission(spec, ["bench", "run", "r.yaml"], "/py", Path("/"))
    assert "--run-dir /runs/test\n" in text and "/runs/test/driver.log" in text
