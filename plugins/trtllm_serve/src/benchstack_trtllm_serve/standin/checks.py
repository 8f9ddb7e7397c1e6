"""Start-up checks trtllm-serve makes before it serves: model directory, MPI world, GPUs.

Facts used (TensorRT-LLM 1.2 line):

- ``llm_args.get_model_format``: a TensorRT engine directory has a ``config.json`` with both
  ``pretrained_config`` and ``build_config``; a TRT-LLM checkpoint has ``architecture`` and
  ``dtype``; anything else is a Hugging Face checkpoint. A missing ``config.json`` fails with
  "Failed to infer model format because no config.json exists in ...".
- ``TrtLlmArgs._load_config_from_engine``: ``tp_size X is not consistent with the engine's tp_size
  Y`` unless the CLI value is 1 or equal; the engine's mapping then wins.
- ``mpi_session.MpiCommSession``: under MPI, ``n_workers must be equal to the number of processes
  in MPI, got N vs W``; ``trtllm-llmapi-launch`` hands rank 0 the world size in ``tllm_mpi_size``
  (with ``TLLM_SPAWN_PROXY_PROCESS=1``) after stripping the MPI variables.
- ``llm.py``: ``Only N GPUs are available, but M are required.`` when the node has fewer devices
  than ``world_size_per_node``; ``serve.get_llm_args``: "No GPU devices found on the node" when
  ``--gpus_per_node`` is not given and no device is visible.
- ``mapping.Mapping``: ``moe_tp_size * moe_ep_size * moe_cluster_size`` must equal ``tp_size``.
- A single process with ``tp*pp*cp > gpus_per_node`` passes those checks in TensorRT-LLM but puts
  two ranks on one GPU (rank % gpus_per_node), which NCCL refuses; the stand-in refuses at once.

This machine has no GPU: the device count is the number of entries of ``CUDA_VISIBLE_DEVICES``
when it is set (empty means none), else ``TRTLLM_STANDIN_NUM_GPUS`` (default 8).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional


class StartupError(Exception):
    """trtllm-serve would stop here; ``exc_type`` is the exception class it would raise."""

    def __init__(self, message: str, exc_type: str = "ValueError"):
        super().__init__(message)
        self.exc_type = exc_type


#: World-size variables, most preferred first (the brief's order; TensorRT-LLM's own launcher
#: reads SLURM_NTASKS before OMPI_COMM_WORLD_SIZE, which agree under a normal srun/mpirun).
WORLD_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS")
RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID")


def _int_env(env: Mapping[str, str], names: tuple) -> Optional[int]:
    for name in names:
        value = env.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                continue
    return None


def mpi_world_size(env: Mapping[str, str] = os.environ) -> int:
    """The launched world: ``tllm_mpi_size`` under trtllm-llmapi-launch, else the MPI/Slurm vars."""
    if env.get("TLLM_SPAWN_PROXY_PROCESS") == "1" and env.get("tllm_mpi_size"):
        return int(env["tllm_mpi_size"])
    return _int_env(env, WORLD_SIZE_VARS) or 1


def mpi_rank(env: Mapping[str, str] = os.environ) -> int:
    """This process's global rank (0 without MPI)."""
    return _int_env(env, RANK_VARS) or 0


def visible_gpus(env: Mapping[str, str] = os.environ) -> int:
    """Simulated ``torch.cuda.device_count()`` (see the module docstring)."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    return int(env.get("TRTLLM_STANDIN_NUM_GPUS", "8"))


@dataclass(frozen=True)
class ModelInfo:
    """What the model directory is: ``hf``, ``trtllm_ckpt`` or ``engine``, with its config."""

    path: Path
    fmt: str
    config: dict

    @property
    def served_name(self) -> str:
        # OpenAIServer: the directory's base name when MODEL is an existing directory
        return self.path.name


def inspect_model(model: str, backend: str) -> ModelInfo:
    """Check MODEL as trtllm-serve would load it; raise :class:`StartupError` if it cannot."""
    path = Path(model)
    if not path.is_dir():
        raise StartupError(
            f"{model} is not a local folder and is not a valid model identifier listed on "
            "'https://huggingface.co/models' (the stand-in has no Hub access; give a local "
            "directory with a config.json)", "OSError")
    config_file = path / "config.json"
    if not config_file.is_file():
        if backend == "tensorrt" and (path / "rank0.engine").is_file():
            return ModelInfo(path, "engine", {})
        raise StartupError(f"Failed to infer model format because no config.json exists in {model}")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise StartupError(f"Failed to load config.json: {e}") from e
    if not isinstance(config, dict):
        raise StartupError(f"{config_file} is not a JSON object")
    if "pretrained_config" in config and "build_config" in config:
        fmt = "engine"
    elif (path / "rank0.engine").is_file():
        fmt = "engine"
    elif "architecture" in config and "dtype" in config:
        fmt = "trtllm_ckpt"
    else:
        fmt = "hf"
    if backend == "tensorrt" and fmt != "engine" \
            and os.environ.get("TRTLLM_STANDIN_ALLOW_TRT_BUILD") != "1":
        raise StartupError(
            f"--backend tensorrt needs a TensorRT engine directory (config.json with "
            f"pretrained_config and build_config, or rank0.engine); {model} is a "
            f"{'TensorRT-LLM checkpoint' if fmt == 'trtllm_ckpt' else 'Hugging Face checkpoint'}. "
            "TensorRT-LLM would build an engine here; the stand-in cannot (set "
            "TRTLLM_STANDIN_ALLOW_TRT_BUILD=1 to pretend it did)")
    return ModelInfo(path, fmt, config)


def engine_mapping(info: ModelInfo) -> dict:
    """``pretrained_config.mapping`` of an engine (empty for other formats)."""
    pretrained = info.config.get("pretrained_config") or {}
    mapping = pretrained.get("mapping") if isinstance(pretrained, dict) else None
    return mapping if isinstance(mapping, dict) else {}


def resolve_parallelism(opts: dict, info: ModelInfo) -> dict:
    """tp/pp/cp after an engine's mapping is applied (CLI values must be 1 or agree)."""
    sizes = {"tp": int(opts.get("tensor_parallel_size") or 1),
             "pp": int(opts.get("pipeline_parallel_size") or 1),
             "cp": int(opts.get("context_parallel_size") or 1)}
    mapping = engine_mapping(info) if info.fmt == "engine" else {}
    for key in sizes:
        engine_value = mapping.get(f"{key}_size")
        if engine_value is None:
            continue
        if sizes[key] not in (1, int(engine_value)):
            raise StartupError(f"{key}_size {sizes[key]} is not consistent with the engine's "
                               f"{key}_size {engine_value}")
        sizes[key] = int(engine_value)
    return sizes


def check_moe_mapping(opts: dict, tp: int) -> None:
    ep = opts.get("moe_expert_parallel_size")
    mtp = opts.get("moe_tensor_parallel_size")
    cluster = opts.get("moe_cluster_parallel_size")
    ep = -1 if ep is None else int(ep)
    mtp = -1 if mtp is None else int(mtp)
    cluster = 1 if cluster in (None, -1) else int(cluster)
    if ep == -1 and mtp == -1:
        return
    if ep == -1:
        ep = tp // (mtp * cluster) if mtp * cluster else 0
    if mtp == -1:
        mtp = tp // (ep * cluster) if ep * cluster else 0
    if mtp * ep * cluster != tp:
        raise StartupError(f"tp_size must equal to moe_tp_size * moe_ep_size * moe_cluster_size, "
                           f"but got {tp} != {mtp} * {ep} * {cluster}")


def check_world(world_size: int, gpus_per_node: Optional[int],
                env: Mapping[str, str] = os.environ) -> int:
    """Check the instance's world size against MPI and GPUs; return gpus_per_node."""
    devices = visible_gpus(env)
    if gpus_per_node is None:
        gpus_per_node = devices
        if gpus_per_node == 0:
            raise StartupError("No GPU devices found on the node")
    launched = mpi_world_size(env)
    if launched > 1 and launched != world_size:
        raise StartupError(f"n_workers must be equal to the number of processes in MPI, got "
                           f"{world_size} vs {launched}")
    if world_size > 1:
        nodes = math.ceil(world_size / max(1, gpus_per_node))
        per_node = world_size // nodes
        # llm.py checks the devices rank 0 sees against the ranks one node hosts (under srun
        # with one GPU per task this fails in TensorRT-LLM too); a single process spawns every
        # rank on this node, so there it needs all of them
        needed = per_node if launched > 1 else world_size
        if devices < needed:
            raise StartupError(f"Only {devices} GPUs are available, but {world_size} are "
                               "required.", "RuntimeError")
        if launched == 1 and world_size > gpus_per_node:
            # TensorRT-LLM gets past its checks here, spawns every rank locally, maps rank r to
            # GPU r % gpus_per_node and then fails in NCCL: the stand-in fails up front
            raise StartupError(
                f"NCCL error: invalid usage: Duplicate GPU detected: a single-process launch "
                f"spawns all {world_size} ranks on this node, but gpus_per_node is "
                f"{gpus_per_node} (launch the ranks through MPI across nodes instead)",
                "RuntimeError")
    return gpus_per_node
