"""The test kit itself: fixtures as an opt-in pytest plugin, factories, conformance checks (the
built-in plugins pass them, broken plugins fail them with their reason) and the
BENCHSTACK_EXTRA_PLUGINS seam."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import benchstack.local as local
import benchstack.plugins as plugins_mod
from benchstack import hookimpl
from benchstack.cli import format_plan
from benchstack.errors import PluginError
from benchstack.local import LocalLauncher
from benchstack.records import (Allocation, BackendInfo, Endpoint, LoadgenInfo, Node, ProcessSpec,
                                SchedulerInfo, ServerHandle, ServerSet)
from benchstack.results import check_validity
from benchstack.testing import (BASE_RECIPE, ConformanceError, check_backend, check_loadgen,
                                check_scheduler, fake_scheduler, make_allocation, make_endpoint,
                                make_load_result, make_manager, make_metrics, make_point,
                                make_process, make_recipe, make_server_set, plan, plan_text,
                                recipe_errors, stubs)
from benchstack.testing.e2e import bench

# the kit's fixtures (what `-p benchstack.testing` registers; that module is imported above already)
pytest_plugins = ["pytester", "benchstack.testing.fixtures"]

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / ".cache" / "models" / "tiny-llama"


# --------------------------------------------------------------------------- the pytest plugin


def test_fixtures_need_the_opt_in(pytester):
    pytester.makepyfile("""
        def test_cli(bench_cli, bench_recipe, bench_manager):
            from benchstack.testing import stubs
            result = bench_cli.use()("plan", bench_recipe(backend="stub", load="stub"))
            assert result.exit_code == 0, result.output
            assert "benchstack.testing.timed_server" in result.stdout
            assert bench_manager(("stub", stubs)).info("backend", "stub").name == "stub"
    """)
    pytester.runpytest("-p", "benchstack.testing", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    without = pytester.runpytest("-p", "no:cacheprovider")
    without.assert_outcomes(errors=1)
    without.stdout.fnmatch_lines(["*fixture 'bench_cli' not found*"])


def test_no_leftovers_fixture_fails_a_test_that_leaks(pytester):
    pytester.makepyfile("""
        import subprocess, sys
        def test_leaks(bench_no_leftovers):
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        def test_cleans_up(bench_no_leftovers):
            p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            p.kill(); p.wait()
    """)
    result = pytester.runpytest("-p", "benchstack.testing", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*1 process(es) outlived the test (killed now)*"])


def test_importing_the_kit_needs_no_pytest():
    code = "import sys, benchstack.testing; print('pytest' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bench_cli_with_installed_or_chosen_plugins(bench_cli):
    installed = {p["name"] for p in bench_cli.json("plugins", "--json")["plugins"]}
    assert {"local", "dynamo_trtllm", "aiperf"} <= installed
    chosen = bench_cli.use(("local", local)).json("plugins", "--json")
    assert [p["name"] for p in chosen["plugins"]] == ["local", "fake", "stub"]
    bad = bench_cli("plan", make_recipe(backend="nope", load="stub"))
    assert bad.exit_code == 2 and "unknown backend 'nope'; choose one of: stub" in bad.stderr


def test_timed_server_fixture(bench_timed_server):
    from benchstack.probe import models_listed

    server = bench_timed_server(model="m", ttft_ms=1)
    assert models_listed(server.url, "m") is True


# --------------------------------------------------------------------------- kit helpers


def test_factories_agree_with_each_other():
    point = make_point(concurrency=4, osl=32, num_requests=16)
    result = make_load_result(point)
    assert result.metrics.requests_completed == 16 and result.metrics.output_tokens.mean == 32
    assert check_validity(result, make_recipe_gates()).valid
    assert not check_validity(make_load_result(point, metrics=make_metrics(requests=16, failed=8)),
                              make_recipe_gates()).valid
    assert [n.address for n in make_allocation(nodes=2).nodes] == ["10.0.0.11", "10.0.0.12"]
    servers = make_server_set(processes=[make_process("a"), make_process("b")])
    assert [h.log_path.name for h in servers.servers] == ["a.log", "b.log"]
    assert make_endpoint(gpus=8).gpus == 8


def make_recipe_gates():
    from benchstack.records import ValidityGates

    return ValidityGates()


def test_fake_nodes_match_make_allocation():
    manager = make_manager(("stub", stubs))
    p = plan(make_recipe(backend="stub", load="stub", fake={"nodes": 2}), manager)
    assert p["allocation"]["nodes"] == [{"name": n.name, "address": n.address, "gpus": n.gpus}
                                        for n in make_allocation(nodes=2).nodes]
    assert plan_text(make_recipe(backend="stub", load="stub"), manager) == format_plan(
        plan(make_recipe(backend="stub", load="stub"), manager))


def test_recipe_errors_are_the_lines_bench_prints():
    manager = make_manager(("stub", stubs))
    assert recipe_errors(make_recipe(backend="stub", load="stub"), manager) == []
    assert recipe_errors(make_recipe(backend="stub", load="stub", fake={"nodes": 0}), manager) == [
        "'nodes' must be >= 1: 0 @ recipe.fake"]
    assert BASE_RECIPE["scheduler"] == "fake"


# --------------------------------------------------------------------------- built-in plugins pass


DYNAMO_LAYOUTS = {
    "aggregated": {"aggregated": {"workers": 2, "tp": 2}},
    "disaggregated": {"discovery": "file", "prefill": {"workers": 2}, "decode": {"workers": 1, "tp": 2}},
    "wide": {"prefill": {"workers": 2, "tp": 4}, "decode": {"workers": 1, "tp": 8}},
}


@pytest.mark.parametrize("layout", sorted(DYNAMO_LAYOUTS))
def test_dynamo_trtllm_conforms(layout):
    import benchstack_dynamo_trtllm.plugin as dynamo

    section = {"python": "python3", **DYNAMO_LAYOUTS[layout]}
    report = check_backend(dynamo, "dynamo_trtllm", {"dynamo_trtllm": section,
                                                      "fake": {"nodes": 4, "gpus_per_node": 4}})
    assert report.passed == ["registers", "recipe", "other", "plan", "records", "teardown"]


def test_local_scheduler_conforms(tmp_path):
    report = check_scheduler(local, "local", {"local": {"port_base": 23000}}, tmp_path=tmp_path)
    assert report.passed == ["registers", "recipe", "other", "allocation", "describe", "plan", "live"]


def test_fake_scheduler_conforms_for_plans_and_says_it_cannot_run():
    check_scheduler(fake_scheduler, "fake", live=False)
    with pytest.raises(ConformanceError, match="live: raised AssertionError: the fake scheduler starts nothing"):
        check_scheduler(fake_scheduler, "fake")


def test_stub_backend_runs_live_and_leaves_nothing():
    report = check_backend(stubs, "stub", {"local": {"port_base": 23100}}, live=True)
    assert "live" in report.passed


def test_live_loadgen_check_catches_made_up_results():
    check_loadgen(stubs, "stub", live=False)
    with pytest.raises(ConformanceError) as exc:
        check_loadgen(stubs, "stub")  # the stub invents its numbers; the timed server saw nothing
    assert exc.value.report.failed == ["live: 8 completed, but the server served 0"]


@pytest.mark.e2e
def test_dynamo_trtllm_runs_live_and_leaves_nothing():
    import benchstack_dynamo_trtllm.plugin as dynamo

    recipe = {"model": {"name": "tiny-llama", "path": str(TINY), "create": "tiny"},
              "dynamo_trtllm": {"worker": "mocker", "discovery": "file", "prefill": {"workers": 1},
                                "decode": {"workers": 1}},
              "local": {"port_base": 23200}, "ready_timeout_s": 120}
    if not TINY.exists():
        from benchstack.tinymodel import make_tiny_model

        make_tiny_model(TINY, name="tiny-llama")
    assert "live" in check_backend(dynamo, "dynamo_trtllm", recipe, live=True).passed


@pytest.mark.e2e
def test_aiperf_conforms_against_the_timed_server():
    import benchstack_aiperf.plugin as aiperf

    if not TINY.exists():
        from benchstack.tinymodel import make_tiny_model

        make_tiny_model(TINY, name="tiny-llama")
    report = check_loadgen(aiperf, "aiperf", {
        "model": {"name": "timed-model", "path": str(TINY)},
        "sweep": {"concurrency": [2], "isl": 16, "osl": 8, "num_requests": 8}})
    assert "live" in report.passed


# --------------------------------------------------------------------------- broken plugins fail


def _endpoint(allocation, port, spec, server="srv-0"):
    return Endpoint(url=f"http://{allocation.nodes[0].address}:{port}", model=spec.model.name,
                    server=server)


def backend(name, launch=None, options_type=None, names=None, **hooks):
    """A plugin object providing backend ``name`` (registered as ``names``) with these hooks."""

    def bench_register_backends():
        return [BackendInfo(name=n, options_type=options_type) for n in (names or [name])]

    def bench_launch_servers(spec, allocation, launcher):
        if spec.backend != name:
            return None
        port = launcher.ports.one(0)
        h = launcher.start(ProcessSpec(name="srv-0", role="frontend", ports=(port,), gpus=(0,),
                                       argv=("srv", "--port", str(port))))
        return ServerSet(backend=name, servers=[h], endpoints=[_endpoint(allocation, port, spec)])

    funcs = {"bench_register_backends": bench_register_backends,
             "bench_launch_servers": launch or bench_launch_servers, **hooks}
    return type(name, (), {k: staticmethod(hookimpl(f)) for k, f in funcs.items()})


def greedy_launch(spec, allocation, launcher):  # never looks at spec.backend
    h = launcher.start(ProcessSpec(name="srv-0", role="frontend", argv=("srv",)))
    return ServerSet(backend="greedy", servers=[h], endpoints=[_endpoint(allocation, 1, spec)])


def careless_launch(spec, allocation, launcher):  # reads its options before its selection
    if spec.options_for("careless").workers and spec.backend != "careless":
        return None
    return greedy_launch(spec, allocation, launcher)


def dict_launch(spec, allocation, launcher):
    return None if spec.backend != "dicts" else {"servers": [], "endpoints": ["http://x:1"]}


def forged_launch(spec, allocation, launcher):
    if spec.backend != "forger":
        return None
    h = ServerHandle(spec=ProcessSpec(name="srv-0", role="frontend", argv=("srv",)),
                     log_path=launcher.path("logs/srv-0.log"))
    return ServerSet(backend="forger", servers=[h], endpoints=[_endpoint(allocation, 1, spec)])


def colliding_launch(spec, allocation, launcher):
    if spec.backend != "collider":
        return None
    hs = [launcher.start(ProcessSpec(name=f"srv-{i}", role="worker", ports=(9000,), gpus=(0, 1),
                                     argv=("srv",), env={"N": i})) for i in range(2)]
    return ServerSet(backend="collider", servers=hs, endpoints=[_endpoint(allocation, 9000, spec)])


def spawning_launch(spec, allocation, launcher):
    if spec.backend != "spawner":
        return None
    subprocess.run(["nvidia-smi", "-L"], capture_output=True)  # outside the launcher
    return greedy_launch(spec, allocation, launcher)


COUNTER = {"n": 0}


def stateful_launch(spec, allocation, launcher):
    if spec.backend != "stateful":
        return None
    COUNTER["n"] += 1  # a module-level counter makes two plans differ
    h = launcher.start(ProcessSpec(name=f"srv-{COUNTER['n']}", role="frontend", argv=("srv",)))
    return ServerSet(backend="stateful", servers=[h], endpoints=[_endpoint(allocation, 1, spec, h.spec.name)])


def fragile_teardown(spec, allocation, servers):
    if spec.backend == "fragile":
        allocation.nodes  # AttributeError when nothing was allocated


def nosy_validate(spec):
    return ["'workers' must be >= 1: 0 @ recipe.somebody_else"]


def typo_launch(spec, allocation, launcher):
    return None


BROKEN_BACKENDS = [
    (backend("twice", names=["twice", "twice"]), "registers: bench_register_backends names 'twice' 2 times"),
    (backend("plainopts", options_type=dict), "registers: options_type of 'plainopts' is <class 'dict'>, not an attrs class"),
    (backend("greedy", launch=greedy_launch), "other: bench_launch_servers returned ServerSet(backend='greedy'"),
    (backend("careless", launch=careless_launch),
     "other: bench_launch_servers raised AttributeError: 'NoneType' object has no attribute 'workers'"),
    (backend("nosy", bench_validate=nosy_validate), "other: bench_validate reported ["),
    (backend("dicts", launch=dict_launch), "plan: bench_launch_servers returned {'servers': [], "),
    (backend("forger", launch=forged_launch), "records: server 'srv-0' was not started through launcher.start"),
    (backend("collider", launch=colliding_launch),
     "records: srv-0: env values must be str: {'N': 0}; srv-1: env values must be str: {'N': 1}; "
     "GPU 0 of node1 given to srv-0 and srv-1; GPU 1 of node1 given to srv-0 and srv-1; "
     "port 9000 of node1 used by srv-0 and srv-1"),
    (backend("spawner", launch=spawning_launch),
     "plan: started ['nvidia-smi', '-L'] itself (processes go through launcher.start)"),
    (backend("stateful", launch=stateful_launch), "plan: two plans of one recipe differ in ['processes', 'endpoints']"),
    (backend("fragile", bench_teardown=fragile_teardown),
     "teardown: raised AttributeError: 'NoneType' object has no attribute 'nodes'"),
    (backend("typo", bench_lanuch_servers=typo_launch), "registers: raised PluginError: a plugin implements an unknown hook"),
]


@pytest.mark.parametrize("plugin,reason", BROKEN_BACKENDS, ids=[b[0].__name__ for b in BROKEN_BACKENDS])
def test_broken_backend_fails_with_its_reason(plugin, reason):
    with pytest.raises(ConformanceError) as exc:
        check_backend(plugin, plugin.__name__)
    assert any(f.startswith(reason) for f in exc.value.report.failed), exc.value.report.failed


def test_a_good_backend_passes_the_same_checks():
    assert check_backend(backend("good"), "good").failed == []


class LeaderOnlyLauncher(LocalLauncher):
    """Ends only each process it started, not its process group: children survive."""

    def stop_all(self, grace_s):
        killed = []
        for name, proc in self._procs.items():
            proc.terminate()
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                killed.append(name)
        self._procs.clear()
        return killed


class leaky:
    """The local scheduler with a launcher that orphans children (and submits everything)."""

    @staticmethod
    @hookimpl
    def bench_register_schedulers():
        return [SchedulerInfo(name="leaky")]

    @staticmethod
    @hookimpl
    def bench_allocate(spec, dry_run):
        return None if spec.scheduler != "leaky" else Allocation(
            scheduler="leaky", nodes=[Node(name="here", address="127.0.0.1")])

    @staticmethod
    @hookimpl
    def bench_make_launcher(spec, allocation, run_dir):
        return None if spec.scheduler != "leaky" else LeaderOnlyLauncher(allocation, run_dir, "127.0.0.1", 23300)

    @staticmethod
    @hookimpl
    def bench_submit(spec, argv, detach):  # forgets to look at spec.scheduler
        return 0

    @staticmethod
    @hookimpl
    def bench_render_submission(spec, allocation):
        return None if spec.scheduler != "leaky" else {"job.sh": "#!/bin/sh\nexport HF_TOKEN\n"}


def test_leaky_scheduler_fails_other_and_live():
    with pytest.raises(ConformanceError) as exc:
        check_scheduler(leaky, "leaky")
    failed = exc.value.report.failed
    assert failed[0] == "other: bench_submit returned 0 instead of None"
    assert failed[1].startswith("live: stop_all left 1 process(es) running: pid ")
    assert "time.sleep(600) bench-conformance-" in failed[1]


class lazyload:
    @staticmethod
    @hookimpl
    def bench_register_loadgens():
        return [LoadgenInfo(name="lazy")]

    @staticmethod
    @hookimpl
    def bench_run_load(spec, endpoints, point, out_dir):
        if spec.load != "lazy":
            return None
        return make_load_result(make_point(index=5), tool="lazy", artifacts=["/etc/hostname"])


def test_lazy_loadgen_fails_live():
    with pytest.raises(ConformanceError) as exc:
        check_loadgen(lazyload, "lazy")
    (failure,) = exc.value.report.failed
    assert failure.startswith("live: LoadResult.point is LoadPoint(index=5")
    assert "artifact '/etc/hostname' is not a path relative to the run directory" in failure


def test_conformance_report_lists_every_failure_at_once():
    with pytest.raises(ConformanceError) as exc:
        check_backend(backend("fragile", launch=greedy_launch, bench_teardown=fragile_teardown), "fragile")
    text = str(exc.value)
    assert text.startswith("backend 'fragile' (plugin 'fragile') fails 3 conformance check(s):")
    assert "\n  - other: bench_launch_servers returned" in text
    assert "\n  - records: ServerSet.backend is 'greedy', not 'fragile'" in text
    assert "\n  - teardown: raised AttributeError" in text


# --------------------------------------------------------------------------- BENCHSTACK_EXTRA_PLUGINS


def test_extra_plugins_env_loads_modules(monkeypatch):
    monkeypatch.setenv(plugins_mod.EXTRA_ENV, " stubby = benchstack.testing.stubs ,")
    pm = plugins_mod.get_plugin_manager()
    rec = next(r for r in pm.records if r.name == "stubby")
    assert rec.module is stubs and rec.dist is None
    assert pm.owner("backend", "stub") == "stubby"
    assert "stubby" not in [r.name for r in plugins_mod.get_plugin_manager(load_entry_points=False).records]


def test_extra_plugins_env_replaces_an_installed_namesake(monkeypatch):
    monkeypatch.setenv(plugins_mod.EXTRA_ENV, "aiperf=benchstack.testing.stubs")
    pm = plugins_mod.get_plugin_manager()
    assert pm.pm.get_plugin("aiperf") is stubs and "aiperf" not in pm.infos()["load"]
    monkeypatch.setenv(plugins_mod.BLOCK_ENV, "aiperf")
    assert plugins_mod.get_plugin_manager().pm.get_plugin("aiperf") is None


def test_extra_plugins_env_errors(monkeypatch):
    monkeypatch.setenv(plugins_mod.EXTRA_ENV, "oops")
    with pytest.raises(PluginError, match=r"BENCHSTACK_EXTRA_PLUGINS: expected NAME=MODULE\[,NAME=MODULE...\], got 'oops'"):
        plugins_mod.get_plugin_manager()
    monkeypatch.setenv(plugins_mod.EXTRA_ENV, "ghost=bs_no_such_module")
    pm = plugins_mod.get_plugin_manager()
    assert [(f.name, f.dist) for f in pm.failures] == [("ghost", "BENCHSTACK_EXTRA_PLUGINS: bs_no_such_module")]
    with pytest.raises(PluginError, match="plugin 'ghost' .* failed to load: ModuleNotFoundError"):
        plugins_mod.get_plugin_manager(selected=["ghost"])


def test_extra_plugins_env_reaches_the_real_cli():
    r = bench(["plugins", "--json"], env={plugins_mod.EXTRA_ENV: "stubby=benchstack.testing.stubs"},
              timeout=120)
    assert r.returncode == 0, r.stderr
    stubby = next(p for p in json.loads(r.stdout)["plugins"] if p["name"] == "stubby")
    assert stubby["provides"] == {"backend": ["stub"], "load": ["stub"]}
    assert stubby["hooks"] == ["bench_discover_endpoints", "bench_launch_servers",
                               "bench_register_backends", "bench_register_loadgens", "bench_run_load"]
