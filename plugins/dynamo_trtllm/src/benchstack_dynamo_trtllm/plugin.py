"""Dynamo frontend + TensorRT-LLM workers (aggregated or prefill/decode), as in NVIDIA's recipes.

Layout (seeds 002 and 004): etcd, NATS and the OpenAI frontend on the first node; each worker
role placed on its own GPUs (a worker wider than a node spans whole nodes under MPI, one task
per GPU, through ``trtllm-llmapi-launch``). ``worker: mocker`` runs Dynamo's own mocker engine in
the same topology, which is how a recipe is rehearsed without GPUs.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import yaml

from benchstack import hookimpl
from benchstack.placement import GpuPlacer
from benchstack.probe import http_json, models_listed
from benchstack.recipe import deep_merge
from benchstack.records import BackendInfo, Collected, Endpoint, FileSpec, ProcessSpec, ServerSet

from .options import DynamoTrtllmOptions, RoleOptions

NAME = "dynamo_trtllm"
# Dynamo's component names: prefill workers register under "prefill", the rest under "backend"
# (dynamo.trtllm and dynamo.mocker defaults: dyn://NS.prefill.generate / dyn://NS.backend.generate)
PREFILL_COMPONENT = "prefill"


def options(spec) -> DynamoTrtllmOptions:
    return spec.options_for(NAME)


@hookimpl
def bench_register_backends():
    return [BackendInfo(name=NAME, options_type=DynamoTrtllmOptions,
                        description="Dynamo frontend + TensorRT-LLM workers (agg or prefill/decode); "
                                    "worker: mocker rehearses without GPUs")]


@hookimpl
def bench_validate(spec):
    if spec.backend != NAME:
        return None
    o = options(spec)
    problems = []
    for role, r in o.roles():
        if r.max_num_tokens and r.max_batch_size and r.max_num_tokens < r.max_batch_size:
            problems.append(f"'max_num_tokens' ({r.max_num_tokens}) must be >= 'max_batch_size' "
                            f"({r.max_batch_size}) @ recipe.{NAME}.{role}")
    return problems


# --------------------------------------------------------------------------- rendering


def engine_config(role: str, r: RoleOptions, disaggregated: bool) -> dict[str, Any]:
    """The TensorRT-LLM LLM-API options (``--extra-engine-args`` YAML) of one role."""
    cfg: dict[str, Any] = {
        "tensor_parallel_size": r.tp,
        "pipeline_parallel_size": r.pp,
        "moe_expert_parallel_size": r.ep,
        "enable_attention_dp": r.attention_dp,
    }
    if r.max_batch_size is not None:
        cfg["max_batch_size"] = r.max_batch_size
    if r.max_num_tokens is not None:
        cfg["max_num_tokens"] = r.max_num_tokens
    if r.max_seq_len is not None:
        cfg["max_seq_len"] = r.max_seq_len
    if r.kv_cache_free_gpu_memory_fraction is not None:
        cfg["kv_cache_config"] = {"free_gpu_memory_fraction": r.kv_cache_free_gpu_memory_fraction}
    if disaggregated:
        cfg["cache_transceiver_config"] = {"backend": r.cache_transceiver_backend or "DEFAULT"}
        if role == "prefill":
            # Dynamo's disaggregated TRT-LLM configs turn the overlap scheduler off for prefill
            cfg["disable_overlap_scheduler"] = True
    return deep_merge(cfg, r.engine_args)


def namespace(spec, o: DynamoTrtllmOptions) -> str:
    if o.namespace:
        return o.namespace
    return "bench_" + re.sub(r"[^a-z0-9_]", "_", f"{spec.name}_{spec.deployment}".lower())


def discovery_env(o: DynamoTrtllmOptions, spec, address: str, etcd_url: str | None,
                  nats_url: str | None, kv_dir: str) -> dict[str, str]:
    if o.discovery == "etcd":
        return {"DYN_DISCOVERY_BACKEND": "etcd", "ETCD_ENDPOINTS": etcd_url,
                "NATS_SERVER": nats_url, "DYN_REQUEST_PLANE": "nats", "DYN_EVENT_PLANE": "nats"}
    return {
        "DYN_DISCOVERY_BACKEND": "file", "DYN_FILE_KV": kv_dir, "DYN_REQUEST_PLANE": "tcp",
        "DYN_EVENT_PLANE": "zmq", "DYN_TCP_RPC_HOST": address, "DYN_TCP_RESPONSE_STREAM_HOST": address,
        "DYN_EVENT_PLANE_HOST": address, "DYN_SYSTEM_HOST": address,
    }


def worker_argv(spec, o: DynamoTrtllmOptions, role: str, r: RoleOptions, config_path: str,
                python: str, multi_task: bool) -> list[str]:
    model = spec.model
    mode = {"aggregated": "agg", "prefill": "prefill", "decode": "decode"}[role]
    if o.worker == "mocker":
        m = o.mocker
        argv = [python, "-m", "dynamo.mocker", "--model-path", model.path, "--model-name", model.name,
                "--engine-type", m.engine_type, "--speedup-ratio", f"{m.speedup_ratio:g}",
                "--num-gpu-blocks-override", str(m.num_gpu_blocks), "--block-size", str(m.block_size)]
        if r.max_batch_size:
            argv += ["--max-num-seqs", str(r.max_batch_size)]
        if r.max_num_tokens:
            argv += ["--max-num-batched-tokens", str(r.max_num_tokens)]
        if role != "aggregated":
            argv += ["--disaggregation-mode", mode]
        return argv + list(m.extra_args) + list(r.extra_args)
    prefix = list(o.launch_prefix) if multi_task else []
    argv = prefix + [python, "-m", "dynamo.trtllm", "--model-path", model.path,
                     "--served-model-name", model.name, "--extra-engine-args", config_path,
                     "--disaggregation-mode", mode]
    return argv + list(r.extra_args)


# --------------------------------------------------------------------------- launch


@hookimpl
def bench_launch_servers(spec, allocation, launcher):
    if spec.backend != NAME:
        return None
    o = options(spec)
    python = o.python or (sys.executable if o.container_image is None else "python3")
    ns = namespace(spec, o)
    head = allocation.nodes[0]
    container = {"container_image": o.container_image, "container_mounts": tuple(o.container_mounts)}
    base_env = {"DYN_NAMESPACE": ns, **o.env}
    servers, files = [], []
    etcd_url = nats_url = None
    kv_dir = str(launcher.path("dynamo-discovery"))
    if o.frontend.port:
        launcher.ports.reserve(0, o.frontend.port)  # before etcd/NATS take theirs

    # control plane on the head node (seed 002: start_frontend_services.sh)
    if o.discovery == "etcd":
        client, peer = launcher.ports.take(0, 2)
        nats_port, nats_mon = launcher.ports.take(0, 2)
        etcd_url = f"http://{head.address}:{client}"
        nats_url = f"nats://{head.address}:{nats_port}"
        etcd = launcher.start(ProcessSpec(
            name="etcd", role="etcd", nodes=(0,), ports=(client, peer),
            argv=(o.etcd, "--name", "bench", "--data-dir", str(launcher.path("etcd-data")),
                  "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
                  "--listen-peer-urls", f"http://{head.address}:{peer}",
                  "--initial-advertise-peer-urls", f"http://{head.address}:{peer}",
                  "--initial-cluster", f"bench=http://{head.address}:{peer}"),
            **container))
        nats = launcher.start(ProcessSpec(
            name="nats", role="nats", nodes=(0,), ports=(nats_port, nats_mon),
            argv=(o.nats, "-js", "-a", head.address, "-p", str(nats_port), "-m", str(nats_mon),
                  "-sd", str(launcher.path("nats-store"))),
            **container))
        servers += [etcd, nats]
        launcher.wait_ready(
            [etcd, nats],
            lambda: _etcd_ok(etcd_url) and _nats_ok(f"http://{head.address}:{nats_mon}"),
            what="etcd and NATS", timeout_s=min(60.0, spec.ready_timeout_s))

    port = o.frontend.port or launcher.ports.one(0)
    frontend = launcher.start(ProcessSpec(
        name="frontend", role="frontend", nodes=(0,), ports=(port,),
        argv=(python, "-m", "dynamo.frontend", "--http-host", head.address, "--http-port", str(port),
              "--namespace", ns, "--router-mode", o.frontend.router_mode, *o.frontend.extra_args),
        env={**base_env, **discovery_env(o, spec, head.address, etcd_url, nats_url, kv_dir)},
        secret_env=tuple(o.secret_env), **container))
    servers.append(frontend)

    placer = GpuPlacer(allocation)
    total_gpus = 0
    deployment = {"namespace": ns, "worker": o.worker, "discovery": o.discovery, "roles": {}}
    for role, r in o.roles():
        cfg = engine_config(role, r, o.disaggregated)
        cfg_file = FileSpec(path=f"configs/{role}.yaml", content=yaml.safe_dump(cfg, sort_keys=False))
        cfg_path = str(launcher.write_file(cfg_file))
        files.append(cfg_file)
        deployment["roles"][role] = {"workers": r.workers, "gpus_per_worker": r.gpus, "tp": r.tp,
                                     "pp": r.pp, "ep": r.ep, "attention_dp": r.attention_dp}
        for i in range(r.workers):
            name = f"{role}-{i}"
            where = placer.place(f"{NAME}.{role} worker {i}", r.gpus, r.nodes,
                                 virtual=o.worker == "mocker")
            node = allocation.nodes[where.nodes[0]]
            multi = where.ntasks_per_node > 1 or len(where.nodes) > 1
            if multi and o.worker == "mocker":
                # the mocker is one process: it stands in for the whole MPI world on its first node
                where = type(where)(nodes=where.nodes[:1], gpus=where.gpus, ntasks_per_node=1)
                multi = False
            sys_port = launcher.ports.one(where.nodes[0])
            env = {**base_env, **discovery_env(o, spec, node.address, etcd_url, nats_url, kv_dir),
                   "DYN_SYSTEM_ENABLED": "true", "DYN_SYSTEM_PORT": str(sys_port), **r.env}
            servers.append(launcher.start(ProcessSpec(
                name=name, role=role, nodes=where.nodes, ntasks_per_node=where.ntasks_per_node,
                gpus=where.gpus, ports=(sys_port,), mpi=o.mpi if multi else None,
                argv=worker_argv(spec, o, role, r, cfg_path, python, multi),
                env=env, secret_env=tuple(o.secret_env), **container)))
        total_gpus += r.workers * r.gpus
    deployment["total_gpus"] = total_gpus
    dep_file = FileSpec(path="configs/deployment.yaml", content=yaml.safe_dump(deployment, sort_keys=False))
    launcher.write_file(dep_file)
    files.append(dep_file)
    url = f"http://{head.address}:{port}"
    return ServerSet(
        backend=NAME, servers=servers, files=files, total_gpus=total_gpus,
        endpoints=[Endpoint(url=url, model=spec.model.name, role="frontend", gpus=total_gpus,
                            server="frontend")],
        info={"namespace": ns, "expected": {role: r.workers for role, r in o.roles()}},
    )


def _etcd_ok(url: str) -> bool:
    status, data = http_json(f"{url}/health", timeout=1.0)
    return status == 200 and isinstance(data, dict) and str(data.get("health")) == "true"


def _nats_ok(monitor_url: str) -> bool:
    status, _ = http_json(f"{monitor_url}/healthz", timeout=1.0)
    return status == 200


# --------------------------------------------------------------------------- readiness


def count_instances(health: Any, ns: str) -> dict[str, int]:
    """Registered ``generate`` instances in the frontend's ``/health``, by component.

    Dynamo 1.6's frontend answers ``{"status": ..., "endpoints": [...], "instances": [{"component":
    "backend"|"prefill", "endpoint": "generate", "namespace": NS, "instance_id": ...}, ...]}``.
    """
    seen: set[tuple[str, Any]] = set()
    if not isinstance(health, dict):
        return {}
    for inst in health.get("instances") or []:
        if not isinstance(inst, dict) or inst.get("namespace", ns) != ns:
            continue
        # prefill/aggregated workers also register other endpoints under the same instance id
        if inst.get("endpoint", "generate") != "generate":
            continue
        seen.add((str(inst.get("component", "")), inst.get("instance_id", id(inst))))
    counts: dict[str, int] = {}
    for comp, _ in seen:
        counts[comp] = counts.get(comp, 0) + 1
    return counts


def expected_counts(expected: dict[str, int]) -> dict[str, int]:
    if "prefill" in expected:
        return {PREFILL_COMPONENT: expected["prefill"], "backend": expected["decode"]}
    return {"backend": expected["aggregated"]}


@hookimpl
def bench_discover_endpoints(spec, servers, launcher):
    if spec.backend != NAME:
        return None
    endpoint = servers.endpoints[0]
    ns = servers.info["namespace"]
    want = expected_counts(dict(servers.info["expected"]))

    def ready() -> bool | str:
        listed = models_listed(endpoint.url, spec.model.name)
        if listed is not True:
            return listed
        status, health = http_json(f"{endpoint.url}/health")
        have = count_instances(health, ns)
        missing = {c: n for c, n in want.items() if have.get(c, 0) < n}
        if missing:
            return "frontend sees " + ", ".join(f"{have.get(c, 0)}/{n} {c}" for c, n in want.items())
        return True

    launcher.wait_ready(servers.servers, ready, what=f"{NAME} deployment (frontend {endpoint.url})",
                        timeout_s=spec.ready_timeout_s)
    return list(servers.endpoints)


@hookimpl
def bench_collect(spec, servers, point):
    if spec.backend != NAME or point is not None or servers is None:
        return None
    return Collected(plugin=NAME, metadata={"namespace": servers.info.get("namespace"),
                                            "expected_workers": dict(servers.info.get("expected", {}))})
