"""Golden files of generated engine configs and commands (bench plan) for three layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

import benchstack_dynamo_trtllm.plugin as plugin
from benchstack.cli import format_plan
from benchstack.errors import RecipeError
from benchstack.placement import PlacementError
from benchstack.testing import assert_golden, make_manager, make_recipe, make_spec, plan

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def manager():
    import benchstack_aiperf.plugin as aiperf

    return make_manager(("dynamo_trtllm", plugin), ("aiperf", aiperf))


def recipe(section, nodes=1, gpus=4, **kw):
    return make_recipe(backend="dynamo_trtllm", load="aiperf",
                       model={"name": "nvidia/DeepSeek-R1-FP4", "path": "/models/DeepSeek-R1-FP4"},
                       fake={"nodes": nodes, "gpus_per_node": gpus},
                       dynamo_trtllm={"python": "python3", **section}, **kw)


AGG = {"aggregated": {"workers": 2, "tp": 2, "max_batch_size": 64, "max_num_tokens": 8192,
                      "kv_cache_free_gpu_memory_fraction": 0.85}}
DISAGG = {"discovery": "file",
          "prefill": {"workers": 2, "tp": 1, "max_batch_size": 1, "max_num_tokens": 8192},
          "decode": {"workers": 1, "tp": 2, "max_batch_size": 128, "max_num_tokens": 128,
                     "engine_args": {"cuda_graph_config": {"batch_sizes": [1, 8, 32, 128]}}}}
# seed 004, GB200 table: 6 prefill servers TP4/EP4 attention-DP, 1 decode TP8/EP8 attention-DP,
# 4-GPU nodes (decode spans 2 nodes under MPI), NVFP4, ISL 8150 / OSL 1024
SEED004 = {"container_image": "nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime:0.4.0",
           "container_mounts": ["/lustre/models:/models"],
           "prefill": {"workers": 6, "tp": 4, "ep": 4, "attention_dp": True, "max_batch_size": 1,
                       "max_num_tokens": 4096, "kv_cache_free_gpu_memory_fraction": 0.75,
                       "engine_args": {"enable_chunked_prefill": True}},
           "decode": {"workers": 1, "tp": 8, "ep": 8, "attention_dp": True, "max_batch_size": 256,
                      "max_num_tokens": 256, "kv_cache_free_gpu_memory_fraction": 0.8,
                      "engine_args": {"moe_config": {"backend": "WIDEEP"}}}}


@pytest.mark.parametrize("name,section,nodes", [("aggregated", AGG, 1), ("disaggregated", DISAGG, 1),
                                                ("seed004_gb200", SEED004, 8)])
def test_plan_golden(manager, name, section, nodes):
    sweep = {"concurrency": [2048], "isl": 8150, "osl": 1024, "num_requests": 16384} \
        if name.startswith("seed") else None
    kw = {"sweep": sweep} if sweep else {}
    p = plan(recipe(section, nodes=nodes, **kw), manager)
    assert_golden(GOLDEN / f"{name}.txt", format_plan(p))


def test_seed004_gpu_map(manager):
    p = plan(recipe(SEED004, nodes=8), manager)
    procs = {x["name"]: x for x in p["processes"]}
    assert [procs[f"prefill-{i}"]["nodes"] for i in range(6)] == [[f"node{i + 1}"] for i in range(6)]
    assert procs["decode-0"]["nodes"] == ["node7", "node8"]
    assert procs["decode-0"]["tasks_per_node"] == 4
    assert p["total_gpus"] == 32
    assert p["files"]["configs/decode.yaml"].count("moe_expert_parallel_size: 8") == 1
    assert "trtllm-llmapi-launch python3 -m dynamo.trtllm" in procs["decode-0"]["command"][0]
    assert "trtllm-llmapi-launch" not in procs["prefill-0"]["command"][0]


def test_too_few_gpus_is_a_clear_error(manager):
    with pytest.raises(PlacementError, match=r"dynamo_trtllm.decode worker 0 needs 2 whole node"):
        plan(recipe(SEED004, nodes=6), manager)


def test_role_node_placement(manager):
    section = {"prefill": {"workers": 2, "nodes": [1]}, "decode": {"workers": 1, "nodes": [2]}}
    p = plan(recipe(section, nodes=3), manager)
    procs = {x["name"]: x for x in p["processes"]}
    assert procs["frontend"]["nodes"] == ["node1"] and procs["etcd"]["nodes"] == ["node1"]
    assert procs["prefill-0"]["nodes"] == procs["prefill-1"]["nodes"] == ["node2"]
    assert procs["prefill-0"]["gpus"] == [0] and procs["prefill-1"]["gpus"] == [1]
    assert procs["decode-0"]["nodes"] == ["node3"]
    # workers reach etcd/NATS on the head node's address, and bind their own
    assert "ETCD_ENDPOINTS=http://10.0.0.11:" in procs["decode-0"]["command"][0]


@pytest.mark.parametrize("section,line", [
    ({"prefill": {"workers": 1}}, "a disaggregated deployment needs both 'prefill' and 'decode' @ recipe.dynamo_trtllm"),
    ({"aggregated": {"workers": 1}, "decode": {}}, "give either 'aggregated' or 'prefill' and 'decode', not both @ recipe.dynamo_trtllm"),
    ({"aggregated": {"workers": 0}}, "'workers' must be >= 1: 0 @ recipe.dynamo_trtllm.aggregated"),
    ({"aggregated": {"kv_cache_free_gpu_memory_fraction": 1.5}}, "'kv_cache_free_gpu_memory_fraction' must be in (0, 1]: 1.5 @ recipe.dynamo_trtllm.aggregated"),
    ({"aggregated": {}, "worker": "sglang"}, "'worker' must be in ['trtllm', 'mocker'] (got 'sglang') @ recipe.dynamo_trtllm"),
])
def test_section_errors(manager, section, line):
    with pytest.raises(RecipeError) as exc:
        make_spec(recipe(section), manager)
    assert exc.value.lines == [line]


def test_max_num_tokens_below_batch_is_rejected(manager):
    with pytest.raises(RecipeError) as exc:
        make_spec(recipe({"aggregated": {"max_batch_size": 64, "max_num_tokens": 8}}), manager)
    assert exc.value.lines == ["'max_num_tokens' (8) must be >= 'max_batch_size' (64) @ recipe.dynamo_trtllm.aggregated"]


def test_count_instances_from_frontend_health():
    health = {"status": "healthy", "instances": [
        {"component": "prefill", "endpoint": "generate", "namespace": "ns", "instance_id": 1},
        {"component": "backend", "endpoint": "generate", "namespace": "ns", "instance_id": 2},
        {"component": "backend", "endpoint": "clear_kv_blocks", "namespace": "ns", "instance_id": 2},
        {"component": "backend", "endpoint": "generate", "namespace": "other", "instance_id": 3},
        {"component": "prefill", "endpoint": "generate", "namespace": "ns", "instance_id": 1}]}
    assert plugin.count_instances(health, "ns") == {"prefill": 1, "backend": 1}
    assert plugin.expected_counts({"prefill": 2, "decode": 1}) == {"prefill": 2, "backend": 1}


def test_fixed_frontend_port_is_reserved_first(manager):
    section = {"frontend": {"port": 8000}, "aggregated": {"workers": 1}}
    p = plan(recipe(section), manager)
    procs = {x["name"]: x for x in p["processes"]}
    assert procs["frontend"]["ports"] == [8000]
    assert 8000 not in procs["etcd"]["ports"] + procs["nats"]["ports"] + procs["aggregated-0"]["ports"]
