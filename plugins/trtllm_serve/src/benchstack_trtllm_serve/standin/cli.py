"""The ``trtllm-serve`` command line, as ``tensorrt_llm/commands/serve.py`` defines it (click).

``trtllm-serve MODEL [OPTIONS]`` (the ``serve`` command is the default) and
``trtllm-serve disaggregated -c CONFIG [-t SECONDS] [-r SECONDS]``. Option names, aliases and
defaults are TensorRT-LLM's; unknown options fail as click makes them fail (usage on stderr,
exit code 2). Input errors TensorRT-LLM raises as exceptions end with the exception's last
traceback line on stderr and exit code 1; a disaggregated server whose workers never become
healthy exits 3, as uvicorn does when application start-up fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import click

from . import checks, log, schema
from .engine import Engine, EngineLimits, Timing
from .log import logger

_EXIT_STARTUP_FAILED = 3  # uvicorn's exit status when the lifespan start-up raises


class ChoiceWithAlias(click.Choice):
    """click.Choice that maps aliases first (``--backend trt`` means ``tensorrt``)."""

    def __init__(self, choices: Sequence[str], aliases: dict):
        super().__init__(choices)
        self.aliases = aliases

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        return super().convert(self.aliases.get(value, value), param, ctx)


class DefaultGroup(click.Group):
    """A first argument that is not a sub-command means ``serve`` (as TensorRT-LLM's group)."""

    def resolve_command(self, ctx: click.Context, args: list) -> Any:
        if args and args[0] not in self.commands:
            return "serve", self.commands["serve"], args
        return super().resolve_command(ctx, args)


def _fail(error: Exception, exc_type: Optional[str] = None) -> None:
    log.fatal(exc_type or getattr(error, "exc_type", type(error).__name__), str(error))
    sys.exit(1)


def _load_seconds() -> float:
    try:
        return float(os.environ.get("TRTLLM_STANDIN_LOAD_SECONDS", "0.5"))
    except ValueError:
        return 0.5


def _block_non_leader(rank: int) -> None:
    """Non-zero MPI ranks hold their (simulated) GPUs until they are terminated."""
    logger.info(f"rank {rank} is a worker rank; rank 0 serves HTTP. Waiting for termination.")

    async def wait() -> None:
        import signal
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    asyncio.run(wait())


def _merge_llm_args(cli: dict, extra: dict) -> dict:
    """``update_llm_args_with_extra_dict``: YAML wins, ``kv_cache_config`` is deep-merged."""
    merged = dict(cli) | {k: v for k, v in extra.items() if k != "kv_cache_config"}
    kv = dict(cli.get("kv_cache_config") or {})
    kv.update(extra.get("kv_cache_config") or {})
    merged["kv_cache_config"] = kv
    return merged


def _limits(args: dict, backend: str, info: checks.ModelInfo) -> EngineLimits:
    build = {}
    if info.fmt == "engine":  # an engine's build_config bounds the runtime limits
        build = info.config.get("build_config") or {}
    max_seq_len = args.get("max_seq_len") or build.get("max_seq_len") \
        or info.config.get("max_position_embeddings") or 2048
    max_batch = min(int(args.get("max_batch_size") or 2048),
                    int(build.get("max_batch_size") or 1 << 30))
    max_tokens = min(int(args.get("max_num_tokens") or 8192),
                     int(build.get("max_num_tokens") or 1 << 30))
    ctc = args.get("cache_transceiver_config") or {}
    kv = args.get("kv_cache_config") or {}
    iter_stats = bool(args.get("enable_iter_perf_stats")) if backend == "pytorch" else True
    return EngineLimits(
        backend=backend, max_batch_size=max_batch, max_num_tokens=max_tokens,
        max_seq_len=int(max_seq_len), enable_chunked_prefill=bool(args.get("enable_chunked_prefill")),
        tokens_per_block=int(kv.get("tokens_per_block") or 32),
        stream_interval=int(args.get("stream_interval") or 1), iter_stats=iter_stats,
        max_stats_len=int(args.get("max_stats_len") or args.get("iter_stats_max_iterations")
                          or 1000),
        perf_metrics_max_requests=int(args.get("perf_metrics_max_requests") or 0)
        if args.get("return_perf_metrics") else 0,
        disagg_capable=bool(ctc.get("backend")))


@click.command("serve")
@click.argument("model", type=str)
@click.option("--tokenizer", type=str, default=None, help="Path | Name of the tokenizer.")
@click.option("--custom_tokenizer", type=str, default=None, help="Custom tokenizer type.")
@click.option("--host", type=str, default="localhost", help="Hostname of the server.")
@click.option("--port", type=int, default=8000, help="Port of the server.")
@click.option("--backend", type=ChoiceWithAlias(["pytorch", "tensorrt", "_autodeploy"],
                                                {"trt": "tensorrt"}),
              default="pytorch", help="The backend to use to serve the model.")
@click.option("--custom_module_dirs", type=click.Path(exists=True, readable=True,
                                                      path_type=Path, resolve_path=True),
              default=None, multiple=True, help="Paths to custom module directories to import.")
@click.option("--log_level", type=click.Choice(log.SEVERITIES), default="info",
              help="The logging level.")
@click.option("--max_beam_width", type=int, default=1, help="Maximum number of beams.")
@click.option("--max_batch_size", type=int, default=2048,
              help="Maximum number of requests that the engine can schedule.")
@click.option("--max_num_tokens", type=int, default=8192,
              help="Maximum number of batched input tokens after padding is removed.")
@click.option("--max_seq_len", type=int, default=None,
              help="Maximum total length of one request, including prompt and outputs.")
@click.option("--tensor_parallel_size", "--tp_size", type=int, default=1,
              help="Tensor parallelism size.")
@click.option("--pipeline_parallel_size", "--pp_size", type=int, default=1,
              help="Pipeline parallelism size.")
@click.option("--context_parallel_size", "--cp_size", type=int, default=1,
              help="Context parallelism size.")
@click.option("--moe_expert_parallel_size", "--ep_size", type=int, default=None,
              help="expert parallelism size")
@click.option("--moe_cluster_parallel_size", "--cluster_size", type=int, default=None,
              help="expert cluster parallelism size")
@click.option("--gpus_per_node", type=int, default=None,
              help="Number of GPUs per node. Detected automatically if not given.")
@click.option("--free_gpu_memory_fraction", "--kv_cache_free_gpu_memory_fraction", type=float,
              default=0.9, help="Free GPU memory fraction reserved for KV Cache.")
@click.option("--num_postprocess_workers", type=int, default=0,
              help="Number of workers to postprocess raw responses.")
@click.option("--trust_remote_code", is_flag=True, default=False, help="Flag for HF transformers.")
@click.option("--revision", type=str, default=None, help="HuggingFace model revision.")
@click.option("--config", "--extra_llm_api_options", "extra_llm_api_options", type=str,
              default=None, help="Path to a YAML file that overwrites the parameters specified "
              "by trtllm-serve. Can be specified as either --config or --extra_llm_api_options.")
@click.option("--reasoning_parser", type=str, default=None,
              help="Specify the parser for reasoning models.")
@click.option("--tool_parser", type=str, default=None, help="Specify the parser for tool models.")
@click.option("--metadata_server_config_file", type=str, default=None,
              help="Path to metadata server config file")
@click.option("--server_role", type=str, default=None,
              help="Server role. Specify this value only if running in disaggregated mode.")
@click.option("--fail_fast_on_attention_window_too_large", is_flag=True, default=False,
              help="Exit when the attention window cannot fit a single sequence in the KV cache.")
@click.option("--otlp_traces_endpoint", type=str, default=None,
              help="Target URL to which OpenTelemetry traces will be sent.")
@click.option("--disagg_cluster_uri", type=str, default=None,
              help="URI of the disaggregated cluster.")
@click.option("--enable_chunked_prefill", is_flag=True, default=False,
              help="Enable chunked prefill")
@click.option("--media_io_kwargs", type=str, default=None, help="Keyword arguments for media I/O.")
@click.option("--chat_template", type=str, default=None, help="Specify a custom chat template.")
def serve(model: str, **opts: Any) -> None:
    """Running an OpenAI API compatible server

    MODEL: model name | HF checkpoint path | TensorRT engine path
    """
    logger.set_level(opts["log_level"])
    backend = opts["backend"]
    cli_args = {
        "model": model, "tokenizer": opts["tokenizer"], "backend": backend,
        "max_beam_width": opts["max_beam_width"], "max_batch_size": opts["max_batch_size"],
        "max_num_tokens": opts["max_num_tokens"], "max_seq_len": opts["max_seq_len"],
        "tensor_parallel_size": opts["tensor_parallel_size"],
        "pipeline_parallel_size": opts["pipeline_parallel_size"],
        "context_parallel_size": opts["context_parallel_size"],
        "moe_expert_parallel_size": opts["moe_expert_parallel_size"],
        "gpus_per_node": opts["gpus_per_node"],
        "kv_cache_config": {"free_gpu_memory_fraction": opts["free_gpu_memory_fraction"]},
        "enable_chunked_prefill": opts["enable_chunked_prefill"],
    }
    extra: dict = {}
    try:
        if opts["gpus_per_node"] is None and checks.visible_gpus() == 0:
            raise checks.StartupError("No GPU devices found on the node")
        if opts["extra_llm_api_options"] is not None:
            extra = schema.load_yaml_mapping(opts["extra_llm_api_options"])
        if opts["media_io_kwargs"] is not None:
            try:
                json.loads(opts["media_io_kwargs"])
            except json.JSONDecodeError as e:
                raise checks.StartupError(f"Invalid JSON for media_io_kwargs: {e}") from e
    except FileNotFoundError as e:
        _fail(e)
    except (schema.ConfigError, checks.StartupError) as e:
        _fail(e)
    disagg_cluster = extra.pop("disagg_cluster", None)  # popped by serve before LLM(**args)
    args = _merge_llm_args(cli_args, extra)
    backend = schema.normalize_backend(args.get("backend"))  # a YAML backend: wins
    errors = schema.validate_llm_api_options(extra, backend=backend)
    if errors:
        kind = {"tensorrt": "TrtLlmArgs", "pytorch": "TorchLlmArgs"}.get(backend, "LlmArgs")
        noun = "error" if len(errors) == 1 else "errors"
        logger.error(f"Failed to parse the arguments for the LLM constructor: {errors[0]}")
        _fail(ValueError(f"{len(errors)} validation {noun} for {kind}\n" + "\n".join(errors)),
              "pydantic_core._pydantic_core.ValidationError")
    if (opts["metadata_server_config_file"] or disagg_cluster or opts["disagg_cluster_uri"]):
        role = (opts["server_role"] or "").upper()
        if role not in ("CONTEXT", "GENERATION", "MM_ENCODER"):
            _fail(KeyError(opts["server_role"]) if opts["server_role"] else
                  AssertionError("server_role is required when metadata_server_cfg or "
                                 "disagg_cluster_config is provided"))
    try:
        sock = _bind_and_check(model, backend, args, opts)
    except (checks.StartupError, RuntimeError) as e:
        _fail(e)
    info, tokenizer_dir, limits = sock[1], sock[2], sock[3]
    _run_worker(sock[0], opts, info, tokenizer_dir, limits)


def _bind_and_check(model: str, backend: str, args: dict, opts: dict) -> tuple:
    rank = checks.mpi_rank()
    info = checks.inspect_model(model, backend)
    sizes = checks.resolve_parallelism(args, info)
    world = sizes["tp"] * sizes["pp"] * sizes["cp"]
    checks.check_moe_mapping(args, sizes["tp"])
    checks.check_world(world, args.get("gpus_per_node"))
    if rank != 0:
        _block_non_leader(rank)
        sys.exit(0)
    from .server import bind  # aiohttp is imported only once the checks passed

    sock = bind(opts["host"], opts["port"])
    limits = _limits(args, backend, info)
    logger.info(f"Using LLM with {'PyTorch' if backend == 'pytorch' else backend} backend")
    if world > 1:
        logger.info(f"start MpiSession with {world} workers")
    return sock, info, opts["tokenizer"] or str(info.path), limits


def _run_worker(sock: Any, opts: dict, info: checks.ModelInfo, tokenizer_dir: str,
                limits: EngineLimits) -> None:
    from .server import WorkerServer, serve as serve_app
    from .tokenizer import load_tokenizer

    engine = Engine(limits, Timing.from_env())
    worker = WorkerServer(info.served_name, engine, load_tokenizer(tokenizer_dir),
                          opts["server_role"])
    url = f"http://{opts['host']}:{opts['port']}"
    logger.info(f"Loading model {info.path} ({info.fmt}); simulated load takes "
                f"{_load_seconds()} s")
    asyncio.run(serve_app(worker.app(), sock, url, _load_seconds()))


@click.command("disaggregated")
@click.option("-c", "--config_file", type=str, default=None,
              help="Specific option for disaggregated mode.")
@click.option("-m", "--metadata_server_config_file", type=str, default=None,
              help="Path to metadata server config file")
@click.option("-t", "--server_start_timeout", type=int, default=180, help="Server start timeout")
@click.option("-r", "--request_timeout", type=int, default=180, help="Request timeout")
@click.option("-l", "--log_level", type=click.Choice(log.SEVERITIES), default="info",
              help="The logging level.")
@click.option("--metrics-log-interval", type=int, default=0,
              help="The interval of logging metrics in seconds. 0 disables metrics logging.")
def disaggregated(config_file: Optional[str], metadata_server_config_file: Optional[str],
                  server_start_timeout: int, request_timeout: int, log_level: str,
                  metrics_log_interval: int) -> None:
    """Running server in disaggregated mode"""
    from .disagg import DisaggServer
    from .server import bind, serve as serve_app

    logger.set_level(log_level)
    if config_file is None:
        _fail(TypeError("expected str, bytes or os.PathLike object, not NoneType"))
    try:
        config = schema.load_yaml_mapping(config_file)
        schema.check_disagg_config(
            config, gen_only=os.environ.get("TRTLLM_DISAGG_BENCHMARK_GEN_ONLY") == "1")
    except FileNotFoundError as e:
        _fail(e)
    except schema.ConfigError as e:
        _fail(ValueError("\n".join(e.errors)))
    host, port = config.get("hostname", "localhost"), int(config.get("port", 8000))
    try:
        sock = bind(host, port)
    except RuntimeError as e:
        _fail(e)
    server = DisaggServer(config, request_timeout, server_start_timeout)
    try:
        asyncio.run(serve_app(server.app(), sock, f"http://{host}:{port}", 0.0,
                              before_listen=server.wait_for_servers))
    except asyncio.TimeoutError:
        log.uvicorn("Traceback (most recent call last):", "ERROR")
        log.uvicorn("TimeoutError: Timeout waiting for context and generation servers to be "
                    "ready", "ERROR")
        log.uvicorn("Application startup failed. Exiting.", "ERROR")
        sys.exit(_EXIT_STARTUP_FAILED)


def _unsupported(name: str) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True,
                                           "allow_extra_args": True})
    def command() -> None:
        _fail(NotImplementedError(f"trtllm-serve {name} is not simulated by the stand-in"))
    return command


main_group = DefaultGroup(
    name="trtllm-serve",
    commands={"serve": serve, "disaggregated": disaggregated,
              "grpc": _unsupported("grpc"),
              "disaggregated_mpi_worker": _unsupported("disaggregated_mpi_worker"),
              "mm_embedding_serve": _unsupported("mm_embedding_serve")})


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point: ``trtllm-serve`` (returns the process exit status)."""
    log.banner()
    try:
        main_group.main(args=list(argv) if argv is not None else None,
                        prog_name="trtllm-serve", standalone_mode=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0
