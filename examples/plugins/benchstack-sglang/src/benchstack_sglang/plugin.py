"""SGLang servers behind the SGLang router: aggregated, or prefill/decode (PD) disaggregated.

Layout: every worker is ``python -m sglang.launch_server`` on its own GPUs (a worker wider
than a node runs one server process per node, joined by ``--dist-init-addr``/``--nnodes``/
``--node-rank``); the router runs on the first node, started once every worker answers
``/health``:

- aggregated: ``python -m sglang_router.launch_router --worker-urls URL... --policy P``;
- PD: workers add ``--disaggregation-mode prefill|decode`` and the KV transfer backend, each
  prefill server its own ``--disaggregation-bootstrap-port``; the router runs with
  ``--pd-disaggregation --prefill URL BOOTSTRAP_PORT ... --decode URL ...``, or SGLang's mini
  load balancer ``python -m sglang.srt.disaggregation.mini_lb --prefill URL... --decode URL...
  --prefill-bootstrap-ports PORT...`` (``router.kind: mini_lb``).

Ready means: every server's ``/health`` answers 200, the router's ``/workers`` lists the
expected number of healthy workers of each type (the router registers workers in the
background, so it serves before it has any), and the router's ``/v1/models`` lists the model.
"""

from __future__ import annotations

from typing import Any

from benchstack import hookimpl
from benchstack.placement import GpuPlacer
from benchstack.probe import http_get, http_json, models_listed
from benchstack.records import BackendInfo, Collected, Endpoint, ProcessSpec, ServerSet

from .options import SglangOptions, WorkerOptions

NAME = "sglang"
#: SGLang's worker type names in the router's ``/workers`` answer, by role
WORKER_TYPE = {"aggregated": "regular", "prefill": "prefill", "decode": "decode"}


@hookimpl
def bench_register_backends():
    return [BackendInfo(name=NAME, options_type=SglangOptions,
                        description="SGLang servers behind the SGLang router (aggregated or "
                                    "prefill/decode)")]


@hookimpl
def bench_validate(spec):
    """Cross-field checks the section's own validators cannot see."""
    if spec.backend != NAME:
        return None
    o: SglangOptions = spec.options_for(NAME)
    problems = []
    if o.router.kind == "mini_lb" and not o.disaggregated:
        problems.append(f"'mini_lb' balances prefill/decode deployments only; use kind: "
                        f"sglang_router for 'aggregated' @ recipe.{NAME}.router")
    if not o.disaggregated and (o.router.prefill_policy or o.router.decode_policy):
        problems.append(f"'prefill_policy'/'decode_policy' need prefill and decode workers "
                        f"@ recipe.{NAME}.router")
    if not o.disaggregated and o.ib_device:
        problems.append(f"'ib_device' is for the KV transfer of prefill/decode deployments @ recipe.{NAME}")
    return problems


# --------------------------------------------------------------------------- commands


def server_argv(spec, o: SglangOptions, role: str, w: WorkerOptions, address: str, port: int) -> list[str]:
    """``python -m sglang.launch_server`` for one worker (without multi-node or PD flags)."""
    model = spec.model
    argv = [o.python, "-m", "sglang.launch_server", "--model-path", model.path,
            "--served-model-name", model.name, "--host", address, "--port", str(port),
            "--tp-size", str(w.tp)]
    if model.tokenizer:
        argv += ["--tokenizer-path", model.tokenizer]
    if w.dp > 1:
        argv += ["--dp-size", str(w.dp)]
    if w.enable_dp_attention:
        argv.append("--enable-dp-attention")
    if w.ep > 1:
        argv += ["--ep-size", str(w.ep)]
    for flag, value in (("--mem-fraction-static", w.mem_fraction_static),
                        ("--max-running-requests", w.max_running_requests),
                        ("--chunked-prefill-size", w.chunked_prefill_size),
                        ("--context-length", w.context_length)):
        if value is not None:
            argv += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if o.trust_remote_code:
        argv.append("--trust-remote-code")
    return argv


def pd_args(o: SglangOptions, role: str, bootstrap_port: int | None) -> list[str]:
    if role == "aggregated":
        return []
    argv = ["--disaggregation-mode", role, "--disaggregation-transfer-backend", o.transfer_backend]
    if o.ib_device:
        argv += ["--disaggregation-ib-device", o.ib_device]
    if bootstrap_port is not None:  # prefill servers only; one port each (default 8998 collides)
        argv += ["--disaggregation-bootstrap-port", str(bootstrap_port)]
    return argv


def router_argv(o: SglangOptions, workers: dict[str, list[tuple[str, int | None]]],
                address: str, port: int) -> list[str]:
    r = o.router
    if r.kind == "mini_lb":
        return [o.python, "-m", "sglang.srt.disaggregation.mini_lb",
                "--prefill", *[u for u, _ in workers["prefill"]],
                "--decode", *[u for u, _ in workers["decode"]],
                "--prefill-bootstrap-ports", *[str(b) for _, b in workers["prefill"]],
                "--host", address, "--port", str(port), *r.extra_args]
    argv = [o.python, "-m", "sglang_router.launch_router"]
    if o.disaggregated:
        argv.append("--pd-disaggregation")
        for url, boot in workers["prefill"]:
            argv += ["--prefill", url, str(boot)]
        for url, _ in workers["decode"]:
            argv += ["--decode", url]
    else:
        argv += ["--worker-urls", *[u for u, _ in workers["aggregated"]]]
    argv += ["--policy", r.policy]
    if r.prefill_policy:
        argv += ["--prefill-policy", r.prefill_policy]
    if r.decode_policy:
        argv += ["--decode-policy", r.decode_policy]
    return argv + ["--host", address, "--port", str(port), *r.extra_args]


# --------------------------------------------------------------------------- launch


def free_port(launcher, node: int, o: SglangOptions) -> int:
    """A port from the launcher, never the router's fixed ``router.port`` on the first node."""
    port = launcher.ports.one(node)
    while node == 0 and port == o.router.port:
        port = launcher.ports.one(node)
    return port


def start_worker(spec, o: SglangOptions, allocation, launcher, where, role: str, index: int,
                 w: WorkerOptions) -> tuple[list, str, int | None]:
    """Start one worker (one process per node it spans); return its handles, URL, bootstrap port."""
    first, node0 = allocation.nodes[where.nodes[0]], where.nodes[0]
    port = free_port(launcher, node0, o)
    boot = free_port(launcher, node0, o) if role == "prefill" else None
    dist = free_port(launcher, node0, o) if len(where.nodes) > 1 else None
    handles = []
    for rank, node in enumerate(where.nodes):
        address = allocation.nodes[node].address  # each rank binds its own node (SGLang docs)
        argv = server_argv(spec, o, role, w, address, port) + pd_args(o, role, boot)
        # wider than a node: one server process per node joined by --dist-init-addr (SGLang
        # spawns its own per-GPU processes), not one MPI task per GPU
        multi = ["--dist-init-addr", f"{first.address}:{dist}", "--nnodes", str(len(where.nodes)),
                 "--node-rank", str(rank)] if dist else []
        handles.append(launcher.start(ProcessSpec(
            name=f"{role}-{index}" + (f"-node{rank}" if rank else ""), role=role, nodes=(node,),
            gpus=where.gpus, ports=(port, *(p for p in (boot, dist) if p)) if rank == 0 else (),
            argv=(*argv, *multi, *w.extra_args), env={**o.env, **w.env},
            container_image=o.container_image, container_mounts=tuple(o.container_mounts),
            secret_env=tuple(o.secret_env))))
    return handles, f"http://{first.address}:{port}", boot


@hookimpl
def bench_launch_servers(spec, allocation, launcher):
    if spec.backend != NAME:
        return None
    o: SglangOptions = spec.options_for(NAME)
    placer = GpuPlacer(allocation)
    servers, urls = [], {}
    workers: dict[str, list[tuple[str, int | None]]] = {role: [] for role, _ in o.roles()}
    for role, w in o.roles():
        for i in range(w.workers):
            where = placer.place(f"{NAME}.{role} worker {i}", w.gpus, w.nodes)
            handles, url, boot = start_worker(spec, o, allocation, launcher, where, role, i, w)
            servers += handles
            urls[f"{role}-{i}"] = url
            workers[role].append((url, boot))
    # the router registers only workers that answer: start it once they all do
    launcher.wait_ready(servers, lambda: servers_healthy(urls), what=f"{NAME} servers",
                        timeout_s=spec.ready_timeout_s)
    head = allocation.nodes[0]
    rport = o.router.port or launcher.ports.one(0)
    servers.append(launcher.start(ProcessSpec(
        name="router", role="router", nodes=(0,), ports=(rport,),
        argv=router_argv(o, workers, head.address, rport), env=dict(o.env),
        container_image=o.container_image, container_mounts=tuple(o.container_mounts),
        secret_env=tuple(o.secret_env))))
    total = sum(w.workers * w.gpus for _, w in o.roles())
    router_url = f"http://{head.address}:{rport}"
    return ServerSet(
        backend=NAME, servers=servers, total_gpus=total,
        endpoints=[Endpoint(url=router_url, model=spec.model.name, role="router", gpus=total,
                            server="router")],
        info={"router": router_url, "router_kind": o.router.kind, "workers": urls,
              "expected": {WORKER_TYPE[role]: w.workers for role, w in o.roles()}})


# --------------------------------------------------------------------------- readiness


def _status(url: str) -> int | None:
    try:
        return http_get(url, timeout=2.0)[0]
    except OSError:
        return None


def servers_healthy(urls: dict[str, str]) -> bool | str:
    down = [name for name, url in urls.items() if _status(f"{url}/health") != 200]
    return True if not down else f"waiting for /health of {', '.join(down)}"


def router_counts(answer: Any) -> dict[str, int]:
    """Healthy workers by type in the router's ``GET /workers`` answer
    (``{"workers": [{"worker_type": "prefill", "is_healthy": true, ...}], ...}``)."""
    counts: dict[str, int] = {}
    if isinstance(answer, dict):
        for worker in answer.get("workers") or []:
            if isinstance(worker, dict) and worker.get("is_healthy", True):
                kind = str(worker.get("worker_type", "regular"))
                counts[kind] = counts.get(kind, 0) + 1
    return counts


@hookimpl
def bench_discover_endpoints(spec, servers, launcher):
    if spec.backend != NAME:
        return None
    info = servers.info
    router, want = info["router"], dict(info["expected"])

    def ready() -> bool | str:
        healthy = servers_healthy(dict(info["workers"]))
        if healthy is not True:
            return healthy
        if info["router_kind"] == "sglang_router":
            have = router_counts(http_json(f"{router}/workers")[1])
            if any(have.get(k, 0) < n for k, n in want.items()):
                return "router lists " + ", ".join(f"{have.get(k, 0)}/{n} {k}" for k, n in want.items())
        return models_listed(router, spec.model.name)

    launcher.wait_ready(servers.servers, ready, what=f"{NAME} deployment (router {router})",
                        timeout_s=spec.ready_timeout_s)
    return list(servers.endpoints)


@hookimpl
def bench_collect(spec, servers, point):
    if spec.backend != NAME or point is not None or servers is None:
        return None
    return Collected(plugin=NAME, metadata={"router": servers.info.get("router_kind"),
                                            "workers": dict(servers.info.get("expected", {}))})
