"""Options, the launcher's command and environment, the follower's exit mapping and cancel order."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from benchstack.errors import RecipeError, SchedulerError
from benchstack.records import Allocation, BackendInfo, LoadgenInfo, Node, ProcessSpec
from benchstack.testing import make_manager, make_recipe, make_spec

from benchstack_scheduler_slurm import follow, plugin, slurmcli
from benchstack_scheduler_slurm.launcher import GPU_WRAPPER, SlurmLauncher
from benchstack_scheduler_slurm.options import SlurmOptions, time_limit_seconds


class noload:
    @staticmethod
    @plugin.hookimpl
    def bench_register_backends():
        return [BackendInfo(name="none")]

    @staticmethod
    @plugin.hookimpl
    def bench_register_loadgens():
        return [LoadgenInfo(name="none")]


def spec_of(slurm: dict, run_dir="/runs/t"):
    manager = make_manager(("slurm", plugin), ("noload", noload))
    return make_spec(make_recipe(backend="none", scheduler="slurm", slurm=slurm), manager, run_dir)


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("text, seconds", [
    ("90", 5400), ("1:30", 90), ("01:30:00", 5400), ("2-00:00:00", 172800), ("1-2", 93600),
    ("1-2:30", 95400),
])
def test_time_limits(text, seconds):
    assert time_limit_seconds(text) == seconds


def test_recipe_errors_name_their_path():
    with pytest.raises(RecipeError) as err:
        spec_of({"nodes": 0, "time_limit": "soon", "sbatch_extra": ["qos=high"], "partitio": "x"})
    text = str(err.value)
    assert "recipe.slurm" in text
    assert "unknown key 'partitio'" in text


@pytest.mark.parametrize("bad, words", [
    ({"nodes": 0}, "'nodes' must be >= 1"),
    ({"time_limit": "soon"}, "not a Slurm time limit"),
    ({"sbatch_extra": ["qos=high"]}, "must be options like"),
    ({"container_env": ["A B"]}, "environment variable names"),
    ({"partition": "a b"}, "'partition' must match"),
])
def test_each_bad_value_is_one_line(bad, words):
    with pytest.raises(RecipeError, match=words):
        spec_of(bad)


def test_port_window_comes_from_the_job_id():
    o = SlurmOptions(port_base=20000, port_limit=32000, port_window=200)
    assert o.port_range(None) == (20000, 20200)
    assert o.port_range("3") == (20600, 20800)
    slots = (32000 - 20000) // 200
    assert o.port_range(str(3 + slots)) == o.port_range("3")  # wraps around
    assert all(o.port_range(str(j))[1] <= 32000 for j in range(500))  # never reaches 32768


def test_port_window_must_fit():
    with pytest.raises(RecipeError, match="must hold at least one 'port_window'"):
        spec_of({"port_base": 30000, "port_limit": 30100})


# --------------------------------------------------------------------------- launcher


def make_launcher(tmp_path, gpus=4, **opts):
    alloc = Allocation(scheduler="slurm", job_id="42",
                       nodes=[Node(name=f"n{i}", address=f"10.0.0.{i}", gpus=gpus) for i in (1, 2)],
                       info={"job_gpus": gpus > 0})
    return SlurmLauncher(alloc, tmp_path, SlurmOptions(**opts), job_gpus=gpus > 0)


def test_steps_are_named_per_run_and_ports_use_the_jobs_window(tmp_path):
    a, b = make_launcher(tmp_path / "a"), make_launcher(tmp_path / "b")
    spec = ProcessSpec(name="decode-0", role="decode", argv=("x",))
    assert a.step_name(spec).startswith("bench-") and a.step_name(spec).endswith(".decode-0")
    assert a.step_name(spec) != b.step_name(spec)
    first = 42 % 60 * 200 + 20000
    assert a.ports.take(0, 2) == [first, first + 1]


def test_no_gpu_flags_without_job_gpus(tmp_path):
    lnch = make_launcher(tmp_path, gpus=0)
    argv = lnch.srun_argv(ProcessSpec(name="w", role="w", gpus=(0,), argv=("x",)))
    assert not any(a.startswith("--gpus") for a in argv)
    assert "bench-gpus.sh" in " ".join(argv)  # still narrowed to the planned GPU


def test_environment_has_the_spec_env_and_no_step_shaping_leftovers(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_GPUS_PER_TASK", "2")
    monkeypatch.setenv("SLURM_NTASKS", "16")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    lnch = make_launcher(tmp_path)
    spec = ProcessSpec(name="w", role="w", argv=("x",), env={"A": "1,2"}, secret_env=("HF_TOKEN",))
    env = lnch.environment(spec)
    assert env["A"] == "1,2" and env["HF_TOKEN"] == "hf_secret" and env["SLURM_JOB_ID"] == "42"
    assert "SLURM_GPUS_PER_TASK" not in env and "SLURM_NTASKS" not in env
    assert "hf_secret" not in " ".join(lnch.describe(spec))


@pytest.mark.parametrize("localid, given, expect", [
    ("0", "0,1,2,3", "0,1"), ("1", "0,1,2,3", "2,3"), ("1", "4,5,6,7", "6,7"),
    ("0", "GPU-a,GPU-b,GPU-c,GPU-d", "GPU-a,GPU-b"), ("1", None, "2,3"),
])
def test_gpu_wrapper_narrows_each_task(tmp_path, localid, given, expect):
    script = tmp_path / "w.sh"
    script.write_text(GPU_WRAPPER)
    env = {"PATH": "/usr/bin:/bin", "SLURM_LOCALID": localid}
    if given:
        env["CUDA_VISIBLE_DEVICES"] = given
    out = subprocess.run(["sh", str(script), "0,1", "2,3", "--", "sh", "-c",
                          'echo "$CUDA_VISIBLE_DEVICES|$1"', "x", "a b"],
                         env=env, capture_output=True, text=True)
    assert out.stdout.strip() == f"{expect}|a b"


def test_gpu_wrapper_refuses_a_gpu_the_step_does_not_have(tmp_path):
    script = tmp_path / "w.sh"
    script.write_text(GPU_WRAPPER)
    out = subprocess.run(["sh", str(script), "3", "--", "true"], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "0,1"})
    assert out.returncode == 97 and "GPU 3 is not among" in out.stderr


def test_stop_all_signals_steps_by_id_in_stages(tmp_path, monkeypatch):
    """TERM each step of the run, KILL the ones left after the grace, then confirm."""
    lnch = make_launcher(tmp_path)
    spec = ProcessSpec(name="srv", role="frontend", argv=("x",))
    lnch.started.append(spec)
    proc = subprocess.Popen(["sleep", "0"])
    proc.wait()
    lnch._procs["srv"] = proc
    listings = iter([
        [("42.0", lnch.step_name(spec)), ("42.1", "someone-else")],  # before TERM
        [("42.0", lnch.step_name(spec))],  # still there after the grace
        [],  # gone after KILL
    ])
    calls = []
    monkeypatch.setattr(slurmcli, "list_steps", lambda job: next(listings, []))
    monkeypatch.setattr(slurmcli, "run", lambda argv, **kw: calls.append(argv))
    killed = lnch.stop_all(grace_s=0)
    assert calls == [["scancel", "-Q", "--signal=TERM", "42.0"], ["scancel", "-Q", "--signal=KILL", "42.0"]]
    assert killed == ["srv"]


# --------------------------------------------------------------------------- follower


def follower(tmp_path, statuses, **opts):
    it = iter(statuses)
    last = {}

    def status(job_id, use_sacct=None):
        last["st"] = next(it, last.get("st"))
        return last["st"]

    f = follow.Follower("7", tmp_path, SlurmOptions(poll_interval_s=0.01, **opts), 0.0,
                        err=io.StringIO(), out=io.StringIO(), status=status)
    f.unknown_grace_s = 0.05
    return f


def st(state, code=None, reason=""):
    return slurmcli.JobStatus(job_id="7", state=state, exit_code=code, reason=reason)


def test_follow_streams_the_log_and_prints_the_summary(tmp_path):
    (tmp_path / "driver.log").write_text("launching\n")
    (tmp_path / "summary.txt").write_text("SUMMARY\n")
    f = follower(tmp_path, [st("PENDING", reason="Resources"), st("RUNNING"), st("COMPLETED", 0)])
    assert f.follow() == 0
    err = f.err.getvalue()
    assert "job 7: PENDING (Resources)" in err and "launching" in err and "COMPLETED (exit 0)" in err
    assert f.out.getvalue() == "SUMMARY\n"


@pytest.mark.parametrize("final, code", [(st("COMPLETED", 0), 0), (st("FAILED", 4), 4),
                                         (st("FAILED", 2), 2), (st("FAILED", 0), 3)])
def test_exit_code_of_the_driver_is_benchs(tmp_path, final, code):
    assert follower(tmp_path, [final]).follow() == code


@pytest.mark.parametrize("final, words", [
    (st("CANCELLED", 0, "by 0"), "was cancelled"), (st("TIMEOUT", 0), "reached its time limit"),
    (st("NODE_FAIL", 1), "ended NODE_FAIL"),
])
def test_a_job_that_did_not_finish_is_a_clear_error(tmp_path, final, words):
    with pytest.raises(SchedulerError, match=words) as err:
        follower(tmp_path, [final]).follow()
    assert "what was measured is in" in str(err.value)


def test_vanished_job_is_judged_by_its_results(tmp_path):
    (tmp_path / "results.json").write_text('{"errors": [], "points": [{"validity": {"valid": false}}]}')
    assert follower(tmp_path, [st("")]).follow() == 4


def test_a_short_silence_of_slurm_is_not_the_end_of_the_job(tmp_path):
    f = follower(tmp_path, [st("RUNNING"), st(""), st(""), st("RUNNING"), st("COMPLETED", 0)])
    f.unknown_grace_s = 10
    assert f.follow() == 0


def test_stop_all_without_slurm_still_ends_the_srun_clients(tmp_path, monkeypatch):
    lnch = make_launcher(tmp_path, grace_s=0)
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    lnch.started.append(ProcessSpec(name="srv", role="frontend", argv=("x",)))
    lnch._procs["srv"] = proc

    def down(*a, **kw):
        raise SchedulerError("squeue did not answer")

    monkeypatch.setattr(slurmcli, "list_steps", down)
    killed = lnch.stop_all(grace_s=0)
    assert proc.poll() is not None and "not confirmed gone" in killed[0]


def test_cancel_terms_the_driver_then_scancels(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(slurmcli, "run", lambda argv, **kw: calls.append(argv))
    f = follower(tmp_path, [st("RUNNING")] * 3 + [st("RUNNING")], cancel_timeout_s=0.05)
    f.grace_s = -45.0  # no wait for the driver in this test
    f.cancel()
    assert calls == [["scancel", "--batch", "--signal=TERM", "7"], ["scancel", "7"]]


def test_detach_prints_job_and_run_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    seen = []

    def fake_run(argv, **kw):
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 0, "123;cluster\n", "")

    monkeypatch.setattr(slurmcli, "run", fake_run)
    spec = spec_of({"nodes": 2}, run_dir=tmp_path / "run")
    out, err = io.StringIO(), io.StringIO()
    assert follow.submit(spec, SlurmOptions(nodes=2), ["bench", "run", "r.yaml", "--detach"], True,
                         err=err, out=out) == 0
    assert out.getvalue() == f"job_id: 123\nrun_dir: {tmp_path / 'run'}\n"
    assert seen == [["sbatch", "--parsable", str(tmp_path / "run" / "job.sbatch")]]
    script = (tmp_path / "run" / "job.sbatch").read_text()
    assert "--detach" not in script and (tmp_path / "run" / "job_id").read_text() == "123\n"


def test_inside_an_allocation_nothing_is_submitted(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "5")
    assert plugin.bench_submit(spec=spec_of({}), argv=["bench", "run", "r"], detach=False) is None


def test_outside_an_allocation_a_real_run_needs_a_job(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(SchedulerError, match="not inside a Slurm allocation"):
        plugin.bench_allocate(spec=spec_of({}), dry_run=False)


def test_adopt_reads_the_allocation(monkeypatch):
    outputs = {
        ("scontrol", "show", "job", "-d", "9"):
            "JobId=9 JobName=interactive JobState=RUNNING Partition=debug Account=(null)\n"
            "   NodeList=node[2-3]\n     Nodes=node[2-3] CPU_IDs=0-7 Mem=0 GRES=gpu:4(IDX:0-3)\n",
        ("scontrol", "show", "hostnames", "node[2-3]"): "node2\nnode3\n",
        ("scontrol", "show", "node", "node2,node3"):
            "NodeName=node2 NodeAddr=10.1.0.2 Gres=gpu:8\nNodeName=node3 NodeAddr=node3 Gres=gpu:8\n",
    }
    monkeypatch.setattr(slurmcli, "run", lambda argv, **kw: subprocess.CompletedProcess(
        argv, 0, outputs[tuple(argv)], ""))
    alloc = plugin.adopt({"SLURM_JOB_ID": "9", "SLURM_JOB_NODELIST": "node[2-3]"}, SlurmOptions())
    assert [(n.name, n.address, n.gpus) for n in alloc.nodes] == [("node2", "10.1.0.2", 4),
                                                                  ("node3", "node3", 4)]
    assert alloc.job_id == "9" and alloc.info["job_gpus"] and alloc.info["adopted"]
    lnch = plugin.bench_make_launcher(spec=spec_of({}), allocation=alloc, run_dir=Path("/r"))
    assert lnch.ports.base == 20000 + 9 * 200


@pytest.mark.parametrize("tres", ["gres:gpu:4", "gres/gpu:4", "gres/gpu:h100:4"])
def test_adopt_falls_back_to_the_jobs_per_node_request(monkeypatch, tres):
    outputs = {
        ("scontrol", "show", "job", "-d", "9"): f"JobId=9 JobState=RUNNING TresPerNode={tres}\n",
        ("scontrol", "show", "hostnames", "n1"): "n1\n",
        ("scontrol", "show", "node", "n1"): "NodeName=n1 NodeAddr=10.0.0.1 Gres=gpu:8\n",
    }
    monkeypatch.setattr(slurmcli, "run", lambda argv, **kw: subprocess.CompletedProcess(
        argv, 0, outputs[tuple(argv)], ""))
    alloc = plugin.adopt({"SLURM_JOB_ID": "9", "SLURM_JOB_NODELIST": "n1"}, SlurmOptions())
    assert alloc.nodes[0].gpus == 4 and alloc.info["job_gpus"]


def test_adopt_without_gpus_trusts_the_recipe_but_asks_slurm_for_none(monkeypatch):
    outputs = {
        ("scontrol", "show", "job", "-d", "9"): "JobId=9 JobState=RUNNING\n",
        ("scontrol", "show", "hostnames", "n[1-2]"): "n1\nn2\n",
        ("scontrol", "show", "node", "n1,n2"): "NodeName=n1 NodeAddr=n1\nNodeName=n2 NodeAddr=n2\n",
    }
    monkeypatch.setattr(slurmcli, "run", lambda argv, **kw: subprocess.CompletedProcess(
        argv, 0, outputs[tuple(argv)], ""))
    env = {"SLURM_JOB_ID": "9", "SLURM_JOB_NODELIST": "n[1-2]"}
    alloc = plugin.adopt(env, SlurmOptions(nodes=2, gpus_per_node=8))
    assert [n.gpus for n in alloc.nodes] == [8, 8] and not alloc.info["job_gpus"]
    with pytest.raises(SchedulerError, match="has 2 node.* asks for slurm.nodes=3"):
        plugin.adopt(env, SlurmOptions(nodes=3))


def test_nodes_sharing_an_address_never_share_a_port(tmp_path):
    alloc = Allocation(scheduler="slurm", job_id="1", info={"job_gpus": False},
                       nodes=[Node(name=f"n{i}", address="127.0.0.1") for i in (1, 2)]
                       + [Node(name="n3", address="10.0.0.3")])
    lnch = SlurmLauncher(alloc, tmp_path, SlurmOptions(), job_gpus=False)
    a, b, c = lnch.ports.take(0, 2), lnch.ports.take(1, 2), lnch.ports.take(2, 2)
    assert not set(a) & set(b)
    assert c == a  # its own address: the same numbers are fine
