"""Every record that crosses a hook boundary: frozen attrs classes, one module.

Plugins exchange these and nothing looser (no dicts of loosely named keys). Variants are made
with ``attrs.evolve``.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from attrs import field, frozen


def _frozen_map(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


def _tuple(value: Any) -> tuple:
    return tuple(value or ())


# --------------------------------------------------------------------------- registration


@frozen(kw_only=True)
class BackendInfo:
    """A serving backend a plugin provides (``bench run --backend NAME``)."""

    name: str
    options_type: type | None = None  # attrs class for the recipe section named like the backend
    description: str = ""


@frozen(kw_only=True)
class SchedulerInfo:
    """A scheduler a plugin provides (``bench run --scheduler NAME``)."""

    name: str
    options_type: type | None = None
    description: str = ""


@frozen(kw_only=True)
class LoadgenInfo:
    """A load generator a plugin provides (``bench run --load NAME``)."""

    name: str
    options_type: type | None = None
    description: str = ""


# --------------------------------------------------------------------------- the resolved recipe


@frozen(kw_only=True)
class ModelSpec:
    """The model under test. ``path`` is what the engine loads; ``name`` is what clients ask for."""

    name: str
    path: str
    tokenizer: str | None = None  # defaults to ``path``
    create: str | None = None  # "tiny": build a tiny random-weight model at ``path`` if missing

    @property
    def tokenizer_path(self) -> str:
        return self.tokenizer or self.path


@frozen(kw_only=True)
class LoadPoint:
    """One measurement: a concurrency (closed loop) or a request rate (open loop), ISL/OSL."""

    index: int
    concurrency: int | None = None
    request_rate: float | None = None
    isl: int = 128
    osl: int = 64
    num_requests: int | None = None
    duration_s: float | None = None
    warmup_requests: int = 0
    scenario: str | None = None  # load-generator specific (mlperf: Offline, Server, Interactive)

    @property
    def label(self) -> str:
        """``c16``, ``r2.5``, ``server-r16``, ``offline``: unique within a sweep."""
        if self.concurrency is not None:
            base = f"c{self.concurrency}"
        elif self.request_rate is not None:
            base = f"r{self.request_rate:g}"
        else:
            return self.scenario.lower() if self.scenario else f"p{self.index}"
        return f"{self.scenario.lower()}-{base}" if self.scenario else base


@frozen(kw_only=True)
class RunSpec:
    """A recipe after loading, validation, overrides and plugin-option structuring."""

    name: str
    backend: str
    scheduler: str
    load: str
    model: ModelSpec
    points: tuple[LoadPoint, ...] = field(converter=_tuple)
    run_dir: Path
    options: Mapping[str, Any] = field(converter=_frozen_map)  # plugin name -> options object
    ready_timeout_s: float = 600.0
    stop_grace_s: float = 10.0
    allow_invalid: bool = False
    validity: "ValidityGates" = field(factory=lambda: ValidityGates())
    deployment: str = "default"  # name of this deployment when the recipe sweeps deployments
    recipe_path: Path | None = None
    raw: Mapping[str, Any] = field(factory=dict, converter=_frozen_map, repr=False, eq=False)

    def options_for(self, plugin: str) -> Any:
        """The structured options object of ``plugin``'s recipe section (None if it has none)."""
        return self.options.get(plugin)


@frozen(kw_only=True)
class ValidityGates:
    """Thresholds under which a load point is reported invalid."""

    max_failed_fraction: float = 0.01
    min_osl_fraction: float = 0.9  # mean output length must be >= this fraction of the asked OSL


# --------------------------------------------------------------------------- allocation


@frozen(kw_only=True)
class Node:
    """One node of an allocation: hostname, the address servers bind/are reached on, GPU count."""

    name: str
    address: str
    gpus: int = 0


@frozen(kw_only=True)
class Allocation:
    """What a scheduler hands out: the nodes a deployment runs on."""

    scheduler: str
    nodes: tuple[Node, ...] = field(converter=_tuple)
    job_id: str | None = None
    info: Mapping[str, Any] = field(factory=dict, converter=_frozen_map)

    @property
    def gpus_per_node(self) -> int:
        return min((n.gpus for n in self.nodes), default=0)


# --------------------------------------------------------------------------- processes


@frozen(kw_only=True)
class FileSpec:
    """A file a backend generates into the run directory (engine config, server config)."""

    path: str  # relative to the run directory
    content: str


@frozen(kw_only=True)
class ProcessSpec:
    """Everything a launcher needs to start one server process (or one multi-task MPI job).

    ``nodes`` are indices into ``Allocation.nodes``. ``gpus`` are the GPU ids the process uses on
    each of its nodes; with ``ntasks_per_node > 1`` they are split evenly between the tasks of a
    node, in order. Backends never start processes themselves: the scheduler's launcher does.
    """

    name: str  # unique in the run, e.g. "decode-0"; also the log file's name
    role: str  # e.g. "frontend", "prefill", "decode", "etcd"
    argv: tuple[str, ...] = field(converter=_tuple)
    env: Mapping[str, str] = field(factory=dict, converter=_frozen_map)
    nodes: tuple[int, ...] = field(default=(0,), converter=_tuple)
    ntasks_per_node: int = 1
    gpus: tuple[int, ...] = field(default=(), converter=_tuple)
    mpi: str | None = None  # srun --mpi value (e.g. "pmix") for multi-task jobs
    ports: tuple[int, ...] = field(default=(), converter=_tuple)  # ports it listens on (the map)
    container_image: str | None = None
    container_mounts: tuple[str, ...] = field(default=(), converter=_tuple)
    container_name: str | None = None
    workdir: str | None = None
    secret_env: tuple[str, ...] = field(default=(), converter=_tuple)  # names passed through, never rendered

    @property
    def ntasks(self) -> int:
        return self.ntasks_per_node * len(self.nodes)

    def gpus_of_task(self, local_task: int) -> tuple[int, ...]:
        """GPU ids seen by the ``local_task``-th task on a node."""
        if not self.gpus or self.ntasks_per_node <= 1:
            return self.gpus
        per = len(self.gpus) // self.ntasks_per_node
        return self.gpus[local_task * per : (local_task + 1) * per]


@frozen(kw_only=True)
class ServerHandle:
    """A started (or, in a plan, planned) process as the backend sees it."""

    spec: ProcessSpec
    log_path: Path


@frozen(kw_only=True)
class Endpoint:
    """Where load goes: an OpenAI-compatible base URL and what stands behind it."""

    url: str  # e.g. "http://10.0.0.11:8000"
    model: str
    role: str = "frontend"
    gpus: int = 0  # GPUs serving behind this endpoint (for per-GPU figures)
    server: str | None = None  # ProcessSpec.name of the process answering on it


@frozen(kw_only=True)
class ServerSet:
    """What ``bench_launch_servers`` returns: the processes of a deployment and its planned endpoints."""

    backend: str
    servers: tuple[ServerHandle, ...] = field(converter=_tuple)
    endpoints: tuple[Endpoint, ...] = field(converter=_tuple)  # planned; verified by discovery
    files: tuple[FileSpec, ...] = field(default=(), converter=_tuple)
    total_gpus: int = 0
    info: Mapping[str, Any] = field(factory=dict, converter=_frozen_map)

    def by_role(self, role: str) -> tuple[ServerHandle, ...]:
        return tuple(s for s in self.servers if s.spec.role == role)


# --------------------------------------------------------------------------- measurements


@frozen(kw_only=True)
class Stat:
    """Distribution of one metric, in the unit its name says (milliseconds for latencies)."""

    mean: float | None = None
    min: float | None = None
    max: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    std: float | None = None


@frozen(kw_only=True)
class Metrics:
    """benchstack's normalised metrics of one load point. Latencies in ms, rates per second."""

    duration_s: float | None = None
    requests_sent: int = 0
    requests_completed: int = 0
    requests_failed: int = 0
    request_throughput: float | None = None
    output_token_throughput: float | None = None
    total_token_throughput: float | None = None
    ttft_ms: Stat = field(factory=Stat)
    itl_ms: Stat = field(factory=Stat)  # inter-token latency (TPOT) per request, ms
    e2e_ms: Stat = field(factory=Stat)
    input_tokens: Stat = field(factory=Stat)
    output_tokens: Stat = field(factory=Stat)


@frozen(kw_only=True)
class Validity:
    valid: bool = True
    reasons: tuple[str, ...] = field(default=(), converter=_tuple)


@frozen(kw_only=True)
class LoadResult:
    """What a load generator returns for one point: metrics, its own verdict, its artifacts."""

    point: LoadPoint
    tool: str
    metrics: Metrics
    tool_validity: Validity | None = None  # the tool's own verdict (e.g. MLPerf VALID/INVALID)
    artifacts: tuple[str, ...] = field(default=(), converter=_tuple)  # paths relative to the run dir
    command: tuple[str, ...] = field(default=(), converter=_tuple)
    extra: Mapping[str, Any] = field(factory=dict, converter=_frozen_map)  # tool-specific numbers


@frozen(kw_only=True)
class Collected:
    """What a plugin adds at ``bench_collect``: metadata for results.json and extra artifacts."""

    plugin: str
    metadata: Mapping[str, Any] = field(factory=dict, converter=_frozen_map)
    artifacts: tuple[str, ...] = field(default=(), converter=_tuple)
