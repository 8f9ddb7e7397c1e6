"""Recipe section ``vllm_nixl``: attrs classes structured by core before anything starts."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from attrs import field, frozen, validators as v

NAME = "vllm_nixl"
PYTHON_ENV = "BENCH_VLLM_PYTHON"  # interpreter running vLLM when the recipe names none
KV_ROLES = ("kv_producer", "kv_consumer", "kv_both")
ROUTERS = ("benchstack", "vllm-router")
POLICIES = ("round_robin", "least_loaded")
VLLM_ROUTER_POLICIES = ("round_robin", "random", "power_of_two", "cache_aware", "consistent_hash")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env_names(inst, attribute, value) -> None:
    for key in value:
        if not _ENV_NAME.match(key):
            raise ValueError(f"'{attribute.name}' has an invalid variable name: {key!r}")


def _ucx_names(inst, attribute, value) -> None:
    _env_names(inst, attribute, value)
    for key in value:
        if not key.startswith("UCX_"):
            raise ValueError(f"'{attribute.name}' holds UCX_* variables only: {key!r}")


def _non_negative_items(inst, attribute, value) -> None:
    if value is None:
        return
    for item in value:
        if item < 0:
            raise ValueError(f"'{attribute.name}' must hold values >= 0: {item}")


_pos = [v.instance_of(int), v.ge(1)]
_opt_pos = v.optional(v.ge(1))


@frozen(kw_only=True)
class RoleOptions:
    """One role's servers (``prefill``, ``decode`` or ``aggregated``): DP instances of TP ranks.

    Each instance is its own vLLM API server (data parallel by replication, as in seed 003)
    with ``gpus_per_instance`` GPUs (default ``tp``) on one node. ``nodes`` lists the node
    indices the role may use (default: all); each instance takes the lowest free GPU ids of the
    first of them with enough free GPUs, prefill before decode.
    """

    instances: int = field(default=1, validator=_pos)
    tp: int = field(default=1, validator=_pos)
    gpus_per_instance: int | None = field(default=None, validator=_opt_pos)
    nodes: list[int] | None = field(default=None, validator=_non_negative_items)
    max_num_seqs: int | None = field(default=None, validator=_opt_pos)
    max_model_len: int | None = field(default=None, validator=_opt_pos)
    max_num_batched_tokens: int | None = field(default=None, validator=_opt_pos)
    gpu_memory_utilization: float | None = field(default=None, validator=v.optional([v.gt(0), v.le(1)]))
    dtype: str | None = None
    enforce_eager: bool = False
    kv_role: str | None = field(default=None, validator=v.optional(v.in_(KV_ROLES)))
    extra_args: list[str] = field(factory=list)
    env: dict[str, str] = field(factory=dict, validator=_env_names)

    @property
    def gpus_each(self) -> int:
        return self.gpus_per_instance or self.tp

    def problems(self, where: str) -> list[str]:
        out = []
        if self.gpus_per_instance is not None and self.gpus_per_instance < self.tp:
            out.append(f"'gpus_per_instance' ({self.gpus_per_instance}) must be >= 'tp' ({self.tp}) @ {where}")
        if self.nodes is not None and not self.nodes:
            out.append(f"'nodes' must not be empty (leave it out for every node) @ {where}")
        return out


@frozen(kw_only=True)
class RouterOptions:
    """The P/D router in front: benchstack's own proxy (default) or ``vllm-router`` from PyPI.

    It runs for a disaggregated deployment and for an aggregated one of several instances.
    """

    kind: str = field(default="benchstack", validator=v.in_(ROUTERS))
    node: int = field(default=0, validator=v.ge(0))
    port: int | None = field(default=None, validator=v.optional([v.ge(1024), v.le(65535)]))
    policy: str = "round_robin"
    python: str | None = None  # interpreter for the benchstack router (default: this one)
    command: list[str] | None = None  # vllm-router executable (default: next to vLLM's python)
    extra_args: list[str] = field(factory=list)
    env: dict[str, str] = field(factory=dict, validator=_env_names)
    ready_timeout_s: float = field(default=120.0, validator=v.gt(0))

    def problems(self, where: str) -> list[str]:
        allowed = POLICIES if self.kind == "benchstack" else VLLM_ROUTER_POLICIES
        if self.policy not in allowed:
            return [f"'policy' must be one of {', '.join(allowed)} for router {self.kind!r}: "
                    f"{self.policy!r} @ {where}"]
        return []


@frozen(kw_only=True)
class VllmNixlOptions:
    """Recipe section ``vllm_nixl``."""

    mode: str = field(default="disaggregated", validator=v.in_(["disaggregated", "aggregated"]))
    python: str | None = None  # interpreter with vLLM; default: $BENCH_VLLM_PYTHON, .venv-vllm, python3
    command: list[str] | None = None  # replaces [python, -m, vllm.entrypoints.openai.api_server]
    device: str = field(default="cuda", validator=v.in_(["cuda", "cpu"]))
    kv_buffer_device: str | None = field(default=None, validator=v.optional(v.in_(["cuda", "cpu"])))
    kv_connector_extra_config: dict[str, Any] = field(factory=dict)
    prefill: RoleOptions = field(factory=RoleOptions)
    decode: RoleOptions = field(factory=RoleOptions)
    aggregated: RoleOptions = field(factory=RoleOptions)
    ucx: dict[str, str] = field(factory=dict, validator=_ucx_names)  # UCX_* for every vLLM server
    env: dict[str, str] = field(factory=dict, validator=_env_names)  # every vLLM server
    cpu_kvcache_space_gib: int = field(default=1, validator=v.ge(1))  # device cpu only
    cpu_cores_per_node: int | None = field(default=None, validator=_opt_pos)  # cpu: pinning range
    router: RouterOptions = field(factory=RouterOptions)
    ready_timeout_s: float | None = field(default=None, validator=v.optional(v.gt(0)))
    metrics_timeout_s: float = field(default=10.0, validator=v.gt(0))

    @property
    def roles(self) -> tuple[str, ...]:
        return ("prefill", "decode") if self.mode == "disaggregated" else ("aggregated",)

    def role(self, name: str) -> RoleOptions:
        return getattr(self, name)

    @property
    def uses_router(self) -> bool:
        return self.mode == "disaggregated" or self.aggregated.instances > 1

    @property
    def buffer_device(self) -> str:
        return self.kv_buffer_device or self.device

    def problems(self) -> list[str]:
        out = []
        unused = ("aggregated",) if self.mode == "disaggregated" else ("prefill", "decode")
        for r in unused:
            if self.role(r) != RoleOptions():
                out.append(f"'{r}' is not used with mode {self.mode!r} @ recipe.{NAME}.{r}")
        for r in self.roles:
            out += self.role(r).problems(f"recipe.{NAME}.{r}")
        if self.uses_router:
            out += self.router.problems(f"recipe.{NAME}.router")
        return out

    def vllm_prefix(self) -> list[str]:
        """The words that start a vLLM API server (before its arguments)."""
        if self.command:
            return list(self.command)
        return [self.python or default_python(), "-m", "vllm.entrypoints.openai.api_server"]


def default_python(repo: Path | None = None) -> str:
    """$BENCH_VLLM_PYTHON, else ``<repo>/.venv-vllm/bin/python`` if it exists, else ``python3``."""
    env = os.environ.get(PYTHON_ENV)
    if env:
        return env
    root = repo or repo_root()
    if root is not None:
        candidate = root / ".venv-vllm" / "bin" / "python"
        if candidate.exists():
            return str(candidate)
    return "python3"


def repo_root() -> Path | None:
    """The benchstack checkout this plugin runs from (an editable install), if any."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "core" / "pyproject.toml").exists() and (parent / "plugins").is_dir():
            return parent
    return None
