"""Value checks behind :mod:`.schema`: pydantic-like type, range, enum and extra-key checks.

Private: use :func:`.schema.validate_llm_api_options` and :func:`.schema.validate_disagg_config`.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping, Optional

from . import _fields as F

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def _unknown(path: str, key: str, known: Iterable[str]) -> str:
    msg = f"{path}: unknown key (TensorRT-LLM forbids extra fields)"
    hint = F.LEGACY_KEY_HINTS.get(key)
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.75)
    if close:
        msg += f"; did you mean '{close[0]}'?"
    elif hint:
        msg += f"; {hint}"
    return msg


def _as_number(value: Any, kind: str) -> Optional[float]:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if kind == "int" and not value.is_integer():
            return None
        return value
    if isinstance(value, str):
        try:
            number = float(value.strip()) if kind == "float" else int(value.strip())
        except ValueError:
            return None
        return number
    return None


def _check_scalar(spec: F.FieldSpec, value: Any, path: str, errors: list) -> None:
    kind = spec.type
    if kind == "bool":
        if not (isinstance(value, bool) or value in (0, 1)
                or (isinstance(value, str) and value.lower() in _TRUE | _FALSE)):
            errors.append(f"{path}: expected a boolean, got {value!r}")
        return
    if kind in ("int", "float"):
        number = _as_number(value, kind)
        if number is None:
            errors.append(f"{path}: expected {'an integer' if kind == 'int' else 'a number'}, "
                          f"got {value!r}")
            return
        for bound, ok, text in ((spec.ge, lambda b: number >= b, ">="),
                                (spec.gt, lambda b: number > b, ">"),
                                (spec.le, lambda b: number <= b, "<="),
                                (spec.lt, lambda b: number < b, "<")):
            if bound is not None and not ok(bound):
                errors.append(f"{path}: must be {text} {bound:g}, got {value!r}")
        return
    if kind == "str":
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, got {value!r}")
            return
        if spec.choices is not None:
            choices = spec.choices
            found = (value.upper() in {c.upper() for c in choices}) if spec.case_insensitive \
                else value in choices
            if not found:
                errors.append(f"{path}: {value!r} is not one of {', '.join(choices)}")
        return
    if kind == "dict" and not isinstance(value, Mapping):
        errors.append(f"{path}: expected a mapping, got {value!r}")
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            errors.append(f"{path}: expected a list, got {value!r}")
            return
        if spec.item:
            item_spec = F.FieldSpec(spec.item)
            for i, item in enumerate(value):
                _check_scalar(item_spec, item, f"{path}[{i}]", errors)


def _check_value(spec: F.FieldSpec, value: Any, path: str, backend: str, errors: list) -> None:
    if value is None:
        if not spec.optional and spec.type not in ("any",):
            errors.append(f"{path}: may not be null")
        return
    if spec.type == "any":
        return
    if spec.type == "model":
        _check_model(F.MODELS[spec.model], value, path, backend, errors)
    elif spec.type == "union":
        _check_union(F.UNIONS[spec.union], value, path, backend, errors)
    else:
        _check_scalar(spec, value, path, errors)


def _check_model(fields: Mapping, value: Any, path: str, backend: str, errors: list) -> None:
    if not isinstance(value, Mapping):
        errors.append(f"{path}: expected a mapping, got {value!r}")
        return
    for key, item in value.items():
        spec = fields.get(key)
        if spec is None:
            errors.append(_unknown(_join(path, key), key, fields))
        else:
            _check_value(spec, item, _join(path, key), backend, errors)
    for key, spec in fields.items():
        if spec.required and key not in value:
            errors.append(f"{_join(path, key)}: required")


def _check_union(union: F.UnionSpec, value: Any, path: str, backend: str, errors: list) -> None:
    if not isinstance(value, Mapping):
        errors.append(f"{path}: expected a mapping, got {value!r}")
        return
    tag = value.get(union.discriminator)
    if tag is None:
        errors.append(f"{_join(path, union.discriminator)}: required (one of "
                      f"{', '.join(union.variants)})")
        return
    canonical = {t.lower(): t for t in union.variants}.get(str(tag).lower())
    if canonical is None:
        errors.append(f"{_join(path, union.discriminator)}: {tag!r} is not one of "
                      f"{', '.join(union.variants)}")
        return
    _check_model(F.MODELS[union.variants[canonical]], value, path, backend, errors)
    allowed = union.backends.get(canonical, F.ALL_BACKENDS)
    if backend not in allowed:
        errors.append(f"{path}: {union.discriminator} {canonical} does not support backend "
                      f"{backend}")
    if union.discriminator == "decoding_type":
        _check_speculative(canonical, value, path, errors)


def _check_speculative(tag: str, value: Mapping, path: str, errors: list) -> None:
    draft_len = value.get("max_draft_len")
    needs_len = {"Eagle": "Eagle", "Eagle3": "Eagle", "NGram": "NGram",
                 "Draft_Target": "DraftTarget", "PARD": "PARD"}
    if tag in needs_len and not (isinstance(draft_len, int) and draft_len > 0):
        errors.append(f"{_join(path, 'max_draft_len')}: must be > 0 for {needs_len[tag]}")
    has_model = value.get("speculative_model") or value.get("speculative_model_dir")
    if tag in ("Eagle", "Eagle3") and not has_model:
        errors.append(f"{_join(path, 'speculative_model')}: Draft model must be provided for EAGLE")
    if tag == "Draft_Target" and not has_model:
        errors.append(f"{_join(path, 'speculative_model')}: speculative_model must be specified "
                      "for DraftTarget")


def _cross_checks(options: Mapping, where: str, backend: str, errors: list) -> None:
    """Model validators of TorchLlmArgs / TrtLlmArgs that look at more than one key."""
    cuda = options.get("cuda_graph_config")
    if isinstance(cuda, Mapping) and cuda.get("batch_sizes") and cuda.get("max_batch_size"):
        try:
            if int(cuda["max_batch_size"]) != max(int(b) for b in cuda["batch_sizes"]):
                errors.append(f"{_join(where, 'cuda_graph_config')}: max_batch_size must equal "
                              "max(batch_sizes) when both are provided")
        except (TypeError, ValueError):
            pass
    kv = options.get("kv_cache_config")
    if backend == F.TENSORRT and isinstance(kv, Mapping) and kv.get("dtype", "auto") != "auto":
        errors.append(f"{_join(where, 'kv_cache_config.dtype')}: KvCacheConfig.dtype is not "
                      "supported by the TensorRT backend")
    peft = options.get("peft_cache_config")
    if isinstance(peft, Mapping) and peft.get("lora_prefetch_dir") is not None:
        errors.append(f"{_join(where, 'peft_cache_config.lora_prefetch_dir')}: LoRA prefetch is "
                      "not supported")
    for key in ("ray_worker_extension_cls", "ray_placement_config"):
        if options.get(key) is not None and options.get("orchestrator_type") != "ray":
            errors.append(f"{_join(where, key)}: only supported with orchestrator_type='ray'")
    adp = options.get("attention_dp_config")
    if isinstance(adp, Mapping) and adp.get("enable_balance"):
        for key in ("timeout_iters", "batching_wait_iters"):
            if isinstance(adp.get(key), int) and adp[key] < 0:
                errors.append(f"{_join(where, 'attention_dp_config.' + key)}: must be >= 0 when "
                              "enable_balance is true")
    lwb = options.get("layer_wise_benchmarks_config")
    if isinstance(lwb, Mapping) and lwb.get("calibration_mode") == "COLLECT" \
            and not lwb.get("calibration_file_path"):
        errors.append(f"{_join(where, 'layer_wise_benchmarks_config.calibration_file_path')}: "
                      "required in COLLECT mode")
