"""TensorRT-LLM's LLM-API option schema, written down as data.

Transcribed by hand (no code copied) from ``tensorrt_llm/llmapi/llm_args.py`` of the TensorRT-LLM
1.2 line: the last line whose ``llm_args.py`` still has both ``TorchLlmArgs`` (PyTorch backend)
and ``TrtLlmArgs`` (TensorRT-engine backend), whose ``MTPDecodingConfig`` still carries
``num_nextn_predict_layers``, and whose ``TorchLlmArgs`` still has ``sampler_type``.
Every model there derives from ``StrictBaseModel`` (pydantic ``extra="forbid"``), so an unknown
key anywhere is an error. Models whose source was not transcribed (``build_config``,
``quant_config``, ``lora_config``, ``decoding_config``...) are ``OPAQUE``: their keys are not
checked. :mod:`.schema` holds the validators; this module is data only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

#: Where the facts in this module come from.
SOURCE = "NVIDIA/TensorRT-LLM tensorrt_llm/llmapi/llm_args.py (1.2 line, TorchLlmArgs + TrtLlmArgs)"


@dataclass(frozen=True)
class FieldSpec:
    """One pydantic field: its type tag and the constraints the validators check.

    ``type`` is one of ``bool int float str dict list any model union``; ``model`` names an entry
    of :data:`MODELS`, ``union`` an entry of :data:`UNIONS`; ``item`` is the element type of a
    list. ``optional`` means ``None`` is accepted.
    """

    type: str
    optional: bool = False
    required: bool = False
    choices: Optional[tuple] = None
    case_insensitive: bool = False
    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    item: Optional[str] = None
    model: Optional[str] = None
    union: Optional[str] = None


@dataclass(frozen=True)
class UnionSpec:
    """A pydantic discriminated union: the discriminator key and, per tag, model and backends."""

    discriminator: str
    variants: Mapping[str, str]
    #: tag -> backends whose ``supports_backend`` accepts it (absent: every backend)
    backends: Mapping[str, frozenset]


def _f(type_: str, opt: bool = False, **kw) -> FieldSpec:
    return FieldSpec(type_, optional=opt, **kw)


BOOL = _f("bool")
INT = _f("int")
INT_OPT = _f("int", True)
FLOAT = _f("float")
FLOAT_OPT = _f("float", True)
STR = _f("str")
STR_OPT = _f("str", True)
DICT_OPT = _f("dict", True)
ANY = _f("any", True)
INTS_OPT = _f("list", True, item="int")


def _enum(*choices: str, opt: bool = False, ci: bool = False) -> FieldSpec:
    return _f("str", opt, choices=tuple(choices), case_insensitive=ci)


def _model(name: str, opt: bool = False) -> FieldSpec:
    return _f("model", opt, model=name)


PYTORCH = "pytorch"
TENSORRT = "tensorrt"
AUTODEPLOY = "_autodeploy"
ALL_BACKENDS = frozenset({PYTORCH, TENSORRT, AUTODEPLOY})
TORCHISH = frozenset({PYTORCH, AUTODEPLOY})

# --- nested configuration models -----------------------------------------------------------
MODELS: dict = {}

MODELS["KvCacheConfig"] = {
    "enable_block_reuse": BOOL,
    "max_tokens": INT_OPT,
    "max_attention_window": _f("list", True, item="int"),
    "sink_token_length": INT_OPT,
    "free_gpu_memory_fraction": _f("float", True, ge=0, le=1),
    "host_cache_size": INT_OPT,
    "onboard_blocks": BOOL,
    "cross_kv_cache_fraction": FLOAT_OPT,
    "secondary_offload_min_priority": INT_OPT,
    "event_buffer_max_size": INT,
    "attention_dp_events_gather_period_ms": INT,
    "enable_partial_reuse": BOOL,
    "copy_on_partial_reuse": BOOL,
    "use_uvm": BOOL,
    "max_gpu_total_bytes": _f("int", ge=0),
    "dtype": STR,  # "auto", "fp8" or a torch dtype name; PyTorch backend only
    "mamba_ssm_cache_dtype": _enum("auto", "float16", "bfloat16", "float32"),
    "tokens_per_block": INT,
    "use_kv_cache_manager_v2": BOOL,
    "max_util_for_resume": _f("float", ge=0, le=1),
}

MODELS["CacheTransceiverConfig"] = {
    "backend": _enum("DEFAULT", "UCX", "NIXL", "MOONCAKE", "MPI", opt=True),
    "transceiver_runtime": _enum("CPP", "PYTHON", opt=True),
    "max_tokens_in_buffer": INT_OPT,
    "kv_transfer_timeout_ms": _f("int", True, gt=0),
    "kv_transfer_sender_future_timeout_ms": _f("int", True, gt=0),
}

MODELS["CudaGraphConfig"] = {
    "batch_sizes": INTS_OPT,
    "max_batch_size": _f("int", ge=0),
    "enable_padding": BOOL,
}

MODELS["MoeConfig"] = {
    "backend": _enum("AUTO", "CUTLASS", "CUTEDSL", "WIDEEP", "TRTLLM", "DEEPGEMM", "VANILLA",
                     "TRITON"),
    "max_num_tokens": INT_OPT,
    "load_balancer": ANY,  # MoeLoadBalancerConfig, a dict, or a path to a YAML file
    "disable_finalize_fusion": BOOL,
    "use_low_precision_moe_combine": BOOL,
}

MODELS["Nvfp4GemmConfig"] = {
    "allowed_backends": _f("list", item="str"),
}

MODELS["AttentionDpConfig"] = {
    "enable_balance": BOOL,
    "timeout_iters": INT,
    "batching_wait_iters": INT,
}

MODELS["CpConfig"] = {
    "cp_type": _enum("ULYSSES", "STAR", "RING", "HELIX", ci=True),
    "tokens_per_block": INT_OPT,
    "use_nccl_for_alltoall": _f("bool", True),
    "fifo_version": INT_OPT,
    "cp_anchor_size": INT_OPT,
    "block_size": INT_OPT,
}

MODELS["DynamicBatchConfig"] = {
    "enable_batch_size_tuning": BOOL,
    "enable_max_num_tokens_tuning": BOOL,
    "dynamic_batch_moving_average_window": INT,
}

MODELS["SchedulerConfig"] = {
    "capacity_scheduler_policy": _enum("MAX_UTILIZATION", "GUARANTEED_NO_EVICT", "STATIC_BATCH"),
    "context_chunking_policy": _enum("FIRST_COME_FIRST_SERVED", "EQUAL_PROGRESS", opt=True),
    "dynamic_batch_config": _model("DynamicBatchConfig", True),
    "waiting_queue_policy": _enum("fcfs"),
}

MODELS["PeftCacheConfig"] = {
    name: INT for name in (
        "num_host_module_layer", "num_device_module_layer", "optimal_adapter_size",
        "max_adapter_size", "num_put_workers", "num_ensure_workers", "num_copy_streams",
        "max_pages_per_block_host", "max_pages_per_block_device", "host_cache_size")
} | {"device_cache_percent": FLOAT, "lora_prefetch_dir": STR_OPT}

MODELS["TorchCompileConfig"] = {
    "enable_fullgraph": BOOL,
    "enable_inductor": BOOL,
    "enable_piecewise_cuda_graph": BOOL,
    "capture_num_tokens": INTS_OPT,
    "enable_userbuffers": BOOL,
    "max_num_streams": _f("int", gt=0),
}

MODELS["KvCacheConnectorConfig"] = {
    "connector_module": _f("str", required=True),
    "connector_scheduler_class": _f("str", required=True),
    "connector_worker_class": _f("str", required=True),
}

MODELS["LayerwiseBenchmarksConfig"] = {
    "calibration_mode": _enum("NONE", "MARK", "COLLECT"),
    "calibration_file_path": STR_OPT,
    "calibration_layer_indices": INTS_OPT,
}

MODELS["RayPlacementConfig"] = {
    "defer_workers_init": BOOL,
    "placement_groups": _f("list", True),
    "placement_bundle_indices": _f("list", True),
    "per_worker_gpu_share": FLOAT_OPT,
}

MODELS["CalibConfig"] = {
    "device": _enum("cuda", "cpu"),
    "calib_dataset": STR,
    "calib_batches": INT,
    "calib_batch_size": INT,
    "calib_max_seq_length": INT,
    "random_seed": INT,
    "tokenizer_max_seq_length": INT,
}

MODELS["ExtendedRuntimePerfKnobConfig"] = {
    "multi_block_mode": BOOL,
    "enable_context_fmha_fp32_acc": BOOL,
    "cuda_graph_mode": BOOL,
    "cuda_graph_cache_size": INT,
}

# speculative_config: a union discriminated by decoding_type
_SPEC_BASE = {
    "max_draft_len": _f("int", True, ge=0),
    "max_total_draft_tokens": INT_OPT,
    "speculative_model": STR_OPT,
    "speculative_model_dir": STR_OPT,  # validation alias of speculative_model
    "max_concurrency": _f("int", True, ge=0),
    "draft_len_schedule": DICT_OPT,
    "load_format": STR_OPT,
    "acceptance_window": _f("int", True, ge=0),
    "acceptance_length_threshold": _f("float", True, ge=0),
    "allow_advanced_sampling": BOOL,
}
_EAGLE = _SPEC_BASE | {
    "eagle_choices": _f("any", True),  # list of lists, or its string form
    "greedy_sampling": _f("bool", True),
    "posterior_threshold": FLOAT_OPT,
    "use_dynamic_tree": _f("bool", True),
    "dynamic_tree_max_topK": INT_OPT,
    "num_eagle_layers": INT_OPT,
    "max_non_leaves_per_layer": INT_OPT,
    "eagle3_one_model": _f("bool", True),
    "eagle3_layers_to_capture": INTS_OPT,
    "eagle3_model_arch": _enum("llama3", "mistral_large3"),
}
MODELS["DraftTargetDecodingConfig"] = _SPEC_BASE | {"decoding_type": STR}
MODELS["EagleDecodingConfig"] = _EAGLE | {"decoding_type": STR}
MODELS["Eagle3DecodingConfig"] = _EAGLE | {"decoding_type": STR}
MODELS["LookaheadDecodingConfig"] = _SPEC_BASE | {
    "decoding_type": STR,
    "max_window_size": _f("int", gt=0),
    "max_ngram_size": _f("int", gt=0),
    "max_verification_set_size": _f("int", gt=0),
}
MODELS["MedusaDecodingConfig"] = _SPEC_BASE | {
    "decoding_type": STR, "medusa_choices": _f("list", True), "num_medusa_heads": INT_OPT}
MODELS["MTPDecodingConfig"] = _SPEC_BASE | {
    "decoding_type": STR,
    "num_nextn_predict_layers": _f("int", gt=0),
    "use_relaxed_acceptance_for_thinking": BOOL,
    "relaxed_topk": INT,
    "relaxed_delta": FLOAT,
    "use_mtp_vanilla": BOOL,
    "mtp_eagle_one_model": BOOL,
    "begin_thinking_phase_token": INT,
    "end_thinking_phase_token": INT,
}
MODELS["NGramDecodingConfig"] = _SPEC_BASE | {
    "decoding_type": STR,
    "max_matching_ngram_size": _f("int", gt=0),
    "is_keep_all": BOOL,
    "is_use_oldest": BOOL,
    "is_public_pool": BOOL,
}
MODELS["UserProvidedDecodingConfig"] = _SPEC_BASE | {
    "decoding_type": STR, "drafter": _f("any", required=True), "resource_manager": ANY}
MODELS["SaveHiddenStatesDecodingConfig"] = _SPEC_BASE | {
    "decoding_type": STR,
    "output_directory": _f("str", required=True),
    "write_interval": INT,
    "file_prefix": STR,
    "eagle3_layers_to_capture": INTS_OPT,
}
MODELS["PARDDecodingConfig"] = _SPEC_BASE | {"decoding_type": STR, "mask_token_id": INT_OPT}
MODELS["AutoDecodingConfig"] = _SPEC_BASE | {"decoding_type": STR}

# sparse_attention_config: a union discriminated by algorithm
_SPARSE_BASE = {"algorithm": STR, "seq_len_threshold": INT_OPT}
MODELS["RocketSparseAttentionConfig"] = _SPARSE_BASE | {
    "window_size": INT_OPT, "kernel_size": INT_OPT, "topr": _f("float", True), "topk": INT_OPT,
    "prompt_budget": INT_OPT, "page_size": INT_OPT,
    "kt_cache_dtype": _enum("bfloat16", "float8_e5m2", opt=True),
}
MODELS["DeepSeekSparseAttentionConfig"] = _SPARSE_BASE | {
    "index_n_heads": INT_OPT, "index_head_dim": INT_OPT, "index_topk": INT_OPT,
    "indexer_max_chunk_size": INT_OPT, "skip_indexer_for_short_seqs": BOOL,
}
MODELS["SkipSoftmaxAttentionConfig"] = _SPARSE_BASE | {"threshold_scale_factor": ANY}

UNIONS: dict = {
    "SpeculativeConfig": UnionSpec(
        discriminator="decoding_type",
        variants={
            "Draft_Target": "DraftTargetDecodingConfig",
            "Eagle": "EagleDecodingConfig",
            "Eagle3": "Eagle3DecodingConfig",
            "Lookahead": "LookaheadDecodingConfig",
            "Medusa": "MedusaDecodingConfig",
            "MTP": "MTPDecodingConfig",
            "NGram": "NGramDecodingConfig",
            "User_Provided": "UserProvidedDecodingConfig",
            "SaveState": "SaveHiddenStatesDecodingConfig",
            "PARD": "PARDDecodingConfig",
            "AUTO": "AutoDecodingConfig",
        },
        backends={
            "Draft_Target": TORCHISH,
            "Lookahead": frozenset({TENSORRT}),
            "Medusa": frozenset({TENSORRT}),
            "MTP": frozenset({PYTORCH}),
            "NGram": frozenset({PYTORCH}),
            "PARD": frozenset({PYTORCH}),
            "AUTO": frozenset({PYTORCH}),
            # TrtLlmArgs raises for Eagle3: "only supported on the PyTorch backend"
            "Eagle3": TORCHISH,
        },
    ),
    "SparseAttentionConfig": UnionSpec(
        discriminator="algorithm",
        variants={
            "rocket": "RocketSparseAttentionConfig",
            "dsa": "DeepSeekSparseAttentionConfig",
            "skip_softmax": "SkipSoftmaxAttentionConfig",
        },
        backends={tag: frozenset({PYTORCH}) for tag in ("rocket", "dsa", "skip_softmax")},
    ),
}

# --- top-level LLM-API options ---------------------------------------------------------------
#: BaseLlmArgs: fields common to every backend.
BASE_LLM_ARGS: dict = {
    "model": STR,
    "tokenizer": STR_OPT,
    "tokenizer_mode": _enum("auto", "slow"),
    "custom_tokenizer": STR_OPT,
    "skip_tokenizer_init": BOOL,
    "trust_remote_code": BOOL,
    "tensor_parallel_size": _f("int", gt=0),
    "dtype": STR,
    "revision": STR_OPT,
    "tokenizer_revision": STR_OPT,
    "model_kwargs": DICT_OPT,
    "pipeline_parallel_size": _f("int", gt=0),
    "context_parallel_size": _f("int", gt=0),
    "gpus_per_node": INT_OPT,
    "moe_cluster_parallel_size": INT_OPT,
    "moe_tensor_parallel_size": INT_OPT,
    "moe_expert_parallel_size": INT_OPT,
    "enable_attention_dp": BOOL,
    "enable_lm_head_tp_in_adp": BOOL,
    "pp_partition": INTS_OPT,
    "cp_config": _model("CpConfig", True),
    "load_format": _enum("auto", "dummy"),
    "enable_lora": BOOL,
    "lora_config": DICT_OPT,  # LoraConfig: opaque here
    "kv_cache_config": _model("KvCacheConfig"),
    "enable_chunked_prefill": BOOL,
    "guided_decoding_backend": _enum("xgrammar", "llguidance", opt=True),
    "batched_logits_processor": ANY,
    "iter_stats_max_iterations": INT_OPT,
    "request_stats_max_iterations": INT_OPT,
    "peft_cache_config": _model("PeftCacheConfig", True),
    "scheduler_config": _model("SchedulerConfig"),
    "cache_transceiver_config": _model("CacheTransceiverConfig", True),
    "sparse_attention_config": _f("union", True, union="SparseAttentionConfig"),
    "speculative_config": _f("union", True, union="SpeculativeConfig"),
    "max_batch_size": INT_OPT,
    "max_input_len": INT_OPT,
    "max_seq_len": INT_OPT,
    "max_beam_width": INT_OPT,
    "max_num_tokens": INT_OPT,
    "gather_generation_logits": BOOL,
    "num_postprocess_workers": INT,
    "postprocess_tokenizer_dir": STR_OPT,
    "reasoning_parser": STR_OPT,
    "decoding_config": ANY,  # deprecated, opaque
    "otlp_traces_endpoint": STR_OPT,
    "backend": STR_OPT,
    "return_perf_metrics": BOOL,
    "perf_metrics_max_requests": _f("int", ge=0),
    "orchestrator_type": _enum("rpc", "ray", opt=True),
    "env_overrides": DICT_OPT,
}

#: TorchLlmArgs: the PyTorch backend (``--backend pytorch``, the default).
TORCH_LLM_ARGS: dict = BASE_LLM_ARGS | {
    "garbage_collection_gen0_threshold": INT,
    "cuda_graph_config": _model("CudaGraphConfig", True),
    "attention_dp_config": _model("AttentionDpConfig", True),
    "disable_overlap_scheduler": BOOL,
    "moe_config": _model("MoeConfig"),
    "nvfp4_gemm_config": _model("Nvfp4GemmConfig"),
    "attn_backend": STR,
    "sampler_type": STR,  # Union[str, SamplerType]: TRTLLMSampler | TorchSampler | auto
    "sampler_force_async_worker": BOOL,
    "enable_iter_perf_stats": BOOL,
    "enable_iter_req_stats": BOOL,
    "print_iter_log": BOOL,
    "batch_wait_timeout_ms": _f("float", ge=0),
    "batch_wait_timeout_iters": _f("int", ge=0),
    "batch_wait_max_tokens_ratio": _f("float", ge=0, le=1),
    "torch_compile_config": _model("TorchCompileConfig", True),
    "enable_autotuner": BOOL,
    "enable_layerwise_nvtx_marker": BOOL,
    "load_format": _enum("AUTO", "DUMMY", "VISION_ONLY", ci=True),
    "enable_min_latency": BOOL,
    "stream_interval": _f("int", gt=0),
    "force_dynamic_quantization": BOOL,
    "allreduce_strategy": _enum("AUTO", "NCCL", "UB", "MINLATENCY", "ONESHOT", "TWOSHOT",
                                "LOWPRECISION", "MNNVL", "NCCL_SYMMETRIC", opt=True),
    "checkpoint_loader": ANY,
    "checkpoint_format": STR_OPT,
    "kv_connector_config": _model("KvCacheConnectorConfig", True),
    "mm_encoder_only": BOOL,
    "ray_worker_extension_cls": STR_OPT,
    "ray_placement_config": _model("RayPlacementConfig", True),
    "enable_sleep": BOOL,
    "use_cute_dsl_blockscaling_mm": BOOL,
    "use_cute_dsl_blockscaling_bmm": BOOL,
    "disable_flashinfer_sampling": BOOL,
    "max_stats_len": INT,
    "layer_wise_benchmarks_config": _model("LayerwiseBenchmarksConfig"),
    "backend": _enum("pytorch", opt=True),
}

#: TrtLlmArgs: the TensorRT-engine backend (``--backend tensorrt`` / ``trt``).
TRT_LLM_ARGS: dict = BASE_LLM_ARGS | {
    "enable_tqdm": BOOL,
    "workspace": STR_OPT,
    "fail_fast_on_attention_window_too_large": BOOL,
    "enable_build_cache": ANY,  # bool or BuildCacheConfig
    "extended_runtime_perf_knob_config": _model("ExtendedRuntimePerfKnobConfig", True),
    "calib_config": _model("CalibConfig"),
    "quant_config": DICT_OPT,  # QuantConfig: opaque here
    "embedding_parallel_mode": _enum("NONE", "SHARDING_ALONG_VOCAB", "SHARDING_ALONG_HIDDEN"),
    "fast_build": BOOL,
    "build_config": DICT_OPT,  # BuildConfig: opaque here
    "enable_prompt_adapter": BOOL,
    "max_prompt_adapter_token": INT,
    "batching_type": _enum("STATIC", "INFLIGHT", opt=True),
    "normalize_log_probs": BOOL,
}

#: trtllm-serve always builds ``build_config`` for get_llm_args() and pops it again for the
#: PyTorch backend, so a ``build_config:`` block in a PyTorch YAML is accepted and ignored.
SERVE_IGNORED_FOR_TORCH = frozenset({"build_config"})

#: Parameters of ``get_llm_args()`` in ``tensorrt_llm/commands/serve.py`` that are not LLM-API
#: fields. The disaggregated config's server sections are passed through get_llm_args(), so these
#: names are valid there (but not in an ``--extra_llm_api_options`` YAML).
GET_LLM_ARGS_ONLY_PARAMS = frozenset({"free_gpu_memory_fraction"})

#: Keys people carry over from older TensorRT-LLM releases, with what replaced them.
LEGACY_KEY_HINTS: Mapping[str, str] = {
    "pytorch_backend_config": "its keys moved to the top level (e.g. enable_iter_perf_stats)",
    "use_cuda_graph": "use cuda_graph_config: {} (null disables CUDA graphs)",
    "cuda_graph_batch_sizes": "use cuda_graph_config.batch_sizes",
    "cuda_graph_max_batch_size": "use cuda_graph_config.max_batch_size",
    "cuda_graph_padding_enabled": "use cuda_graph_config.enable_padding",
    "autotuner_enabled": "use enable_autotuner",
    "kv_cache_dtype": "use kv_cache_config.dtype",
    "enable_overlap_scheduler": "use disable_overlap_scheduler",
    "moe_backend": "use moe_config.backend",
    "moe_max_num_tokens": "use moe_config.max_num_tokens",
    "moe_load_balancer": "use moe_config.load_balancer",
    "free_gpu_memory_fraction": "use kv_cache_config.free_gpu_memory_fraction",
    "tp_size": "use tensor_parallel_size",
    "pp_size": "use pipeline_parallel_size",
    "ep_size": "use moe_expert_parallel_size",
    "use_torch_sampler": "use sampler_type: TorchSampler",
    "enable_trtllm_sampler": "use sampler_type: TRTLLMSampler",
    "mixed_sampler": "removed",
}
