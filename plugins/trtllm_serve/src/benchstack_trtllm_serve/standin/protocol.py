"""OpenAI request checking and response shapes, as ``tensorrt_llm/serve/openai_protocol.py``.

TensorRT-LLM's request models are pydantic with ``extra="forbid"``: an unknown request field
gives HTTP 400 ``{"error": "<validation errors>"}``. The field lists below are those of
``CompletionRequest`` and ``ChatCompletionRequest`` in the 1.2 line; ``DisaggregatedParams``
has ``request_type, first_gen_tokens, ctx_request_id, encoded_opaque_state, draft_tokens,
disagg_request_id, ctx_dp_rank, ctx_info_endpoint, schedule_style``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Optional

_SAMPLING = {
    "best_of", "frequency_penalty", "logit_bias", "n", "presence_penalty", "seed", "stop",
    "stream", "stream_options", "temperature", "top_p", "user", "lora_request",
    "prompt_ignore_length", "use_beam_search", "top_k", "top_p_min", "min_p",
    "repetition_penalty", "length_penalty", "early_stopping", "stop_token_ids",
    "include_stop_str_in_output", "ignore_eos", "min_tokens", "skip_special_tokens",
    "spaces_between_special_tokens", "truncate_prompt_tokens", "add_special_tokens",
    "response_format", "disaggregated_params", "echo", "model",
}
COMPLETION_FIELDS = frozenset(_SAMPLING | {
    "prompt", "logprobs", "max_tokens", "suffix", "return_context_logits", "detokenize"})
CHAT_FIELDS = frozenset(_SAMPLING | {
    "messages", "prompt_token_ids", "logprobs", "top_logprobs", "max_completion_tokens",
    "max_tokens", "tools", "tool_choice", "reasoning_effort", "add_generation_prompt",
    "documents", "chat_template", "chat_template_kwargs", "cache_salt"})
STREAM_OPTIONS_FIELDS = frozenset({"include_usage", "continuous_usage_stats"})
DISAGG_PARAMS_FIELDS = frozenset({
    "request_type", "first_gen_tokens", "ctx_request_id", "encoded_opaque_state", "draft_tokens",
    "disagg_request_id", "ctx_dp_rank", "ctx_info_endpoint", "schedule_style"})
REQUEST_TYPES = ("context_only", "generation_only", "context_and_generation")


class RequestValidationError(ValueError):
    """Body validation failed; rendered like FastAPI's ``str(RequestValidationError)``."""

    def __init__(self, errors: list[dict]):
        self.errors = errors
        super().__init__(repr(errors))


def _err(kind: str, loc: tuple, msg: str, value: Any = None) -> dict:
    return {"type": kind, "loc": ("body",) + loc, "msg": msg, "input": value}


def _int_or_none(body: dict, key: str, errors: list) -> None:
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        errors.append(_err("int_type", (key,), "Input should be a valid integer", value))


def validate_request(body: Any, chat: bool) -> dict:
    """Check a request body; return it, or raise :class:`RequestValidationError`."""
    if not isinstance(body, dict):
        raise RequestValidationError([_err("model_attributes_type", (),
                                           "Input should be a valid dictionary", body)])
    fields = CHAT_FIELDS if chat else COMPLETION_FIELDS
    errors = [_err("extra_forbidden", (k,), "Extra inputs are not permitted", v)
              for k, v in body.items() if k not in fields]
    for key in (("messages", "model") if chat else ("model", "prompt")):
        if key not in body:
            errors.append(_err("missing", (key,), "Field required"))
    for key in ("max_tokens", "max_completion_tokens", "n", "min_tokens"):
        _int_or_none(body, key, errors)
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        errors.append(_err("bool_type", ("stream",), "Input should be a valid boolean",
                           body["stream"]))
    options = body.get("stream_options")
    if options is not None:
        if not body.get("stream"):
            text = ("stream_options can only be set if stream is true" if chat else
                    "Stream options can only be defined when stream is true.")
            errors.append(_err("value_error", (), f"Value error, {text}", body))
        elif isinstance(options, dict):
            errors += [_err("extra_forbidden", ("stream_options", k),
                            "Extra inputs are not permitted", v)
                       for k, v in options.items() if k not in STREAM_OPTIONS_FIELDS]
    if body.get("suffix"):
        errors.append(_err("value_error", (), "Value error, suffix is not supported", body))
    params = body.get("disaggregated_params")
    if params is not None:
        if not isinstance(params, dict) or "request_type" not in params:
            errors.append(_err("missing", ("disaggregated_params", "request_type"),
                               "Field required", params))
        else:
            errors += [_err("extra_forbidden", ("disaggregated_params", k),
                            "Extra inputs are not permitted", v)
                       for k, v in params.items() if k not in DISAGG_PARAMS_FIELDS]
    if chat and body.get("tool_choice") not in (None, "none") and not body.get("tools"):
        errors.append(_err("value_error", (),
                           "Value error, When using `tool_choice`, `tools` must be set.", body))
    if not chat and "prompt" in body:
        prompt = body["prompt"]
        ok = isinstance(prompt, str) or (isinstance(prompt, list) and prompt and (
            all(isinstance(p, str) for p in prompt)
            or all(isinstance(p, int) and not isinstance(p, bool) for p in prompt)
            or all(isinstance(p, list) for p in prompt)))
        if not ok:
            errors.append(_err("union_tag_invalid", ("prompt",),
                               "Input should be a string, a list of strings, a list of token "
                               "ids or a list of token-id lists", prompt))
    if errors:
        raise RequestValidationError(errors)
    return body


def max_tokens_of(body: dict, chat: bool) -> Optional[int]:
    if chat:
        value = body.get("max_completion_tokens")
        return value if value is not None else body.get("max_tokens")
    return body.get("max_tokens")


def error_body(message: str, status: int = 400, err_type: str = "BadRequestError") -> dict:
    """``ErrorResponse`` of the worker server."""
    return {"object": "error", "message": message, "type": err_type, "param": None,
            "code": status}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0}}


class ResponseBuilder:
    """Builds one request's (chunked) response bodies with a stable id and creation time."""

    def __init__(self, model: str, chat: bool):
        self.model = model
        self.chat = chat
        self.id = (f"chatcmpl-{uuid.uuid4().hex}" if chat else f"cmpl-{uuid.uuid4().hex}")
        self.created = int(time.time())

    def _head(self, stream: bool) -> dict:
        kind = ("chat.completion.chunk" if stream else "chat.completion") if self.chat \
            else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def choice(self, index: int, text: str, finish: Optional[str],
               disagg: Optional[dict] = None) -> dict:
        if self.chat:
            return {"index": index,
                    "message": {"role": "assistant", "content": text, "reasoning_content": None,
                                "reasoning": None, "tool_calls": []},
                    "logprobs": None, "finish_reason": finish, "stop_reason": None,
                    "mm_embedding_handle": None, "disaggregated_params": disagg,
                    "avg_decoded_tokens_per_iter": None}
        return {"index": index, "text": text, "token_ids": None, "logprobs": None,
                "context_logits": None, "finish_reason": finish, "stop_reason": None,
                "disaggregated_params": disagg, "avg_decoded_tokens_per_iter": None}

    def full(self, choices: list, use: dict, prompt_token_ids: Any = None) -> dict:
        return self._head(False) | {"choices": choices, "usage": use,
                                    "prompt_token_ids": prompt_token_ids}

    def role_chunk(self, index: int, use: Optional[dict] = None) -> str:
        return self._sse({"choices": [{"index": index, "delta": {"role": "assistant"}}]}, use)

    def token_chunk(self, index: int, text: str, finish: Optional[str],
                    use: Optional[dict] = None) -> str:
        choice: dict = {"index": index}
        if self.chat:
            choice["delta"] = {"content": text}
        else:
            choice["text"] = text
        if finish is not None:
            choice["finish_reason"] = finish
        return self._sse({"choices": [choice]}, use)

    def usage_chunk(self, use: dict) -> str:
        return self._sse({"choices": []}, use)

    def _sse(self, body: dict, use: Optional[dict]) -> str:
        data = self._head(True) | body
        if use is not None:
            data["usage"] = use
        return f"data: {json.dumps(data)}\n\n"


DONE = "data: [DONE]\n\n"
