"""trtllm-serve: local-node instances, cross-node (MPI) instances, and disaggregated serving.

Shapes (seeds 000 and 001): N instances per node on disjoint GPUs, each its own endpoint; an
instance wider than a node as one MPI job (``srun --mpi=pmix --ntasks-per-node=<GPUs per node>
trtllm-llmapi-launch trtllm-serve ...``), several of them as data-parallel replicas; context and
generation servers behind ``trtllm-serve disaggregated -c`` on the first node, its config
generated from the hosts and ports actually allocated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from benchstack import hookimpl
from benchstack.placement import GpuPlacer, Placement, PlacementError
from benchstack.probe import http_get, models_listed
from benchstack.recipe import deep_merge
from benchstack.records import BackendInfo, Collected, Endpoint, FileSpec, ProcessSpec, ServerSet

from .options import EngineOptions, TrtllmServeOptions

NAME = "trtllm_serve"


def served_model_id(model_path: str) -> str:
    """The id trtllm-serve lists in /v1/models: a local directory's base name, else the hub id."""
    return Path(model_path).name if model_path.startswith(("/", ".", "~")) else model_path


@hookimpl
def bench_register_backends():
    return [BackendInfo(name=NAME, options_type=TrtllmServeOptions,
                        description="trtllm-serve: local-node and cross-node (MPI) instances, "
                                    "disaggregated context/generation servers")]


@hookimpl
def bench_validate(spec):
    if spec.backend != NAME:
        return None
    o: TrtllmServeOptions = spec.options_for(NAME)
    problems = []
    for role, e in _roles(o):
        if e.max_num_tokens and e.max_batch_size and e.max_num_tokens < e.max_batch_size:
            problems.append(f"'max_num_tokens' ({e.max_num_tokens}) must be >= 'max_batch_size' "
                            f"({e.max_batch_size}) @ recipe.{NAME}.{role}")
        if e.gpus and e.gpus < e.world_size:
            problems.append(f"'gpus' ({e.gpus}) must be >= tp*pp ({e.world_size}) @ recipe.{NAME}.{role}")
    return problems


def _roles(o: TrtllmServeOptions) -> list[tuple[str, EngineOptions]]:
    if o.disaggregated:
        return [("context", o.context), ("generation", o.generation)]
    return [("instances", o.instances)]


def llm_api_options(e: EngineOptions, role: str, disaggregated: bool,
                    server_metrics: bool = True) -> dict[str, Any]:
    """The ``--extra_llm_api_options`` YAML of one server kind (TensorRT-LLM LLM-API keys)."""
    cfg: dict[str, Any] = {"enable_iter_perf_stats": True} if server_metrics else {}
    if e.attention_dp:
        cfg["enable_attention_dp"] = True
    if disaggregated:
        cfg["cache_transceiver_config"] = {"backend": e.cache_transceiver_backend}
        if role == "context":
            cfg["disable_overlap_scheduler"] = True
    return deep_merge(cfg, e.llm_api_options)


def serve_argv(o: TrtllmServeOptions, model: str, e: EngineOptions, host: str, port: int,
               config_path: str, mpi: bool) -> list[str]:
    argv = (list(o.launch_prefix) if mpi else []) + [
        o.executable, o.engine_dir if o.backend == "trt" else model,
        "--host", host, "--port", str(port), "--backend", o.backend,
        "--tp_size", str(e.tp), "--pp_size", str(e.pp)]
    if e.ep is not None:
        argv += ["--ep_size", str(e.ep)]
    for flag, value in (("--max_batch_size", e.max_batch_size), ("--max_num_tokens", e.max_num_tokens),
                        ("--max_seq_len", e.max_seq_len),
                        ("--kv_cache_free_gpu_memory_fraction", e.kv_cache_free_gpu_memory_fraction)):
        if value is not None:
            argv += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if o.backend == "trt":
        argv += ["--tokenizer", model]
    return argv + ["--extra_llm_api_options", config_path] + list(e.extra_args)


def _use_mpi(o: TrtllmServeOptions, where: Placement) -> bool:
    if o.launch == "mpi":
        return True
    if o.launch == "single":
        return False
    return len(where.nodes) > 1


def _task_layout(o: TrtllmServeOptions, where: Placement, mpi: bool) -> Placement:
    """MPI servers run one task per GPU; single-process servers one task with all their GPUs."""
    if mpi:
        per_node = len(where.gpus)
        return Placement(nodes=where.nodes, gpus=where.gpus, ntasks_per_node=per_node)
    return Placement(nodes=where.nodes[:1], gpus=where.gpus, ntasks_per_node=1)


@hookimpl
def bench_launch_servers(spec, allocation, launcher):
    if spec.backend != NAME:
        return None
    o: TrtllmServeOptions = spec.options_for(NAME)
    placer = GpuPlacer(allocation)
    container = {"container_image": o.container_image, "container_mounts": tuple(o.container_mounts)}
    model_id = served_model_id(spec.model.path if o.backend != "trt" else o.engine_dir)
    servers, files, endpoints, urls = [], [], [], {}
    total_gpus = 0

    if o.disaggregated and o.disagg_server.port:
        launcher.ports.reserve(0, o.disagg_server.port)  # before the workers take theirs
    roles = _roles(o)
    counts = {role: _server_count(o, role, e, allocation) for role, e in roles}
    context_places: list[Placement] = []
    for role, e in roles:
        cfg = FileSpec(path=f"configs/{role}.yaml",
                       content=yaml.safe_dump(llm_api_options(e, role, o.disaggregated, o.server_metrics),
                                               sort_keys=False))
        cfg_path = str(launcher.write_file(cfg))
        files.append(cfg)
        urls[role] = []
        prefix = {"instances": "instance", "context": "ctx", "generation": "gen"}[role]
        for i in range(counts[role]):
            name = f"{prefix}-{i}"
            shared = role == "generation" and o.generation.share_gpus_with_context
            if shared:
                where = context_places[i % len(context_places)]
            else:
                where = placer.place(f"{NAME}.{role} server {i}", e.gpus_per_server, e.nodes)
                total_gpus += e.gpus_per_server
            if role == "context":
                context_places.append(where)
            mpi = _use_mpi(o, where)
            layout = _task_layout(o, where, mpi)
            node = allocation.nodes[layout.nodes[0]]
            port = launcher.ports.one(layout.nodes[0])
            servers.append(launcher.start(ProcessSpec(
                name=name, role=role, nodes=layout.nodes, ntasks_per_node=layout.ntasks_per_node,
                gpus=layout.gpus, ports=(port,), mpi=o.mpi if mpi else None,
                argv=serve_argv(o, spec.model.path, e, node.address, port, cfg_path, mpi),
                env={**o.env, **e.env}, secret_env=tuple(o.secret_env), **container)))
            urls[role].append(f"{node.address}:{port}")
            if role == "instances":
                endpoints.append(Endpoint(url=f"http://{node.address}:{port}", model=model_id,
                                          role="instance", gpus=e.gpus_per_server, server=name))

    info: dict[str, Any] = {"workers": [s.spec.name for s in servers],
                            "addresses": {s.spec.name: allocation.nodes[s.spec.nodes[0]].address
                                          for s in servers}}
    if o.disaggregated:
        head = allocation.nodes[0]
        port = o.disagg_server.port or launcher.ports.one(0)
        cfg = disagg_config(o, head.address, port, urls)
        cfg_file = FileSpec(path="configs/disagg.yaml", content=yaml.safe_dump(cfg, sort_keys=False))
        cfg_path = str(launcher.write_file(cfg_file))
        files.append(cfg_file)
        info["disagg_server"] = "disagg-server"
        servers.append(launcher.start(ProcessSpec(
            name="disagg-server", role="disagg_server", nodes=(0,), ports=(port,),
            argv=(o.executable, "disaggregated", "-c", cfg_path,
                  "-t", str(o.disagg_server.server_start_timeout),
                  "-r", str(o.disagg_server.request_timeout)),
            env=dict(o.env), secret_env=tuple(o.secret_env), **container)))
        endpoints.append(Endpoint(url=f"http://{head.address}:{port}", model=model_id,
                                  role="disagg_server", gpus=total_gpus, server="disagg-server"))
    return ServerSet(backend=NAME, servers=servers, endpoints=endpoints, files=files,
                     total_gpus=total_gpus, info=info)


def _server_count(o: TrtllmServeOptions, role: str, e: EngineOptions, allocation) -> int:
    if role == "instances":
        if o.instances.count:
            return o.instances.count
        total = sum(allocation.nodes[i].gpus for i in (e.nodes or range(len(allocation.nodes))))
        count = total // e.gpus_per_server
        if count < 1:
            raise PlacementError(f"{NAME}.instances need {e.gpus_per_server} GPU(s) each; the allocation "
                                 f"has {total} (set instances.count, or allocate more)")
        return count
    return e.servers


def disagg_config(o: TrtllmServeOptions, host: str, port: int, urls: dict[str, list[str]]) -> dict:
    """``trtllm-serve disaggregated -c`` config from the hosts and ports actually allocated."""

    def section(e, role: str, router: str) -> dict:
        sec: dict[str, Any] = {
            "num_instances": len(urls[role]),
            "urls": list(urls[role]),
            "router": {"type": router},
            "tensor_parallel_size": e.tp,
            "pipeline_parallel_size": e.pp,
        }
        if e.ep is not None:
            sec["moe_expert_parallel_size"] = e.ep
        if e.attention_dp:
            sec["enable_attention_dp"] = True
        for key in ("max_batch_size", "max_num_tokens", "max_seq_len"):
            if getattr(e, key) is not None:
                sec[key] = getattr(e, key)
        if e.kv_cache_free_gpu_memory_fraction is not None:
            sec["kv_cache_config"] = {"free_gpu_memory_fraction": e.kv_cache_free_gpu_memory_fraction}
        sec["cache_transceiver_config"] = {"backend": e.cache_transceiver_backend}
        return sec

    return {
        "hostname": host,
        "port": port,
        "backend": o.backend if o.backend == "pytorch" else "tensorrt",
        "context_servers": section(o.context, "context", o.disagg_server.context_router),
        "generation_servers": section(o.generation, "generation", o.disagg_server.generation_router),
    }


@hookimpl
def bench_discover_endpoints(spec, servers, launcher):
    if spec.backend != NAME:
        return None
    workers = [s for s in servers.servers if s.spec.role != "disagg_server"]
    urls = {s.spec.name: f"http://{launcher.allocation.nodes[s.spec.nodes[0]].address}:{s.spec.ports[0]}"
            for s in servers.servers}

    def healthy(names) -> bool | str:
        down = [n for n in names if _health(urls[n]) != 200]
        return True if not down else f"waiting for /health of {', '.join(down)}"

    launcher.wait_ready(servers.servers, lambda: healthy([w.spec.name for w in workers]),
                        what=f"{NAME} servers", timeout_s=spec.ready_timeout_s)
    endpoints = list(servers.endpoints)

    model = endpoints[0].model

    def serving() -> bool | str:
        # every worker lists the model; the disaggregated server has no /v1/models (it 404s in
        # TensorRT-LLM), so for it /health is the signal
        for w in workers:
            listed = models_listed(urls[w.spec.name], model)
            if listed is not True:
                return f"{w.spec.name}: {listed}"
        if "disagg_server" in servers.info:
            return healthy(["disagg-server"])
        return True

    launcher.wait_ready(servers.servers, serving, what=f"{NAME} endpoints", timeout_s=spec.ready_timeout_s)
    return endpoints


def _health(url: str) -> int:
    try:
        return http_get(f"{url}/health", timeout=2.0)[0]
    except OSError:
        return 0


@hookimpl
def bench_collect(spec, servers, point, out_dir):
    """After each point: every worker's ``/metrics`` (iteration stats) and ``/perf_metrics``,
    raw under ``server-metrics/``, with the number of iterations and requests seen per server."""
    if spec.backend != NAME or servers is None:
        return None
    if point is None:
        return Collected(plugin=NAME, metadata={"servers": [s.spec.name for s in servers.servers],
                                                "total_gpus": servers.total_gpus})
    import json

    summary = {}
    target = Path(out_dir) / "server-metrics"
    target.mkdir(parents=True, exist_ok=True)
    for s in servers.servers:
        if s.spec.role == "disagg_server" or not s.spec.ports:
            continue
        url = f"http://{_address(servers, s)}:{s.spec.ports[0]}"
        entry = {}
        for path in ("metrics", "perf_metrics"):
            try:
                status, body = http_get(f"{url}/{path}", timeout=5.0)
                data = json.loads(body) if status == 200 else None
            except (OSError, ValueError):
                data = None
            (target / f"{s.spec.name}.{path}.json").write_text(json.dumps(data, indent=1))
            entry[path] = len(data) if isinstance(data, list) else None
        summary[s.spec.name] = {"iterations": entry["metrics"], "requests": entry["perf_metrics"]}
    return Collected(plugin=NAME, metadata=summary)


def _address(servers: ServerSet, handle) -> str:
    return dict(servers.info.get("addresses", {})).get(handle.spec.name, "127.0.0.1")
