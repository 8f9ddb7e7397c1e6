"""The ``sglang`` recipe section: attrs classes with validators, structured by benchstack."""

from __future__ import annotations

from attrs import field, frozen, validators as v

_pos = [v.instance_of(int), v.ge(1)]
POLICIES = ["cache_aware", "round_robin", "random", "power_of_two"]


def _fraction(inst, attribute, value):
    if value is not None and not 0 < value <= 1:
        raise ValueError(f"'{attribute.name}' must be in (0, 1]: {value}")


@frozen(kw_only=True)
class WorkerOptions:
    """One worker role (aggregated, prefill or decode): how many servers and how each is built."""

    workers: int = field(default=1, validator=_pos)
    tp: int = field(default=1, validator=_pos)  # --tp-size
    dp: int = field(default=1, validator=_pos)  # --dp-size
    ep: int = field(default=1, validator=_pos)  # --ep-size
    enable_dp_attention: bool = False
    mem_fraction_static: float | None = field(default=None, validator=_fraction)
    max_running_requests: int | None = field(default=None, validator=v.optional(_pos))
    chunked_prefill_size: int | None = field(default=None, validator=v.optional(_pos))
    context_length: int | None = field(default=None, validator=v.optional(_pos))
    nodes: list[int] | None = None  # allocation node indices for this role (default: pack)
    env: dict[str, str] = field(factory=dict)
    extra_args: list[str] = field(factory=list)  # appended to the server command line

    def __attrs_post_init__(self):
        # SGLang: with DP attention the dp groups split the tp group; without it, dp replicas
        if self.enable_dp_attention and self.tp % self.dp:
            raise ValueError(f"'tp' ({self.tp}) must be a multiple of 'dp' ({self.dp}) "
                             "with enable_dp_attention")

    @property
    def gpus(self) -> int:
        """GPUs of one server: tp (DP attention shares them), else tp x dp replicas."""
        return self.tp if self.enable_dp_attention else self.tp * self.dp


@frozen(kw_only=True)
class RouterOptions:
    """What stands in front of the workers: the SGLang router (``sglang_router``) or, for
    prefill/decode only, SGLang's mini load balancer (``mini_lb``)."""

    kind: str = field(default="sglang_router", validator=v.in_(["sglang_router", "mini_lb"]))
    port: int | None = field(default=None, validator=v.optional([v.ge(1), v.le(65535)]))
    policy: str = field(default="cache_aware", validator=v.in_(POLICIES))
    prefill_policy: str | None = field(default=None, validator=v.optional(v.in_(POLICIES)))
    decode_policy: str | None = field(default=None, validator=v.optional(v.in_(POLICIES)))
    extra_args: list[str] = field(factory=list)


@frozen(kw_only=True)
class SglangOptions:
    """Recipe section ``sglang``: give ``aggregated`` or ``prefill`` + ``decode``."""

    aggregated: WorkerOptions | None = None
    prefill: WorkerOptions | None = None
    decode: WorkerOptions | None = None
    router: RouterOptions = field(factory=RouterOptions)
    transfer_backend: str = field(default="mooncake", validator=v.in_(["mooncake", "nixl"]))
    ib_device: str | None = None  # --disaggregation-ib-device (e.g. mlx5_0,mlx5_1)
    trust_remote_code: bool = False
    python: str = "python3"  # the interpreter SGLang is installed for (its venv or container)
    container_image: str | None = None
    container_mounts: list[str] = field(factory=list)
    env: dict[str, str] = field(factory=dict)
    secret_env: list[str] = field(factory=lambda: ["HF_TOKEN"])

    def __attrs_post_init__(self):
        split = self.prefill is not None or self.decode is not None
        if split and self.aggregated is not None:
            raise ValueError("give either 'aggregated' or 'prefill' and 'decode', not both")
        if split and (self.prefill is None or self.decode is None):
            raise ValueError("a prefill/decode deployment needs both 'prefill' and 'decode'")
        if not split and self.aggregated is None:
            raise ValueError("give 'aggregated' or 'prefill' and 'decode'")

    @property
    def disaggregated(self) -> bool:
        return self.prefill is not None

    def roles(self) -> list[tuple[str, WorkerOptions]]:
        if self.disaggregated:
            return [("prefill", self.prefill), ("decode", self.decode)]
        return [("aggregated", self.aggregated)]
