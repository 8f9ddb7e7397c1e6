"""GPU placement: which node(s) and GPU ids each server instance gets (the plan's GPU map).

An instance that fits on one node gets the lowest free GPU ids of the first allowed node with
enough free GPUs. An instance larger than a node takes whole free nodes and runs one task per
GPU (MPI), as multi-node TensorRT-LLM and vLLM instances do.
"""

from __future__ import annotations

from typing import Sequence

from attrs import frozen

from .errors import BenchError
from .records import Allocation


class PlacementError(BenchError):
    """The deployment does not fit the allocation."""


@frozen(kw_only=True)
class Placement:
    nodes: tuple[int, ...]
    gpus: tuple[int, ...]  # GPU ids on each of ``nodes``
    ntasks_per_node: int = 1


class GpuPlacer:
    """Hands out GPUs of an allocation to instances, never twice (unless asked to share)."""

    def __init__(self, allocation: Allocation):
        self.allocation = allocation
        self.free = {i: list(range(n.gpus)) for i, n in enumerate(allocation.nodes)}

    def place(self, what: str, gpus: int, nodes: Sequence[int] | None = None,
              virtual: bool = False) -> Placement:
        """Place one instance needing ``gpus`` GPUs on ``nodes`` (indices; default: all).

        ``virtual`` instances (simulated engines) run without GPUs when the allocation has none.
        """
        n_nodes = len(self.allocation.nodes)
        allowed = list(nodes) if nodes else list(range(n_nodes))
        for i in allowed:
            if not 0 <= i < n_nodes:
                raise PlacementError(
                    f"{what}: node index {i} is outside the allocation of {n_nodes} node(s)"
                )
        if virtual and all(self.allocation.nodes[i].gpus == 0 for i in allowed):
            return Placement(nodes=(self._least_loaded(allowed),), gpus=())
        per_node = self.allocation.gpus_per_node
        if gpus <= max((self.allocation.nodes[i].gpus for i in allowed), default=0):
            for i in allowed:
                if len(self.free[i]) >= gpus:
                    taken, self.free[i] = self.free[i][:gpus], self.free[i][gpus:]
                    return Placement(nodes=(i,), gpus=tuple(taken))
            raise PlacementError(
                f"{what} needs {gpus} GPU(s) on one node; free GPUs left: "
                + self._free_text(allowed) + " (add nodes, or lower workers/tp)"
            )
        if per_node == 0 or gpus % per_node:
            raise PlacementError(
                f"{what} needs {gpus} GPUs, more than a node has ({per_node}), and not a multiple "
                f"of it: a multi-node instance takes whole nodes"
            )
        k = gpus // per_node
        whole = [i for i in allowed if len(self.free[i]) == self.allocation.nodes[i].gpus]
        if len(whole) < k:
            raise PlacementError(
                f"{what} needs {k} whole node(s) of {per_node} GPUs; free GPUs left: "
                + self._free_text(allowed)
            )
        chosen = whole[:k]
        for i in chosen:
            self.free[i] = []
        return Placement(nodes=tuple(chosen), gpus=tuple(range(per_node)), ntasks_per_node=per_node)

    def _least_loaded(self, allowed: list[int]) -> int:
        counts = getattr(self, "_virtual_counts", {})
        node = min(allowed, key=lambda i: (counts.get(i, 0), allowed.index(i)))
        counts[node] = counts.get(node, 0) + 1
        self._virtual_counts = counts
        return node

    def _free_text(self, allowed: list[int]) -> str:
        return ", ".join(f"{self.allocation.nodes[i].name}: {len(self.free[i])}" for i in allowed)
