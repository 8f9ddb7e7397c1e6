"""The ``trtllm_serve`` recipe section."""

from __future__ import annotations

from typing import Any

from attrs import field, frozen, validators as v

from benchstack.recipe import fraction

_pos = [v.instance_of(int), v.ge(1)]


@frozen(kw_only=True)
class EngineOptions:
    """Parallelism and engine settings of one kind of trtllm-serve server."""

    tp: int = field(default=1, validator=_pos)
    pp: int = field(default=1, validator=_pos)
    ep: int | None = field(default=None, validator=v.optional(_pos))
    attention_dp: bool = False
    gpus: int | None = field(default=None, validator=v.optional(_pos))  # per server; default tp*pp
    max_batch_size: int | None = field(default=None, validator=v.optional(_pos))
    max_num_tokens: int | None = field(default=None, validator=v.optional(_pos))
    max_seq_len: int | None = field(default=None, validator=v.optional(_pos))
    kv_cache_free_gpu_memory_fraction: float | None = field(default=None, validator=fraction)
    llm_api_options: dict[str, Any] = field(factory=dict)  # merged into --extra_llm_api_options
    extra_args: list[str] = field(factory=list)
    env: dict[str, str] = field(factory=dict)
    nodes: list[int] | None = None  # allocation node indices (default: pack from node 0)

    @property
    def world_size(self) -> int:
        return self.tp * self.pp

    @property
    def gpus_per_server(self) -> int:
        return self.gpus or self.world_size


@frozen(kw_only=True)
class InstanceOptions(EngineOptions):
    """Aggregated (IFB) instances: local-node (fits a node) or cross-node (spans nodes, MPI)."""

    count: int | None = field(default=None, validator=v.optional(_pos))  # default: fill the allocation


@frozen(kw_only=True)
class ContextOptions(EngineOptions):
    servers: int = field(default=1, validator=_pos)
    cache_transceiver_backend: str = field(default="DEFAULT", validator=v.in_(["DEFAULT", "UCX", "NIXL", "MPI"]))


@frozen(kw_only=True)
class GenerationOptions(ContextOptions):
    # seed 001: the generation server on context server 0's GPUs, only when asked for
    share_gpus_with_context: bool = False


@frozen(kw_only=True)
class DisaggServerOptions:
    port: int | None = field(default=None, validator=v.optional([v.ge(1), v.le(65535)]))
    context_router: str = field(default="round_robin",
                                validator=v.in_(["round_robin", "load_balancing", "kv_cache_aware"]))
    generation_router: str = field(default="round_robin",
                                   validator=v.in_(["round_robin", "load_balancing", "kv_cache_aware"]))
    server_start_timeout: int = field(default=1800, validator=_pos)
    request_timeout: int = field(default=7200, validator=_pos)


@frozen(kw_only=True)
class TrtllmServeOptions:
    """Recipe section ``trtllm_serve``: give ``instances``, or ``context`` + ``generation``."""

    backend: str = field(default="pytorch", validator=v.in_(["pytorch", "trt"]))
    engine_dir: str | None = None  # prebuilt TensorRT engine (backend: trt) replaces the model path
    instances: InstanceOptions | None = None
    context: ContextOptions | None = None
    generation: GenerationOptions | None = None
    disagg_server: DisaggServerOptions = field(factory=DisaggServerOptions)
    # enable_iter_perf_stats on every server, so /metrics has iteration stats to collect per point
    server_metrics: bool = True
    launch: str = field(default="auto", validator=v.in_(["auto", "mpi", "single"]))
    executable: str = "trtllm-serve"
    launch_prefix: list[str] = field(factory=lambda: ["trtllm-llmapi-launch"])
    mpi: str = "pmix"
    container_image: str | None = None
    container_mounts: list[str] = field(factory=list)
    env: dict[str, str] = field(factory=dict)
    secret_env: list[str] = field(factory=lambda: ["HF_TOKEN"])

    def __attrs_post_init__(self):
        split = self.context is not None or self.generation is not None
        if split and self.instances is not None:
            raise ValueError("give either 'instances' or 'context' and 'generation', not both")
        if split and (self.context is None or self.generation is None):
            raise ValueError("a disaggregated deployment needs both 'context' and 'generation'")
        if not split and self.instances is None:
            raise ValueError("give 'instances' or 'context' and 'generation'")
        if self.backend == "trt" and not self.engine_dir:
            raise ValueError("backend 'trt' needs 'engine_dir' (a prebuilt TensorRT-LLM engine)")

    @property
    def disaggregated(self) -> bool:
        return self.context is not None
