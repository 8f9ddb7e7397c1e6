"""A tiny backend + load generator (``slurmprobe``) for testing the Slurm scheduler for real.

Installed for a test by putting this directory's copy and a ``.dist-info`` with its entry point
on ``PYTHONPATH`` (see ``slurm_fixtures.probe_env``), so the in-job driver finds it exactly as
it finds the real plugins. Every process it starts carries ``--probe-marker=<marker>`` on its
command line, so a test can check that none of them survives a run.

Modes (recipe section ``slurmprobe``):
- ``serve``: an HTTP server on node 0 and, on ``worker_nodes``, a worker of
  ``tasks_per_node`` tasks x ``gpus_per_task`` GPUs whose tasks log their rank, host and
  ``CUDA_VISIBLE_DEVICES``; with ``pair_node`` set, two single-task GPU processes share that
  node (GPUs 0,1 and 2,3). Ready when the server answers and every task has logged.
- ``never_ready``: a server that logs "loading" and never opens its port.
``ignore_term`` makes the server ignore SIGTERM; ``hold_s`` makes each load point last that long.
"""

from __future__ import annotations

import sys
import time
import urllib.request

from attrs import field, frozen, validators as v

from benchstack import hookimpl
from benchstack.records import (BackendInfo, Endpoint, LoadgenInfo, LoadResult, Metrics,
                                ProcessSpec, ServerSet, Stat)

NAME = "slurmprobe"

SERVER = r"""
import http.server, json, os, signal, socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
if "--ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, lambda *a: print("TERM ignored", flush=True))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
print(f"serving on {addr}:{port}", flush=True)
http.server.ThreadingHTTPServer((addr, port), H).serve_forever()
"""

TASK = r"""
import os, socket, time
e = os.environ.get
print(f"TASK rank={e('SLURM_PROCID')} local={e('SLURM_LOCALID')} host={socket.gethostname()} "
      f"cvd={e('CUDA_VISIBLE_DEVICES')} pmix={e('PMIX_RANK')} ntasks={e('SLURM_NTASKS')}", flush=True)
while True:
    time.sleep(1)
"""

NEVER = r"""
import time
print("loading weights (this server never opens its port)", flush=True)
while True:
    time.sleep(1)
"""


@frozen(kw_only=True)
class ProbeOptions:
    mode: str = field(default="serve", validator=v.in_(["serve", "never_ready"]))
    marker: str = "probe"
    worker_nodes: list[int] = field(factory=list)
    tasks_per_node: int = 1
    gpus_per_task: int = 1
    pair_node: int | None = None
    hold_s: float = 0.0  # the load generator sleeps this long in each point (for cancel tests)
    ignore_term: bool = False  # the server ignores SIGTERM (teardown must KILL it)


def _opts(spec) -> ProbeOptions:
    return spec.options_for(NAME) or ProbeOptions()


@hookimpl
def bench_register_backends():
    return [BackendInfo(name=NAME, options_type=ProbeOptions, description="test probe")]


@hookimpl
def bench_register_loadgens():
    return [LoadgenInfo(name=NAME, options_type=ProbeOptions, description="test probe")]


@hookimpl
def bench_launch_servers(spec, allocation, launcher):
    if spec.backend != NAME:
        return None
    o = _opts(spec)
    mark = f"--probe-marker={o.marker}"
    head = allocation.nodes[0]
    port = launcher.ports.one(0)
    code = NEVER if o.mode == "never_ready" else SERVER
    servers = [launcher.start(ProcessSpec(
        name="server", role="frontend", nodes=(0,), ports=(port,),
        argv=(sys.executable, "-c", code, head.address, str(port), mark)
        + (("--ignore-term",) if o.ignore_term else ())))]
    workers = []
    gpus = 0
    if o.worker_nodes:
        per_node = o.tasks_per_node * o.gpus_per_task
        workers.append(launcher.start(ProcessSpec(
            name="worker", role="worker", nodes=tuple(o.worker_nodes),
            ntasks_per_node=o.tasks_per_node, gpus=tuple(range(per_node)),
            argv=(sys.executable, "-c", TASK, mark))))
        gpus += per_node * len(o.worker_nodes)
    if o.pair_node is not None:
        for i, pair in enumerate(((0, 1), (2, 3))):
            workers.append(launcher.start(ProcessSpec(
                name=f"pair-{i}", role="worker", nodes=(o.pair_node,), gpus=pair,
                env={"PROBE_PAIR": str(i)}, argv=(sys.executable, "-c", TASK, mark))))
        gpus += 4
    return ServerSet(backend=NAME, servers=servers + workers, total_gpus=gpus,
                     endpoints=[Endpoint(url=f"http://{head.address}:{port}", model=spec.model.name,
                                         gpus=gpus, server="server")])


def _get(url: str) -> bool:
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


@hookimpl
def bench_discover_endpoints(spec, servers, launcher):
    if spec.backend != NAME:
        return None
    url = servers.endpoints[0].url

    def ready():
        if not _get(url):
            return f"{url} does not answer"
        for h in servers.by_role("worker"):
            lines = h.log_path.read_text().count("TASK ") if h.log_path.exists() else 0
            if lines < h.spec.ntasks:
                return f"{h.spec.name}: {lines}/{h.spec.ntasks} tasks up"
        return True

    launcher.wait_ready(servers.servers, ready, what="probe deployment", timeout_s=spec.ready_timeout_s)
    return list(servers.endpoints)


@hookimpl
def bench_run_load(spec, endpoints, point, out_dir):
    if spec.load != NAME:
        return None
    o = _opts(spec)
    n = point.num_requests or 4
    t0 = time.monotonic()
    ok = sum(_get(endpoints[0].url) for _ in range(n))
    deadline = time.monotonic() + o.hold_s
    while time.monotonic() < deadline:
        time.sleep(0.1)
    dur = max(time.monotonic() - t0, 1e-3)
    stat = Stat(mean=1.0, min=1.0, max=1.0, p50=1.0, p90=1.0, p95=1.0, p99=1.0)
    toks = Stat(mean=float(point.osl), min=float(point.osl), max=float(point.osl), p50=float(point.osl))
    m = Metrics(duration_s=dur, requests_sent=n, requests_completed=ok, requests_failed=n - ok,
                request_throughput=ok / dur, output_token_throughput=ok * point.osl / dur,
                total_token_throughput=ok * (point.isl + point.osl) / dur,
                ttft_ms=stat, itl_ms=stat, e2e_ms=stat, output_tokens=toks,
                input_tokens=Stat(mean=float(point.isl)))
    return LoadResult(point=point, tool=NAME, metrics=m)
