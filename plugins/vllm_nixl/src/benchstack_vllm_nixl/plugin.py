"""benchstack backend ``vllm_nixl``: hooks. Commands are built in :mod:`.commands`."""

from __future__ import annotations

import os

from benchstack import hookimpl
from benchstack.records import BackendInfo, Collected, Endpoint, ServerSet

from . import commands, probe
from .layout import place
from .options import NAME, VllmNixlOptions


def _opts(spec) -> VllmNixlOptions:
    return spec.options_for(NAME) or VllmNixlOptions()


@hookimpl
def bench_register_backends():
    return [BackendInfo(
        name=NAME,
        options_type=VllmNixlOptions,
        description="vLLM prefill/decode over the NIXL connector behind a P/D router; or aggregated vLLM",
    )]


@hookimpl
def bench_validate(spec):
    if spec.backend != NAME:
        return None
    return _opts(spec).problems() or None


@hookimpl
def bench_launch_servers(spec, allocation, launcher):
    if spec.backend != NAME:
        return None
    opts = _opts(spec)
    slots = place(opts, allocation, opts.cpu_cores_per_node or os.cpu_count() or 1)
    handles, urls = [], {}
    for slot in slots:
        proc = commands.vllm_process(spec, opts, allocation, slot, launcher.ports)
        handles.append(launcher.start(proc))
        urls[slot.name] = f"http://{allocation.nodes[slot.node].address}:{proc.ports[0]}"
    total_gpus = sum(len(s.gpus) for s in slots)
    info = {"urls": urls, "roles": {s.name: s.role for s in slots}}
    if opts.uses_router:
        if opts.router.kind == "vllm-router":
            # vllm-router gives up on workers that are not up within its own start-up timeout:
            # start it only once every vLLM server serves.
            probe.wait_servers(launcher, handles, urls, spec.model.name,
                               opts.ready_timeout_s or spec.ready_timeout_s)
        proc, url, metrics_url = commands.router_process(spec, opts, allocation, slots, urls, launcher.ports)
        router = launcher.start(proc)
        endpoint = Endpoint(url=url, model=spec.model.name, role="frontend", gpus=total_gpus,
                            server=router.spec.name)
        handles.append(router)
        info.update(router=url, router_metrics=metrics_url, router_kind=opts.router.kind)
    else:
        only = slots[0].name
        endpoint = Endpoint(url=urls[only], model=spec.model.name, role="frontend", gpus=total_gpus,
                            server=only)
    return ServerSet(backend=NAME, servers=handles, endpoints=[endpoint], total_gpus=total_gpus,
                     info=info)


@hookimpl
def bench_discover_endpoints(spec, servers, launcher):
    if spec.backend != NAME:
        return None
    opts = _opts(spec)
    urls = dict(servers.info["urls"])
    vllm = [h for h in servers.servers if h.spec.name in urls]
    probe.wait_servers(launcher, vllm, urls, spec.model.name, opts.ready_timeout_s or spec.ready_timeout_s)
    if "router" in servers.info:
        roles = dict(servers.info["roles"])
        probe.wait_router(launcher, servers.servers, servers.info["router"], servers.info["router_kind"],
                          spec.model.name, roles, opts.router.ready_timeout_s)
    probe.baseline(spec.run_dir, urls, opts.metrics_timeout_s)
    return list(servers.endpoints)


@hookimpl
def bench_collect(spec, servers, point, out_dir):
    if spec.backend != NAME or servers is None or "urls" not in servers.info:
        return None
    opts = _opts(spec)
    meta, artifacts = probe.collect(spec.run_dir, out_dir, dict(servers.info), point is None,
                                    opts.metrics_timeout_s)
    return Collected(plugin=NAME, metadata=meta, artifacts=artifacts)
