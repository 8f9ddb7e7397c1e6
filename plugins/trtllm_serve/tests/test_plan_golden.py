"""Golden plans of the seeds' trtllm-serve layouts; every generated config checked against TRT-LLM's schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import benchstack_trtllm_serve.plugin as plugin
from benchstack.cli import format_plan
from benchstack.errors import RecipeError
from benchstack.placement import PlacementError
from benchstack.testing import assert_golden, make_manager, make_recipe, make_spec, plan
from benchstack_trtllm_serve.standin.schema import validate_disagg_config, validate_llm_api_options

GOLDEN = Path(__file__).parent / "golden"

# seed 000, local-node instances: 4 TP1 instances per 4-GPU node (llama2-70b / mixtral style)
SEED000_LOCAL = ({"instances": {"tp": 1, "max_batch_size": 896, "max_num_tokens": 8192,
                                "kv_cache_free_gpu_memory_fraction": 0.9}},
                 {"nodes": 2, "gpus_per_node": 4}, "/models/Llama-2-70b-chat-hf")
# seed 000, cross-node: DeepSeek-R1, 8 GPUs per instance on 4-GPU nodes; 4 nodes give 2 DP ranks
SEED000_CROSS = ({"instances": {"tp": 8, "ep": 8, "attention_dp": True, "max_batch_size": 256,
                                "max_num_tokens": 8192, "kv_cache_free_gpu_memory_fraction": 0.85,
                                "llm_api_options": {"moe_config": {"backend": "WIDEEP"},
                                                    "cuda_graph_config": {"enable_padding": True}}},
                  "container_image": "/lustre/images/mlperf-trtllm.sqsh",
                  "container_mounts": ["/lustre/models:/models"]},
                 {"nodes": 4, "gpus_per_node": 4}, "/models/DeepSeek-R1")
# seed 001: Llama3.1-405B FP4, 4 context servers TP4 (one per node) + 1 generation server TP4
# on context server 0's GPUs
SEED001 = ({"launch": "mpi",  # the seed's workers run as MPI tasks (one per GPU) under trtllm-llmapi-launch
            "context": {"servers": 4, "tp": 4, "max_batch_size": 128, "max_num_tokens": 4096,
                        "cache_transceiver_backend": "UCX"},
            "generation": {"servers": 1, "tp": 4, "max_batch_size": 512, "max_num_tokens": 512,
                           "kv_cache_free_gpu_memory_fraction": 0.95, "cache_transceiver_backend": "UCX",
                           "share_gpus_with_context": True}},
           {"nodes": 4, "gpus_per_node": 4}, "/models/llama3.1-405b-instruct-hf-torch-fp4")
# seed 004's GB200 table as trtllm-serve disaggregated: 6 ctx TP4/EP4 ADP, 1 gen TP8/EP8 ADP
SEED004 = ({"context": {"servers": 6, "tp": 4, "ep": 4, "attention_dp": True, "max_batch_size": 1,
                        "max_num_tokens": 4096, "kv_cache_free_gpu_memory_fraction": 0.75,
                        "llm_api_options": {"enable_chunked_prefill": True}},
            "generation": {"servers": 1, "tp": 8, "ep": 8, "attention_dp": True, "max_batch_size": 256,
                           "max_num_tokens": 256, "kv_cache_free_gpu_memory_fraction": 0.8,
                           "llm_api_options": {"moe_config": {"backend": "WIDEEP"}}}},
           {"nodes": 8, "gpus_per_node": 4}, "/models/DeepSeek-R1-FP4")
LAYOUTS = {"seed000_local_node": SEED000_LOCAL, "seed000_cross_node": SEED000_CROSS,
           "seed001_disagg": SEED001, "seed004_gb200_disagg": SEED004}


@pytest.fixture
def manager():
    import benchstack_aiperf.plugin as aiperf

    return make_manager(("trtllm_serve", plugin), ("aiperf", aiperf))


def recipe(section, fake, model_path, **kw):
    return make_recipe(backend="trtllm_serve", load="aiperf", model={"name": "m", "path": model_path},
                       fake=fake, trtllm_serve=section, **kw)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_plan_golden(manager, name):
    section, fake, model = LAYOUTS[name]
    p = plan(recipe(section, fake, model), manager)
    assert_golden(GOLDEN / f"{name}.txt", format_plan(p))


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_generated_configs_pass_trtllm_schema(manager, name):
    section, fake, model = LAYOUTS[name]
    p = plan(recipe(section, fake, model), manager)
    checked = 0
    for path, text in p["files"].items():
        data = yaml.safe_load(text)
        if path == "configs/disagg.yaml":
            assert validate_disagg_config(data) == [], path
        else:
            assert validate_llm_api_options(data, path) == [], path
        checked += 1
    assert checked >= 1


def test_schema_check_catches_a_bad_generated_key(manager):
    section = {"instances": {"llm_api_options": {"kv_cache_config": {"free_gpu_memory_fractio": 0.5}}}}
    p = plan(recipe(section, {"nodes": 1, "gpus_per_node": 1}, "/models/x"), manager)
    errors = validate_llm_api_options(yaml.safe_load(p["files"]["configs/instances.yaml"]))
    assert errors and "free_gpu_memory_fractio" in errors[0]


def test_local_node_instances_get_disjoint_gpus_and_ports(manager):
    section, fake, model = SEED000_LOCAL
    p = plan(recipe(section, fake, model), manager)
    inst = [x for x in p["processes"] if x["role"] == "instances"]
    assert len(inst) == 8 and len(p["endpoints"]) == 8
    by_node = {}
    for x in inst:
        by_node.setdefault(x["nodes"][0], []).append((x["gpus"][0], x["ports"][0]))
    for node, pairs in by_node.items():
        assert sorted(g for g, _ in pairs) == [0, 1, 2, 3]
        assert len({port for _, port in pairs}) == 4
    assert {e["model"] for e in p["endpoints"]} == {"Llama-2-70b-chat-hf"}


def test_cross_node_instances_are_mpi_over_whole_nodes(manager):
    section, fake, model = SEED000_CROSS
    p = plan(recipe(section, fake, model), manager)
    inst = [x for x in p["processes"] if x["role"] == "instances"]
    assert [x["nodes"] for x in inst] == [["node1", "node2"], ["node3", "node4"]]
    assert all(x["tasks_per_node"] == 4 for x in inst)
    assert all("trtllm-llmapi-launch trtllm-serve" in x["command"][0] for x in inst)
    assert [e["url"] for e in p["endpoints"]] == ["http://10.0.0.11:8000", "http://10.0.0.13:8000"]


def test_disagg_config_from_allocated_hosts_and_ports(manager):
    section, fake, model = SEED001
    p = plan(recipe(section, fake, model), manager)
    cfg = yaml.safe_load(p["files"]["configs/disagg.yaml"])
    procs = {x["name"]: x for x in p["processes"]}
    assert cfg["context_servers"]["num_instances"] == 4
    assert cfg["context_servers"]["urls"] == [f"10.0.0.{11 + i}:{procs[f'ctx-{i}']['ports'][0]}" for i in range(4)]
    assert cfg["generation_servers"]["urls"] == [f"10.0.0.11:{procs['gen-0']['ports'][0]}"]
    assert procs["gen-0"]["gpus"] == procs["ctx-0"]["gpus"] == [0, 1, 2, 3]  # shared on request
    assert p["total_gpus"] == 16
    assert procs["disagg-server"]["command"][0].endswith(
        f"trtllm-serve disaggregated -c /runs/test/configs/disagg.yaml -t 1800 -r 7200")


def test_generation_does_not_share_gpus_unless_asked(manager):
    section = {"context": {"servers": 4, "tp": 4}, "generation": {"servers": 1, "tp": 4}}
    with pytest.raises(PlacementError, match="generation server 0 needs 4 GPU"):
        plan(recipe(section, {"nodes": 4, "gpus_per_node": 4}, "/models/x"), manager)


def test_trt_backend_needs_engine_dir(manager):
    with pytest.raises(RecipeError) as exc:
        make_spec(recipe({"backend": "trt", "instances": {}}, {"nodes": 1}, "/models/x"), manager)
    assert exc.value.lines == ["backend 'trt' needs 'engine_dir' (a prebuilt TensorRT-LLM engine) @ recipe.trtllm_serve"]
    p = plan(recipe({"backend": "trt", "engine_dir": "/engines/llama-70b-tp1", "instances": {"count": 1}},
                    {"nodes": 1, "gpus_per_node": 1}, "/models/llama"), manager)
    cmd = p["processes"][0]["command"][0]
    assert "trtllm-serve /engines/llama-70b-tp1" in cmd and "--backend trt" in cmd and "--tokenizer /models/llama" in cmd
