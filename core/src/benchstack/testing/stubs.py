"""The ``stub`` plugin: a trivial backend and load generator for testing the other kinds.

- backend ``stub``: one ``python -m benchstack.testing.timed_server`` process on node 0, started
  through the launcher and discovered through ``launcher.wait_ready`` like any real backend, so
  a scheduler can be run end to end without an engine;
- load generator ``stub``: returns :func:`~benchstack.testing.factories.make_load_result` for the
  point (no network), so a backend can be run end to end without a load tool.

The conformance checks use them as the "other" selection and as partners of the plugin checked.
"""

from __future__ import annotations

import sys

from .. import hookimpl
from ..probe import models_listed
from ..records import BackendInfo, Endpoint, LoadgenInfo, ProcessSpec, ServerSet
from .factories import make_load_result

NAME = "stub"


@hookimpl
def bench_register_backends():
    return [BackendInfo(name=NAME, description="test kit: one timed test server")]


@hookimpl
def bench_register_loadgens():
    return [LoadgenInfo(name=NAME, description="test kit: synthetic results, sends nothing")]


@hookimpl
def bench_launch_servers(spec, allocation, launcher):
    if spec.backend != NAME:
        return None
    node = allocation.nodes[0]
    port = launcher.ports.one(0)
    server = launcher.start(ProcessSpec(
        name="stub-0", role="frontend", nodes=(0,), ports=(port,),
        argv=(sys.executable, "-m", "benchstack.testing.timed_server", "--host", node.address,
              "--port", str(port), "--model", spec.model.name, "--ttft-ms", "1", "--itl-ms", "0.5")))
    url = f"http://{node.address}:{port}"
    return ServerSet(backend=NAME, servers=[server], total_gpus=0,
                     endpoints=[Endpoint(url=url, model=spec.model.name, server="stub-0")])


@hookimpl
def bench_discover_endpoints(spec, servers, launcher):
    if spec.backend != NAME:
        return None
    url = servers.endpoints[0].url
    launcher.wait_ready(servers.servers, lambda: models_listed(url, spec.model.name),
                        what=f"stub server {url}", timeout_s=min(spec.ready_timeout_s, 60.0))
    return list(servers.endpoints)


@hookimpl
def bench_run_load(spec, point):
    if spec.load != NAME:
        return None
    return make_load_result(point, tool=NAME)
