"""Placement: which node and which GPUs (or CPU cores) each vLLM instance gets."""

from __future__ import annotations

from attrs import frozen

from benchstack.placement import GpuPlacer, PlacementError
from benchstack.records import Allocation

from .options import NAME, VllmNixlOptions


@frozen(kw_only=True)
class Slot:
    """One vLLM instance: ``prefill-1`` on node 0 with GPUs (2, 3)."""

    role: str
    index: int
    node: int
    gpus: tuple[int, ...] = ()
    cpu_bind: str | None = None  # VLLM_CPU_OMP_THREADS_BIND (device cpu)

    @property
    def name(self) -> str:
        prefix = "vllm" if self.role == "aggregated" else self.role
        return f"{prefix}-{self.index}"


def place(opts: VllmNixlOptions, allocation: Allocation, cpu_count: int) -> list[Slot]:
    """Every instance of every role, in start order (prefill before decode).

    GPUs (``device: cuda``): first fit through core's :class:`GpuPlacer`; an instance must fit
    on one node. CPU: each instance goes to the least used of its allowed nodes and is pinned
    to its own ``tp`` cores there, in order (two vLLM servers sharing a core both crawl).
    """
    placer = GpuPlacer(allocation)
    n_nodes = len(allocation.nodes)
    instances_on = [0] * n_nodes
    cores_used = [0] * n_nodes
    slots: list[Slot] = []
    for role in opts.roles:
        r = opts.role(role)
        for i in range(r.instances):
            what = f"{NAME}.{role} instance {i}"
            if opts.device == "cpu":
                allowed = r.nodes or list(range(n_nodes))
                bad = [n for n in allowed if not 0 <= n < n_nodes]
                if bad:
                    raise PlacementError(f"{what}: node index {bad[0]} is outside the allocation "
                                         f"of {n_nodes} node(s)")
                node = min(allowed, key=lambda n: (instances_on[n], allowed.index(n)))
                instances_on[node] += 1
                cores = [(cores_used[node] + k) % cpu_count for k in range(r.tp)]
                cores_used[node] += r.tp
                slots.append(Slot(role=role, index=i, node=node,
                                  cpu_bind="|".join(str(c) for c in cores)))
                continue
            where = placer.place(what, r.gpus_each, r.nodes)
            if len(where.nodes) > 1:
                raise PlacementError(f"{what} needs {r.gpus_each} GPUs, more than one node has: "
                                     "a vLLM instance here runs on one node (lower tp)")
            slots.append(Slot(role=role, index=i, node=where.nodes[0], gpus=where.gpus))
    return slots
