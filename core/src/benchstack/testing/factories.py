"""Record factories for plugin tests: valid records with small, consistent defaults.

Every factory takes the record's own fields as keyword arguments, so a test states only what it
cares about: ``make_endpoint(url=server.url)``, ``make_metrics(failed=2)``. The nodes of
:func:`make_allocation` are the fake scheduler's (``node1``/``10.0.0.11``, ...).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable

from ..records import (Allocation, Endpoint, LoadPoint, LoadResult, Metrics, Node, ProcessSpec,
                       ServerHandle, ServerSet, Stat)

__all__ = ["make_node", "make_allocation", "make_endpoint", "make_point", "make_stat",
           "make_metrics", "make_load_result", "make_process", "make_server_set"]


def make_node(index: int = 0, gpus: int = 4, **fields: Any) -> Node:
    """Node ``index`` as the fake scheduler names it: ``node{index+1}`` at ``10.0.0.{index+11}``."""
    return Node(**{"name": f"node{index + 1}", "address": f"10.0.0.{index + 11}", "gpus": gpus,
                   **fields})


def make_allocation(nodes: int = 1, gpus_per_node: int = 4, scheduler: str = "fake",
                    **fields: Any) -> Allocation:
    """An allocation of ``nodes`` fake nodes with ``gpus_per_node`` GPUs each."""
    return Allocation(**{"scheduler": scheduler, "job_id": "0",
                         "nodes": [make_node(i, gpus_per_node) for i in range(nodes)], **fields})


def make_endpoint(url: str = "http://10.0.0.11:8000", model: str = "tiny", **fields: Any) -> Endpoint:
    """An OpenAI-compatible endpoint (role ``frontend``, one GPU behind it unless given)."""
    return Endpoint(**{"url": url, "model": model, "role": "frontend", "gpus": 1, **fields})


def make_point(index: int = 0, concurrency: int | None = 1, **fields: Any) -> LoadPoint:
    """A small closed-loop load point: ISL 32, OSL 16, 8 requests (as the kit's base recipe)."""
    return LoadPoint(**{"index": index, "concurrency": concurrency, "isl": 32, "osl": 16,
                        "num_requests": 8, **fields})


def make_stat(value: float = 1.0, **fields: Any) -> Stat:
    """A distribution whose every statistic is ``value`` (std 0) unless given."""
    base = {k: value for k in ("mean", "min", "max", "p50", "p90", "p95", "p99")}
    return Stat(**{**base, "std": 0.0, **fields})


def make_metrics(requests: int = 8, failed: int = 0, osl: int = 16, isl: int = 32,
                 duration_s: float = 1.0, ttft_ms: float = 20.0, itl_ms: float = 5.0,
                 **fields: Any) -> Metrics:
    """Metrics of a point that sent ``requests`` requests, ``failed`` of which failed.

    The numbers agree with each other (throughputs from counts and duration, end-to-end latency
    from TTFT and ITL), so validity gates pass unless a test breaks them on purpose.
    """
    done = requests - failed
    return Metrics(**{
        "duration_s": duration_s, "requests_sent": requests, "requests_completed": done,
        "requests_failed": failed, "request_throughput": done / duration_s,
        "output_token_throughput": done * osl / duration_s,
        "total_token_throughput": done * (isl + osl) / duration_s,
        "ttft_ms": make_stat(ttft_ms), "itl_ms": make_stat(itl_ms),
        "e2e_ms": make_stat(ttft_ms + itl_ms * (osl - 1)),
        "input_tokens": make_stat(float(isl)), "output_tokens": make_stat(float(osl)), **fields})


def make_load_result(point: LoadPoint | None = None, tool: str = "stub", **fields: Any) -> LoadResult:
    """A load generator's result for ``point`` with metrics that match its ISL/OSL and count."""
    point = point or make_point()
    metrics = fields.pop("metrics", None) or make_metrics(
        requests=point.num_requests or 8, osl=point.osl, isl=point.isl)
    return LoadResult(**{"point": point, "tool": tool, "metrics": metrics, **fields})


def make_process(name: str = "server-0", role: str = "frontend", **fields: Any) -> ProcessSpec:
    """A process spec; by default ``python -c pass`` on node 0."""
    return ProcessSpec(**{"name": name, "role": role, "argv": (sys.executable, "-c", "pass"),
                          **fields})


def make_server_set(backend: str = "stub", processes: Iterable[ProcessSpec] | None = None,
                    endpoints: Iterable[Endpoint] | None = None, **fields: Any) -> ServerSet:
    """A server set of ``processes`` (default: one) with log paths under ``/runs/test/logs``."""
    procs = list(processes) if processes is not None else [make_process()]
    handles = [ServerHandle(spec=p, log_path=Path("/runs/test/logs") / f"{p.name}.log") for p in procs]
    return ServerSet(**{"backend": backend, "servers": handles,
                        "endpoints": list(endpoints) if endpoints is not None else [make_endpoint()],
                        **fields})
