"""Validate trtllm-serve configuration the way TensorRT-LLM does, without TensorRT-LLM.

Two validators, both returning a list of error strings (empty when valid), each string starting
with the dotted path of the offending key, e.g.
``context_servers.kv_cache_config.free_gpu_memory_fractio: unknown key (TensorRT-LLM forbids
extra fields); did you mean 'free_gpu_memory_fraction'?``:

- :func:`validate_llm_api_options` for an ``--extra_llm_api_options`` / ``--config`` YAML
  (the LLM-API options, pydantic ``extra="forbid"`` in TensorRT-LLM, so unknown keys fail);
- :func:`validate_disagg_config` for the ``trtllm-serve disaggregated -c`` YAML.

:func:`check_llm_api_options` and :func:`check_disagg_config` raise :class:`ConfigError` instead.
The field tables live in :mod:`._fields` (transcribed from TensorRT-LLM's ``llm_args.py``, 1.2
line); the disaggregated-config rules follow ``tensorrt_llm/llmapi/disagg_utils.py``
(``extract_disagg_cfg``, ``extract_ctx_gen_cfgs``, ``extract_router_config``,
``extract_disagg_cluster_config``) and ``tensorrt_llm/serve/router.py`` (``create_router``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from . import _fields as F
from ._validate import _check_scalar, _check_value, _cross_checks, _join, _unknown

__all__ = [
    "BACKENDS", "BACKEND_ALIASES", "CACHE_TRANSCEIVER_BACKENDS", "ConfigError",
    "DISAGG_NEWER_TOP_LEVEL_KEYS", "DISAGG_SECTION_KEYS", "DISAGG_TOP_LEVEL_KEYS",
    "ROUTER_TYPES", "SCHEDULE_STYLES", "SOURCE", "check_disagg_config", "check_llm_api_options",
    "disagg_worker_urls", "llm_api_option_keys", "load_yaml_mapping", "normalize_backend",
    "parallel_size", "sub_option_keys", "validate_disagg_config", "validate_llm_api_options",
]

SOURCE = F.SOURCE
#: ``--backend`` choices of trtllm-serve (``trt`` is an alias of ``tensorrt``).
BACKENDS = (F.PYTORCH, F.TENSORRT, F.AUTODEPLOY)
BACKEND_ALIASES = {"trt": F.TENSORRT}
#: ``cache_transceiver_config.backend`` values (CacheTransceiverConfig.backend Literal).
CACHE_TRANSCEIVER_BACKENDS = F.MODELS["CacheTransceiverConfig"]["backend"].choices
#: ``router.type`` values accepted by ``create_router`` (compared lower-cased).
ROUTER_TYPES = ("round_robin", "load_balancing", "kv_cache_aware")
SCHEDULE_STYLES = ("context_first", "generation_first")
#: Named parameters of ``extract_disagg_cfg`` in the 1.2 line. Any other top-level key is an
#: engine option inherited by both server sections.
DISAGG_TOP_LEVEL_KEYS = frozenset({
    "hostname", "port", "max_retries", "perf_metrics_max_requests", "context_servers",
    "generation_servers", "conditional_disagg_config", "otlp_config", "disagg_cluster", "node_id",
    "schedule_style"})
#: Named parameters added after the 1.2 line; accepted, since newer servers understand them.
DISAGG_NEWER_TOP_LEVEL_KEYS = frozenset({
    "return_perf_metrics", "perf_metrics_output_dir", "allow_request_chat_template",
    "gen_strip_message_history", "gen_tokids_ctxbytes", "num_workers", "disagg_coordinator_url"})
#: Keys of a ``context_servers`` / ``generation_servers`` section that are not engine options.
DISAGG_SECTION_KEYS = frozenset({"num_instances", "urls", "router"})
_DISAGG_CLUSTER_KEYS = frozenset({
    "cluster_uri", "cluster_name", "minimal_instances", "heartbeat_interval_sec",
    "inactive_timeout_sec"})


class ConfigError(ValueError):
    """A configuration TensorRT-LLM would reject; ``errors`` holds one line per problem."""

    def __init__(self, errors: list[str], what: str = "configuration"):
        self.errors = list(errors)
        super().__init__(f"invalid {what}:\n" + "\n".join(f"  {e}" for e in self.errors))


def normalize_backend(backend: Optional[str]) -> str:
    """Map a ``--backend`` value (or ``None``) to its canonical name; unknown values pass through."""
    if backend is None:
        return F.PYTORCH
    return BACKEND_ALIASES.get(backend, backend)


def _top_fields(backend: str) -> Optional[dict]:
    backend = normalize_backend(backend)
    if backend == F.TENSORRT:
        return F.TRT_LLM_ARGS
    if backend == F.PYTORCH:
        return F.TORCH_LLM_ARGS
    return None  # _autodeploy has its own LlmArgs class, not transcribed: keys not checked


def llm_api_option_keys(backend: str = F.PYTORCH) -> frozenset:
    """Top-level LLM-API option names for ``backend`` (empty for ``_autodeploy``: unchecked)."""
    return frozenset(_top_fields(backend) or ())


def sub_option_keys(field: str, backend: str = F.PYTORCH,
                    variant: Optional[str] = None) -> frozenset:
    """Keys of a nested option, e.g. ``sub_option_keys("kv_cache_config")``.

    For a discriminated union give the tag: ``sub_option_keys("speculative_config",
    variant="MTP")``. Raises ``KeyError`` for unknown or opaque fields.
    """
    spec = (_top_fields(backend) or {})[field]
    if spec.type == "model":
        return frozenset(F.MODELS[spec.model])
    if spec.type == "union" and variant is not None:
        return frozenset(F.MODELS[F.UNIONS[spec.union].variants[variant]])
    raise KeyError(f"{field} has no fixed sub-schema here")


def parallel_size(options: Mapping[str, Any]) -> int:
    """Ranks one instance needs: tensor x pipeline x context parallel size."""
    size = 1
    for key in ("tensor_parallel_size", "pipeline_parallel_size", "context_parallel_size"):
        value = options.get(key)
        size *= int(value) if value is not None else 1
    return size


def load_yaml_mapping(path: str | Path) -> dict:
    """Read a YAML file whose root must be a mapping (an empty file gives ``{}``)."""
    import yaml

    with open(path, "r", encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the root must be a mapping, got {type(data).__name__}"])
    return data


def validate_llm_api_options(options: Mapping[str, Any], where: str = "", *,
                             backend: Optional[str] = None,
                             allow_get_llm_args_params: bool = False) -> list[str]:
    """Check LLM-API options as ``TorchLlmArgs`` / ``TrtLlmArgs`` would; return error lines.

    ``where`` prefixes every key path (``"context_servers"`` gives
    ``context_servers.kv_cache_config...``). ``backend`` (``pytorch``, ``tensorrt``/``trt``,
    ``_autodeploy``) selects TorchLlmArgs or TrtLlmArgs; if not given, the ``backend`` key of
    ``options`` decides, else ``pytorch`` (in trtllm-serve a YAML ``backend:`` overrides
    ``--backend``, so pass the merged value).
    ``allow_get_llm_args_params`` also accepts ``get_llm_args()`` parameters such as
    ``free_gpu_memory_fraction``, as the disaggregated config's server sections do.
    For ``_autodeploy`` only the types of known common keys are checked.
    """
    if not isinstance(options, Mapping):
        return [f"{where or '<root>'}: expected a mapping, got {type(options).__name__}"]
    backend = normalize_backend(backend or options.get("backend") or F.PYTORCH)
    if backend not in BACKENDS:
        return [f"{_join(where, 'backend')}: {backend!r} is not a known backend "
                f"({', '.join(BACKENDS)})"]
    fields = _top_fields(backend)
    errors: list[str] = []
    for key, value in options.items():
        path = _join(where, key)
        if allow_get_llm_args_params and key in F.GET_LLM_ARGS_ONLY_PARAMS:
            _check_scalar(F.FieldSpec("float", ge=0, le=1), value, path, errors)
            continue
        if key in F.SERVE_IGNORED_FOR_TORCH and backend == F.PYTORCH:
            continue
        spec = (fields or F.BASE_LLM_ARGS).get(key)
        if spec is None:
            if fields is not None:
                errors.append(_unknown(path, key, fields))
            continue
        _check_value(spec, value, path, backend, errors)
    _cross_checks(options, where, backend, errors)
    return errors


def check_llm_api_options(options: Mapping[str, Any], where: str = "", **kw: Any) -> None:
    """Like :func:`validate_llm_api_options` but raise :class:`ConfigError` on any error."""
    errors = validate_llm_api_options(options, where, **kw)
    if errors:
        raise ConfigError(errors, "LLM-API options")


# --- disaggregated configuration ---------------------------------------------------------------
def _parse_url(url: Any) -> Optional[tuple]:
    # extract_ctx_gen_cfgs does `hostname, port_str = url.split(':')`; port = int(port_str)
    if not isinstance(url, str):
        return None
    parts = url.split(":")
    if len(parts) != 2 or not parts[0]:
        return None
    try:
        port = int(parts[1])
    except ValueError:
        return None
    return (parts[0], port) if 0 < port < 65536 else None


def _check_section(name: str, section: Any, inherited: Mapping, cluster: bool,
                   errors: list) -> list:
    """Validate one server section; return its (host, port) list."""
    if section is None:
        section = {}
    if not isinstance(section, Mapping):
        errors.append(f"{name}: expected a mapping, got {section!r}")
        return []
    engine = {k: v for k, v in section.items() if k not in DISAGG_SECTION_KEYS}
    merged = dict(inherited) | engine
    errors.extend(validate_llm_api_options(engine, name, backend=merged.get("backend"),
                                           allow_get_llm_args_params=True))
    router = section.get("router")
    if router is not None:
        if not isinstance(router, Mapping):
            errors.append(f"{name}.router: expected a mapping, got {router!r}")
        else:
            rtype = router.get("type", "round_robin")
            if not isinstance(rtype, str) or rtype.lower() not in ROUTER_TYPES:
                errors.append(f"{name}.router.type: Unsupported router type: {rtype}. "
                              f"Supported types are: {list(ROUTER_TYPES)}")
    num = section.get("num_instances", 1)
    if isinstance(num, bool) or not isinstance(num, int) or num < 0:
        errors.append(f"{name}.num_instances: expected a non-negative integer, got {num!r}")
        num = None
    urls = section.get("urls")
    addrs: list = []
    if urls is None:
        if not cluster and num:
            errors.append(f"{name}.urls: required ({num} instance(s) and no disagg_cluster; "
                          "without urls TensorRT-LLM routes to http://None:None)")
        return addrs
    if not isinstance(urls, (list, tuple)):
        errors.append(f"{name}.urls: expected a list of 'host:port', got {urls!r}")
        return addrs
    for i, url in enumerate(urls):
        addr = _parse_url(url)
        if addr is None:
            errors.append(f"{name}.urls[{i}]: {url!r} is not 'host:port' (no scheme, no path)")
        elif addr in addrs:
            role = "ctx" if name == "context_servers" else "gen"
            errors.append(f"{name}.urls[{i}]: Duplicated {role} server config for {addr}")
        else:
            addrs.append(addr)
    if num is not None and len(urls) != num:
        errors.append(f"{name}: Number of hostnames ({len(urls)}) should be equal to the number "
                      f"of instances ({num})")
    return addrs


def _check_int(config: Mapping, key: str, errors: list, lo: int, hi: Optional[int] = None) -> None:
    value = config.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lo \
            or (hi is not None and value >= hi):
        bound = f"[{lo}, {hi})" if hi is not None else f">= {lo}"
        errors.append(f"{key}: expected an integer {bound}, got {value!r}")


def _check_disagg_cluster(cluster: Any, errors: list) -> None:
    if not isinstance(cluster, Mapping):
        errors.append(f"disagg_cluster: expected a mapping, got {cluster!r}")
        return
    for key in cluster:
        if key not in _DISAGG_CLUSTER_KEYS:
            errors.append(f"disagg_cluster.{key}: Key {key} not found in DisaggClusterConfig")
    if not cluster.get("cluster_uri"):
        errors.append("disagg_cluster.cluster_uri: required")
    minimal = cluster.get("minimal_instances") or {}
    if not isinstance(minimal, Mapping):
        errors.append(f"disagg_cluster.minimal_instances: expected a mapping, got {minimal!r}")
        return
    for key in minimal:
        if key not in ("context_servers", "generation_servers"):
            errors.append(f"disagg_cluster.minimal_instances.{key}: Key {key} not found in "
                          "MinimalInstances")


def validate_disagg_config(config: Mapping[str, Any], *, gen_only: bool = False) -> list[str]:
    """Check a ``trtllm-serve disaggregated -c`` config; return error lines.

    Top level: ``hostname``, ``port``, ``max_retries``, ``perf_metrics_max_requests``,
    ``context_servers``, ``generation_servers``, ``conditional_disagg_config``, ``otlp_config``,
    ``disagg_cluster``, ``node_id``, ``schedule_style`` (plus the keys newer servers added, see
    :data:`DISAGG_NEWER_TOP_LEVEL_KEYS`); any other top-level key is an engine option that both
    sections inherit, and must agree with a section that sets it too. A section has
    ``num_instances``, ``urls`` (``host:port``, as many as instances), optional
    ``router: {type: round_robin|load_balancing|kv_cache_aware, ...}`` and engine options.
    ``gen_only`` mirrors ``TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1`` (no context server needed).
    """
    if not isinstance(config, Mapping):
        return [f"<root>: expected a mapping, got {type(config).__name__}"]
    errors: list[str] = []
    known = DISAGG_TOP_LEVEL_KEYS | DISAGG_NEWER_TOP_LEVEL_KEYS
    inherited = {k: v for k, v in config.items() if k not in known}
    # Inherited keys are engine options of both sections: report unknown ones once, at the top.
    errors.extend(validate_llm_api_options(inherited, "", backend=inherited.get("backend"),
                                           allow_get_llm_args_params=True))
    if "hostname" in config and not isinstance(config["hostname"], str):
        errors.append(f"hostname: expected a string, got {config['hostname']!r}")
    _check_int(config, "port", errors, 1, 65536)
    _check_int(config, "max_retries", errors, 0)
    _check_int(config, "perf_metrics_max_requests", errors, 0)
    _check_int(config, "node_id", errors, 0, 256)
    _check_int(config, "num_workers", errors, 1)
    style = config.get("schedule_style")
    if style is not None and style not in SCHEDULE_STYLES:
        errors.append(f"schedule_style: {style!r} is not one of {', '.join(SCHEDULE_STYLES)}")
    cluster = config.get("disagg_cluster")
    if cluster:
        _check_disagg_cluster(cluster, errors)
    sections = {}
    for name in ("context_servers", "generation_servers"):
        section = config.get(name)
        if isinstance(section, Mapping):
            for key, value in inherited.items():
                if key in section and section[key] != value:
                    errors.append(f"{name}.{key}: Parameter {key} is specified both in the "
                                  f"top-level and in the {name} section, but with different "
                                  "values")
        sections[name] = _check_section(name, section, inherited, bool(cluster), errors)
    for key, fields in (("conditional_disagg_config", ("max_local_prefill_length",)),
                        ("otlp_config", ("otlp_traces_endpoint",))):
        value = config.get(key)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            errors.append(f"{key}: expected a mapping, got {value!r}")
            continue
        errors.extend(f"{key}.{k}: unknown key" for k in value if k not in fields)
    if config.get("conditional_disagg_config"):
        gen = config.get("generation_servers") or {}
        rtype = ((gen.get("router") or {}).get("type") or "round_robin") \
            if isinstance(gen, Mapping) and isinstance(gen.get("router") or {}, Mapping) else ""
        if str(rtype).lower() != "kv_cache_aware":
            errors.append("conditional_disagg_config: Generation router must be a "
                          "KvCacheAwareRouter to enable conditional disaggregation")
    if not cluster:
        if not sections.get("generation_servers") and not _has_errors_for(errors, "generation"):
            errors.append("generation_servers: At least one generation server must be provided")
        if not gen_only and not sections.get("context_servers") \
                and not _has_errors_for(errors, "context"):
            errors.append("context_servers: At least one context server must be provided")
    return errors


def _has_errors_for(errors: list, prefix: str) -> bool:
    return any(e.startswith(prefix) for e in errors)


def check_disagg_config(config: Mapping[str, Any], **kw: Any) -> None:
    """Like :func:`validate_disagg_config` but raise :class:`ConfigError` on any error."""
    errors = validate_disagg_config(config, **kw)
    if errors:
        raise ConfigError(errors, "disaggregated server config")


def disagg_worker_urls(config: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The ``host:port`` URLs of the context and of the generation servers, in config order."""
    out = []
    for name in ("context_servers", "generation_servers"):
        section = config.get(name) or {}
        out.append([str(u) for u in (section.get("urls") or [])])
    return out[0], out[1]
