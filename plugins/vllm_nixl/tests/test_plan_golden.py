"""Golden files of the planned commands, environment and GPU map (bench plan, fake 2 x 8-GPU nodes)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

import benchstack_vllm_nixl.plugin as plugin
from benchstack.cli import format_plan
from benchstack.errors import RecipeError
from benchstack.placement import PlacementError
from benchstack.testing import assert_golden, make_manager, make_recipe, make_spec, plan

GOLDEN = Path(__file__).parent / "golden"
MODEL = {"name": "neuralmagic/DeepSeek-R1-Distill-Llama-70B-FP8-dynamic",
         "path": "/models/DeepSeek-R1-Distill-Llama-70B-FP8-dynamic"}
# seed 003's sweep: concurrency 1..128, ISL 3000 / OSL 150
SWEEP = {"concurrency": [1, 2, 4, 8, 16, 32, 64, 128], "isl": 3000, "osl": 150,
         "requests_per_concurrency": 10, "min_requests": 100}
UCX = {"UCX_TLS": "rc,cuda_copy,cuda_ipc", "UCX_NET_DEVICES": "mlx5_0:1"}
# seed 003: prefill TP2 x DP6 (DP4 fills node 1, DP2 on node 2 beside decode TP4 x DP1)
SEED003 = {
    "python": "/opt/vllm/bin/python",
    "ucx": UCX,
    "env": {"VLLM_LOGGING_LEVEL": "INFO"},
    "prefill": {"instances": 6, "tp": 2, "max_num_seqs": 1, "max_model_len": 3500,
                "extra_args": ["--block-size", "128", "--no-enable-prefix-caching"]},
    "decode": {"instances": 1, "tp": 4, "max_num_seqs": 256, "max_model_len": 3500,
               "gpu_memory_utilization": 0.9, "extra_args": ["--block-size", "128"],
               "env": {"VLLM_NIXL_ABORT_REQUEST_TIMEOUT": "600"}},
    "router": {"python": "/opt/bench/bin/python", "port": 8080},
}
AGGREGATED = {
    "mode": "aggregated",
    "python": "/opt/vllm/bin/python",
    "aggregated": {"instances": 4, "tp": 4, "max_num_seqs": 256, "max_model_len": 3500,
                   "dtype": "auto", "enforce_eager": True},
    "router": {"python": "/opt/bench/bin/python", "policy": "least_loaded"},
}


@pytest.fixture
def manager():
    import benchstack_aiperf.plugin as aiperf

    return make_manager(("vllm_nixl", plugin), ("aiperf", aiperf))


def _env(command: str) -> dict[str, str]:
    words = shlex.split(command.split("] ", 1)[1])
    return dict(w.split("=", 1) for w in words[1:words.index(next(w for w in words[1:] if "=" not in w))])


def recipe(section: dict, nodes: int = 2, gpus: int = 8, **kw) -> dict:
    return make_recipe(backend="vllm_nixl", load="aiperf", model=MODEL, sweep=SWEEP,
                       fake={"nodes": nodes, "gpus_per_node": gpus}, vllm_nixl=section, **kw)


@pytest.mark.parametrize("name,section", [
    ("seed003_prefill_tp2dp6_decode_tp4dp1", SEED003),
    ("seed003_vllm_router", {**SEED003, "router": {"kind": "vllm-router", "command": ["vllm-router"],
                                                   "policy": "consistent_hash"}}),
    ("aggregated_tp4dp4", AGGREGATED),
])
def test_plan_golden(manager, name, section):
    assert_golden(GOLDEN / f"{name}.txt", format_plan(plan(recipe(section), manager)))


def test_seed003_gpu_map_and_side_channels(manager):
    p = plan(recipe(SEED003), manager)
    procs = {x["name"]: x for x in p["processes"]}
    # node 1: prefill TP2 x DP4; node 2: prefill TP2 x DP2 + decode TP4 x DP1
    assert [(procs[f"prefill-{i}"]["nodes"], procs[f"prefill-{i}"]["gpus"]) for i in range(6)] == [
        (["node1"], [0, 1]), (["node1"], [2, 3]), (["node1"], [4, 5]), (["node1"], [6, 7]),
        (["node2"], [0, 1]), (["node2"], [2, 3])]
    assert procs["decode-0"]["nodes"] == ["node2"] and procs["decode-0"]["gpus"] == [4, 5, 6, 7]
    assert p["total_gpus"] == 16
    # each instance: its own HTTP port and NIXL side-channel port on its own host
    sides = {(x["nodes"][0], x["ports"][1]) for n, x in procs.items() if n != "router"}
    assert len(sides) == 7
    for name, x in procs.items():
        cmd = x["command"][0]
        if name == "router":
            continue
        host = {"node1": "10.0.0.11", "node2": "10.0.0.12"}[x["nodes"][0]]
        assert f"VLLM_NIXL_SIDE_CHANNEL_HOST={host} " in cmd
        assert f"VLLM_NIXL_SIDE_CHANNEL_PORT={x['ports'][1]} " in cmd
        assert f"--host {host} --port {x['ports'][0]} " in cmd
        assert "CUDA_VISIBLE_DEVICES=" + ",".join(map(str, x["gpus"])) in cmd
        assert "UCX_TLS=rc,cuda_copy,cuda_ipc UCX_NET_DEVICES=mlx5_0:1" not in cmd  # sorted env
        assert "UCX_NET_DEVICES=mlx5_0:1 UCX_TLS=rc,cuda_copy,cuda_ipc" in cmd
    kv = {"prefill-0": "kv_producer", "decode-0": "kv_consumer"}
    for name, role in kv.items():
        cfg = procs[name]["command"][0].split("--kv-transfer-config ")[1].split("'")[1]
        assert json.loads(cfg) == {"kv_connector": "NixlConnector", "kv_role": role,
                                   "kv_buffer_device": "cuda"}
    router = procs["router"]["command"][0]
    assert router.count("--prefill http://10.0.0.1") == 6 and router.count("--decode ") == 1
    assert p["endpoints"] == [{"url": "http://10.0.0.11:8080", "model": MODEL["name"],
                               "role": "frontend", "gpus": 16, "server": "router"}]


def test_role_nodes_pin_prefill_and_decode_to_their_nodes(manager):
    section = {"python": "python3", "prefill": {"instances": 2, "tp": 2, "nodes": [1]},
               "decode": {"instances": 1, "tp": 4, "nodes": [0]}}
    procs = {x["name"]: x for x in plan(recipe(section), manager)["processes"]}
    assert procs["prefill-0"]["nodes"] == procs["prefill-1"]["nodes"] == ["node2"]
    assert procs["prefill-1"]["gpus"] == [2, 3]
    assert procs["decode-0"]["nodes"] == ["node1"] and procs["decode-0"]["gpus"] == [0, 1, 2, 3]


def test_cpu_device_pins_each_server_to_its_own_cores(manager):
    section = {"python": "python3", "device": "cpu", "cpu_cores_per_node": 4,
               "prefill": {"instances": 2}, "decode": {"tp": 2}}
    p = plan(recipe(section, nodes=1, gpus=0), manager)
    procs = {x["name"]: x for x in p["processes"]}
    binds = {n: _env(x["command"][0])["VLLM_CPU_OMP_THREADS_BIND"] for n, x in procs.items() if n != "router"}
    assert binds == {"prefill-0": "0", "prefill-1": "1", "decode-0": "2|3"}
    assert all(x["gpus"] == [] for x in procs.values()) and p["total_gpus"] == 0
    assert '"kv_buffer_device":"cpu"' in procs["decode-0"]["command"][0]


def test_single_aggregated_instance_has_no_router(manager):
    section = {"mode": "aggregated", "python": "python3", "aggregated": {"tp": 2}}
    p = plan(recipe(section, nodes=1), manager)
    assert [x["name"] for x in p["processes"]] == ["vllm-0"]
    assert "--kv-transfer-config" not in p["processes"][0]["command"][0]
    assert "VLLM_NIXL" not in p["processes"][0]["command"][0]
    assert p["endpoints"][0]["server"] == "vllm-0" and p["endpoints"][0]["gpus"] == 2


def test_python_defaults_to_env_then_repo_venv(manager, monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_VLLM_PYTHON", "/somewhere/python")
    p = plan(recipe({"mode": "aggregated"}, nodes=1), manager)
    assert "/somewhere/python -m vllm.entrypoints.openai.api_server" in p["processes"][0]["command"][0]
    monkeypatch.delenv("BENCH_VLLM_PYTHON")
    from benchstack_vllm_nixl.options import default_python

    assert default_python(tmp_path) == "python3"
    (tmp_path / ".venv-vllm" / "bin").mkdir(parents=True)
    (tmp_path / ".venv-vllm" / "bin" / "python").touch()
    assert default_python(tmp_path) == str(tmp_path / ".venv-vllm" / "bin" / "python")


def test_command_prefix_replaces_python(manager):
    section = {"mode": "aggregated", "command": ["vllm", "serve"]}
    cmd = plan(recipe(section, nodes=1), manager)["processes"][0]["command"][0]
    assert cmd.split("[node1 x1] env CUDA_VISIBLE_DEVICES=0 ")[1].startswith("vllm serve --model /models/")


def test_too_few_gpus_is_a_clear_error(manager):
    with pytest.raises(PlacementError, match=r"vllm_nixl.prefill instance 4 needs 2 GPU\(s\) on one "
                                             r"node; free GPUs left: node1: 0"):
        plan(recipe(SEED003, nodes=1), manager)


@pytest.mark.parametrize("section,line", [
    ({"prefill": {"instances": 0}}, "'instances' must be >= 1: 0 @ recipe.vllm_nixl.prefill"),
    ({"decode": {"tp": 4, "gpus_per_instance": 2}},
     "'gpus_per_instance' (2) must be >= 'tp' (4) @ recipe.vllm_nixl.decode"),
    ({"ucx": {"NCCL_DEBUG": "INFO"}}, "'ucx' holds UCX_* variables only: 'NCCL_DEBUG' @ recipe.vllm_nixl"),
    ({"router": {"kind": "vllm-router", "policy": "least_loaded"}},
     "'policy' must be one of round_robin, random, power_of_two, cache_aware, consistent_hash for "
     "router 'vllm-router': 'least_loaded' @ recipe.vllm_nixl.router"),
    ({"prefill": {"kv_role": "producer"}},
     "'kv_role' must be in ('kv_producer', 'kv_consumer', 'kv_both') (got 'producer') @ recipe.vllm_nixl.prefill"),
    ({"decode": {"nodes": []}}, "'nodes' must not be empty (leave it out for every node) @ recipe.vllm_nixl.decode"),
    ({"aggregated": {"tp": 2}}, "'aggregated' is not used with mode 'disaggregated' @ recipe.vllm_nixl.aggregated"),
    ({"mode": "aggregated", "decode": {"tp": 2}}, "'decode' is not used with mode 'aggregated' @ recipe.vllm_nixl.decode"),
])
def test_section_errors(manager, section, line):
    with pytest.raises(RecipeError) as exc:
        make_spec(recipe(section), manager)
    assert exc.value.lines == [line]
