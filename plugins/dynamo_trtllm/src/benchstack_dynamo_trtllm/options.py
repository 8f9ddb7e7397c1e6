"""The ``dynamo_trtllm`` recipe section."""

from __future__ import annotations

from typing import Any

from attrs import field, frozen, validators as v

from benchstack.recipe import fraction

_pos = [v.instance_of(int), v.ge(1)]


@frozen(kw_only=True)
class RoleOptions:
    """One worker role (aggregated, prefill or decode): how many workers and how each is built."""

    workers: int = field(default=1, validator=_pos)
    tp: int = field(default=1, validator=_pos)
    pp: int = field(default=1, validator=_pos)
    ep: int = field(default=1, validator=_pos)
    attention_dp: bool = False
    gpus_per_worker: int | None = field(default=None, validator=v.optional(_pos))  # default tp*pp
    max_batch_size: int | None = field(default=None, validator=v.optional(_pos))
    max_num_tokens: int | None = field(default=None, validator=v.optional(_pos))
    max_seq_len: int | None = field(default=None, validator=v.optional(_pos))
    kv_cache_free_gpu_memory_fraction: float | None = field(default=None, validator=fraction)
    cache_transceiver_backend: str | None = field(
        default=None, validator=v.optional(v.in_(["DEFAULT", "UCX", "NIXL", "MPI"]))
    )
    engine_args: dict[str, Any] = field(factory=dict)  # merged into the engine config YAML
    nodes: list[int] | None = None  # allocation node indices to place this role on (default: pack)
    env: dict[str, str] = field(factory=dict)
    extra_args: list[str] = field(factory=list)  # appended to the worker command line

    def __attrs_post_init__(self):
        if self.ep > self.tp * self.pp and not self.attention_dp:
            raise ValueError(f"'ep' ({self.ep}) must not exceed tp*pp ({self.tp * self.pp})")

    @property
    def world_size(self) -> int:
        return self.tp * self.pp

    @property
    def gpus(self) -> int:
        return self.gpus_per_worker or self.world_size


@frozen(kw_only=True)
class FrontendOptions:
    port: int | None = field(default=None, validator=v.optional([v.ge(1), v.le(65535)]))
    router_mode: str = field(default="round-robin", validator=v.in_(["round-robin", "random", "kv"]))
    extra_args: list[str] = field(factory=list)


@frozen(kw_only=True)
class MockerOptions:
    """Dynamo's mocker engine: a real Dynamo worker with a simulated engine (no GPU)."""

    engine_type: str = field(default="trtllm", validator=v.in_(["trtllm", "vllm", "sglang"]))
    speedup_ratio: float = field(default=1.0, validator=v.gt(0))
    num_gpu_blocks: int = field(default=1024, validator=_pos)
    block_size: int = field(default=16, validator=_pos)
    extra_args: list[str] = field(factory=list)


@frozen(kw_only=True)
class DynamoTrtllmOptions:
    """Recipe section ``dynamo_trtllm``: give ``aggregated`` or ``prefill`` + ``decode``."""

    worker: str = field(default="trtllm", validator=v.in_(["trtllm", "mocker"]))
    discovery: str = field(default="etcd", validator=v.in_(["etcd", "file"]))
    aggregated: RoleOptions | None = None
    prefill: RoleOptions | None = None
    decode: RoleOptions | None = None
    frontend: FrontendOptions = field(factory=FrontendOptions)
    mocker: MockerOptions = field(factory=MockerOptions)
    python: str | None = None  # interpreter for dynamo processes (default: the one running bench)
    launch_prefix: list[str] = field(factory=lambda: ["trtllm-llmapi-launch"])  # multi-task workers
    mpi: str = "pmix"
    etcd: str = "etcd"
    nats: str = "nats-server"
    container_image: str | None = None
    container_mounts: list[str] = field(factory=list)
    namespace: str | None = None  # Dynamo namespace (default: derived from the run name)
    env: dict[str, str] = field(factory=dict)
    secret_env: list[str] = field(factory=lambda: ["HF_TOKEN"])

    def __attrs_post_init__(self):
        split = self.prefill is not None or self.decode is not None
        if split and self.aggregated is not None:
            raise ValueError("give either 'aggregated' or 'prefill' and 'decode', not both")
        if split and (self.prefill is None or self.decode is None):
            raise ValueError("a disaggregated deployment needs both 'prefill' and 'decode'")
        if not split and self.aggregated is None:
            raise ValueError("give 'aggregated' or 'prefill' and 'decode'")

    @property
    def disaggregated(self) -> bool:
        return self.prefill is not None

    def roles(self) -> list[tuple[str, RoleOptions]]:
        if self.disaggregated:
            return [("prefill", self.prefill), ("decode", self.decode)]
        return [("aggregated", self.aggregated)]
