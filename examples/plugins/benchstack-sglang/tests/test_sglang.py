"""The sglang backend, tested only through benchstack's test kit (``-p benchstack.testing``).

Golden plans on the kit's fake cluster, recipe errors with their paths, the conformance check,
``bench plan`` and ``bench plugins`` through ``bench_cli``, and the readiness helpers against
the kit's timed server. SGLang itself is never started.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import benchstack_sglang.plugin as plugin
from benchstack.testing import (assert_golden, check_backend, plan, plan_text, recipe_errors,
                                stubs)

GOLDEN = Path(__file__).parent / "golden"
MODEL = {"name": "meta-llama/Llama-3.1-8B-Instruct", "path": "/models/Llama-3.1-8B-Instruct"}

AGG = {"aggregated": {"workers": 4, "tp": 2, "mem_fraction_static": 0.85,
                      "max_running_requests": 256}}
PD = {"transfer_backend": "mooncake", "ib_device": "mlx5_0,mlx5_1",
      "prefill": {"workers": 2, "tp": 2, "chunked_prefill_size": 8192},
      "decode": {"workers": 1, "tp": 4, "max_running_requests": 128},
      "router": {"prefill_policy": "cache_aware", "decode_policy": "power_of_two"}}
MINI_LB = {"transfer_backend": "nixl", "router": {"kind": "mini_lb", "port": 8000},
           "prefill": {"workers": 2, "tp": 4, "nodes": [0]},
           "decode": {"workers": 1, "tp": 8, "nodes": [1]}}
# DeepSeek-style: prefill TP8 on one node each, one decode server TP16 + DP-attention over two nodes
WIDE = {"trust_remote_code": True, "container_image": "lmsysorg/sglang:latest",
        "prefill": {"workers": 2, "tp": 8, "mem_fraction_static": 0.8},
        "decode": {"workers": 1, "tp": 16, "dp": 16, "enable_dp_attention": True, "ep": 16,
                   "max_running_requests": 128}}


@pytest.fixture
def manager(bench_manager):
    return bench_manager(("sglang", plugin), ("stub", stubs))


def recipe(section, nodes=1, gpus=8, **kw):
    return dict(name="sglang-test", backend="sglang", scheduler="fake", load="stub", model=MODEL,
                fake={"nodes": nodes, "gpus_per_node": gpus}, sglang=section,
                sweep={"concurrency": [1, 8], "isl": 1024, "osl": 128, "num_requests": 64}, **kw)


@pytest.mark.parametrize("name,section,nodes", [("aggregated", AGG, 1), ("disaggregated", PD, 1),
                                                ("mini_lb", MINI_LB, 2), ("wide_decode", WIDE, 4)])
def test_plan_golden(manager, name, section, nodes):
    assert_golden(GOLDEN / f"{name}.txt", plan_text(recipe(section, nodes=nodes), manager))


def test_aggregated_router_lists_every_worker(manager):
    p = plan(recipe(AGG), manager)
    procs = {x["name"]: x for x in p["processes"]}
    assert [x["name"] for x in p["processes"]] == ["aggregated-0", "aggregated-1", "aggregated-2",
                                                   "aggregated-3", "router"]
    assert [procs[f"aggregated-{i}"]["gpus"] for i in range(4)] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    router = procs["router"]["command"][0]
    urls = [f"http://10.0.0.11:{procs[f'aggregated-{i}']['ports'][0]}" for i in range(4)]
    assert "-m sglang_router.launch_router --worker-urls " + " ".join(urls) in router
    assert p["endpoints"][0]["url"] == f"http://10.0.0.11:{procs['router']['ports'][0]}"
    assert p["total_gpus"] == 8


def test_pd_bootstrap_ports_are_distinct_and_given_to_the_router(manager):
    p = plan(recipe(PD), manager)
    procs = {x["name"]: x for x in p["processes"]}
    router = procs["router"]["command"][0]
    assert "--pd-disaggregation" in router
    boots = []
    for i in range(2):
        port, boot = procs[f"prefill-{i}"]["ports"]
        cmd = procs[f"prefill-{i}"]["command"][0]
        assert f"--disaggregation-mode prefill --disaggregation-transfer-backend mooncake " \
               f"--disaggregation-ib-device mlx5_0,mlx5_1 --disaggregation-bootstrap-port {boot}" in cmd
        assert f"--prefill http://10.0.0.11:{port} {boot}" in router
        boots.append(boot)
    assert len(set(boots)) == 2
    decode = procs["decode-0"]["command"][0]
    assert "--disaggregation-mode decode" in decode and "bootstrap-port" not in decode
    assert f"--decode http://10.0.0.11:{procs['decode-0']['ports'][0]}" in router
    assert "--prefill-policy cache_aware --decode-policy power_of_two" in router


def test_wide_decode_runs_one_process_per_node(manager):
    p = plan(recipe(WIDE, nodes=4), manager)
    procs = {x["name"]: x for x in p["processes"]}
    assert procs["decode-0"]["nodes"] == ["node3"] and procs["decode-0-node1"]["nodes"] == ["node4"]
    dist = procs["decode-0"]["ports"][1]
    for rank, name in enumerate(["decode-0", "decode-0-node1"]):
        assert f"--dist-init-addr 10.0.0.13:{dist} --nnodes 2 --node-rank {rank}" in procs[name]["command"][0]
        assert procs[name]["gpus"] == list(range(8))
    assert p["total_gpus"] == 32


@pytest.mark.parametrize("section,line", [
    ({"prefill": {"workers": 1}}, "a prefill/decode deployment needs both 'prefill' and 'decode' @ recipe.sglang"),
    ({"aggregated": {"workers": 0}}, "'workers' must be >= 1: 0 @ recipe.sglang.aggregated"),
    ({"aggregated": {"tp": 4, "dp": 3, "enable_dp_attention": True}},
     "'tp' (4) must be a multiple of 'dp' (3) with enable_dp_attention @ recipe.sglang.aggregated"),
    ({"aggregated": {"mem_fraction_static": 1.5}}, "'mem_fraction_static' must be in (0, 1]: 1.5 @ recipe.sglang.aggregated"),
    ({"aggregated": {}, "router": {"policy": "fastest"}},
     "'policy' must be in ['cache_aware', 'round_robin', 'random', 'power_of_two'] (got 'fastest') @ recipe.sglang.router"),
    ({"aggregated": {"wokers": 2}}, "unknown key 'wokers' (known keys: chunked_prefill_size, context_length, dp, "
     "enable_dp_attention, env, ep, extra_args, max_running_requests, mem_fraction_static, nodes, tp, workers) "
     "@ recipe.sglang.aggregated"),
])
def test_section_errors_name_their_path(manager, section, line):
    assert recipe_errors(recipe(section), manager) == [line]


def test_cross_field_checks_in_bench_validate(manager):
    assert recipe_errors(recipe({"aggregated": {}, "router": {"kind": "mini_lb"}}), manager) == [
        "'mini_lb' balances prefill/decode deployments only; use kind: sglang_router for "
        "'aggregated' @ recipe.sglang.router"]


def test_too_few_gpus_is_a_clear_error(manager):
    from benchstack.placement import PlacementError

    with pytest.raises(PlacementError, match=r"sglang.decode worker 0 needs 2 whole node"):
        plan(recipe(WIDE, nodes=3), manager)


@pytest.mark.parametrize("section,nodes", [(AGG, 1), (PD, 1), (MINI_LB, 2), (WIDE, 4)])
def test_conformance(section, nodes):
    report = check_backend(plugin, "sglang", recipe(section, nodes=nodes))
    assert report.failed == [] and "records" in report.passed


def test_bench_plan_through_the_cli(bench_cli):
    result = bench_cli.use(("sglang", plugin))("plan", recipe(PD))
    assert result.exit_code == 0, result.output
    assert "python3 -m sglang_router.launch_router --pd-disaggregation" in result.stdout
    bad = bench_cli("plan", recipe({"aggregated": {"tp": 0}}))
    assert bad.exit_code == 2
    assert "'tp' must be >= 1: 0 @ recipe.sglang.aggregated" in bad.stderr


def test_bench_plugins_lists_the_plugin(bench_cli):
    data = bench_cli.use(("sglang", plugin)).json("plugins", "--json")
    mine = next(p for p in data["plugins"] if p["name"] == "sglang")
    assert mine["provides"] == {"backend": ["sglang"]}
    assert mine["hooks"] == ["bench_collect", "bench_discover_endpoints", "bench_launch_servers",
                             "bench_register_backends", "bench_validate"]


def test_readiness_helpers(bench_timed_server):
    server = bench_timed_server(model="m")
    assert plugin.servers_healthy({"prefill-0": server.url}) is True
    assert plugin.servers_healthy({"decode-0": "http://127.0.0.1:9"}) == "waiting for /health of decode-0"
    answer = {"workers": [{"url": "http://a:1", "worker_type": "prefill", "is_healthy": True},
                          {"url": "http://b:1", "worker_type": "decode", "is_healthy": False},
                          {"url": "http://c:1", "worker_type": "decode", "is_healthy": True}],
              "total": 3, "stats": {"prefill_count": 1, "decode_count": 2, "regular_count": 0}}
    assert plugin.router_counts(answer) == {"prefill": 1, "decode": 1}
    assert plugin.router_counts(None) == {}
