"""The ProcessSpecs of a deployment: vLLM API servers (NIXL roles, GPU map, side channels) and the router."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from benchstack.errors import RecipeError
from benchstack.launcher import PortAllocator
from benchstack.records import Allocation, ProcessSpec, RunSpec

from .layout import Slot
from .options import VllmNixlOptions

DEFAULT_KV_ROLE = {"prefill": "kv_producer", "decode": "kv_consumer"}


def kv_transfer_config(opts: VllmNixlOptions, role: str) -> str:
    """``--kv-transfer-config`` of one role: NixlConnector, its KV role and buffer device."""
    cfg: dict[str, object] = {
        "kv_connector": "NixlConnector",
        "kv_role": opts.role(role).kv_role or DEFAULT_KV_ROLE[role],
        "kv_buffer_device": opts.buffer_device,
    }
    if opts.kv_connector_extra_config:
        cfg["kv_connector_extra_config"] = dict(opts.kv_connector_extra_config)
    return json.dumps(cfg, separators=(",", ":"), sort_keys=True)


def vllm_process(spec: RunSpec, opts: VllmNixlOptions, allocation: Allocation, slot: Slot,
                 ports: PortAllocator) -> ProcessSpec:
    """One ``vllm serve`` instance: HTTP port first, NIXL side-channel port second."""
    r = opts.role(slot.role)
    node = allocation.nodes[slot.node]
    disagg = opts.mode == "disaggregated"
    taken = ports.take(slot.node, 2 if disagg else 1)
    http = taken[0]
    argv = opts.vllm_prefix() + [
        "--model", spec.model.path,
        "--served-model-name", spec.model.name,
        "--host", node.address,
        "--port", str(http),
        "--tensor-parallel-size", str(r.tp),
    ]
    if spec.model.tokenizer:
        argv += ["--tokenizer", spec.model.tokenizer]
    for flag, value in (("--max-num-seqs", r.max_num_seqs), ("--max-model-len", r.max_model_len),
                        ("--max-num-batched-tokens", r.max_num_batched_tokens),
                        ("--gpu-memory-utilization", r.gpu_memory_utilization), ("--dtype", r.dtype)):
        if value is not None:
            argv += [flag, str(value)]
    if r.enforce_eager:
        argv.append("--enforce-eager")
    if disagg:
        argv += ["--kv-transfer-config", kv_transfer_config(opts, slot.role)]
    argv += list(r.extra_args)

    env: dict[str, str] = {}
    if disagg:
        # where this instance's NIXL handshake listener is reached; vLLM adds its DP rank
        # to the port, and every instance here is its own DP-1 server, so ports never overlap
        env["VLLM_NIXL_SIDE_CHANNEL_HOST"] = node.address
        env["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(taken[1])
    env.update(opts.ucx)
    if opts.device == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(opts.cpu_kvcache_space_gib)
        env["VLLM_CPU_OMP_THREADS_BIND"] = slot.cpu_bind or "auto"
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    env.update(opts.env)
    env.update(r.env)
    return ProcessSpec(name=slot.name, role=slot.role, argv=argv, env=env, nodes=(slot.node,),
                       gpus=slot.gpus, ports=tuple(taken))


def router_process(spec: RunSpec, opts: VllmNixlOptions, allocation: Allocation, slots: list[Slot],
                   urls: dict[str, str], ports: PortAllocator) -> tuple[ProcessSpec, str, str]:
    """The router's ProcessSpec, its base URL and its metrics URL."""
    ro = opts.router
    if ro.node >= len(allocation.nodes):
        raise RecipeError(f"router node {ro.node} is not in the allocation "
                          f"({len(allocation.nodes)} node(s)) @ recipe.vllm_nixl.router.node")
    address = allocation.nodes[ro.node].address
    port = ro.port or ports.one(ro.node)
    by_role = {role: [urls[s.name] for s in slots if s.role == role] for role in opts.roles}
    used = [port]
    if ro.kind == "benchstack":
        argv = [ro.python or sys.executable, "-m", "benchstack_vllm_nixl.router",
                "--host", address, "--port", str(port), "--model", spec.model.name, "--policy", ro.policy]
        if opts.mode == "disaggregated":
            argv += [w for u in by_role["prefill"] for w in ("--prefill", u)]
            argv += [w for u in by_role["decode"] for w in ("--decode", u)]
        else:
            argv += [w for u in by_role["aggregated"] for w in ("--worker", u)]
        metrics_url = f"http://{address}:{port}/metrics"
    else:
        prom = ports.one(ro.node)  # its Prometheus listener; the default (29000) would collide
        used.append(prom)
        argv = list(ro.command or [vllm_router_executable(opts)]) + [
            "--host", address, "--port", str(port), "--policy", ro.policy,
            "--prometheus-host", address, "--prometheus-port", str(prom),
            "--log-level", "info",
        ]
        if opts.mode == "disaggregated":
            argv += ["--vllm-pd-disaggregation", "--kv-connector", "nixl"]
            argv += [w for u in by_role["prefill"] for w in ("--prefill", u)]
            argv += [w for u in by_role["decode"] for w in ("--decode", u)]
        else:
            argv += ["--worker-urls"] + by_role["aggregated"]
        metrics_url = f"http://{address}:{prom}/metrics"
    argv += list(ro.extra_args)
    proc = ProcessSpec(name="router", role="frontend", argv=argv, env=dict(ro.env), nodes=(ro.node,),
                       ports=tuple(used))
    return proc, f"http://{address}:{port}", metrics_url


def vllm_router_executable(opts: VllmNixlOptions) -> str:
    """``vllm-router`` next to vLLM's interpreter if it is installed there, else from PATH."""
    if opts.python or not opts.command:
        py = Path(opts.vllm_prefix()[0])
        candidate = py.parent / "vllm-router"
        if py.is_absolute() and os.access(candidate, os.X_OK):
            return str(candidate)
    return "vllm-router"
