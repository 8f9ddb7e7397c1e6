"""The simulated inference engine: admission, timing, iteration stats and perf metrics.

Timing is per request and deterministic (environment, milliseconds):

- ``TRTLLM_STANDIN_TTFT_MS`` (20) + ``TRTLLM_STANDIN_PREFILL_MS_PER_TOKEN`` (0.02) x prompt
  tokens: time from admission to the first token of an aggregated or ``context_only`` request;
- ``TRTLLM_STANDIN_ITL_MS`` (5): time between later tokens;
- ``TRTLLM_STANDIN_KV_TRANSFER_MS`` (2): time to the first token of a ``generation_only``
  request (the KV cache arriving from the context server; no prefill).

At most ``max_batch_size`` requests run at once; later ones wait in FIFO order, and the wait
counts towards their time to first token. Token ``i`` is due at ``admission + first + i * ITL``
(absolute deadlines, so no drift); with ``stream_interval`` N tokens are released in groups of N
after the first, as TensorRT-LLM's streaming does.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import AsyncIterator, Optional

from .tokenizer import output_token_ids


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class Timing:
    """The stand-in's latency model, in milliseconds."""

    ttft_ms: float = 20.0
    prefill_ms_per_token: float = 0.02
    itl_ms: float = 5.0
    kv_transfer_ms: float = 2.0

    @classmethod
    def from_env(cls) -> "Timing":
        return cls(ttft_ms=_env_float("TRTLLM_STANDIN_TTFT_MS", 20.0),
                   prefill_ms_per_token=_env_float("TRTLLM_STANDIN_PREFILL_MS_PER_TOKEN", 0.02),
                   itl_ms=_env_float("TRTLLM_STANDIN_ITL_MS", 5.0),
                   kv_transfer_ms=_env_float("TRTLLM_STANDIN_KV_TRANSFER_MS", 2.0))

    def first_token_ms(self, prompt_tokens: int, kind: str) -> float:
        if kind == "generation_only":
            return self.kv_transfer_ms
        return self.ttft_ms + self.prefill_ms_per_token * prompt_tokens


@dataclass(frozen=True)
class EngineLimits:
    """The engine options the simulation honours (CLI flags merged with the YAML)."""

    backend: str = "pytorch"
    max_batch_size: int = 2048
    max_num_tokens: int = 8192
    max_seq_len: int = 4096
    enable_chunked_prefill: bool = False
    tokens_per_block: int = 32
    stream_interval: int = 1
    iter_stats: bool = False
    max_stats_len: int = 1000
    perf_metrics_max_requests: int = 0
    disagg_capable: bool = False


@dataclass
class Request:
    """One generation: ``kind`` is ``aggregated``, ``context_only`` or ``generation_only``."""

    prompt_ids: list
    max_tokens: int
    kind: str = "aggregated"
    first_token: Optional[int] = None
    ctx_request_id: Optional[int] = None
    server_arrival: float = field(default_factory=time.monotonic)
    request_id: int = 0


class RequestError(ValueError):
    """A request the engine refuses; the server answers 400 with this message."""


class Engine:
    """Admits requests up to ``max_batch_size`` and releases their tokens on schedule."""

    def __init__(self, limits: EngineLimits, timing: Timing):
        self.limits = limits
        self.timing = timing
        self._ids = itertools.count(1)
        self._slots: Optional[asyncio.Semaphore] = None
        self.queued = 0
        self.in_context: dict = {}  # request id -> prompt tokens, until the first token
        self.in_generation: set = set()
        self.tokens_held: dict = {}  # request id -> prompt + generated tokens (KV blocks)
        self.completed = 0
        self.max_active_seen = 0
        self.by_kind: dict = {"aggregated": 0, "context_only": 0, "generation_only": 0}
        self.iteration_stats: deque = deque(maxlen=max(1, limits.max_stats_len))
        self.perf_metrics: deque = deque(maxlen=max(1, limits.perf_metrics_max_requests))
        self.clock_offset = 0.0
        self._iter = 0
        self._new_since_tick = 0
        self._completed_since_tick = 0
        self._ticker: Optional[asyncio.Task] = None

    @property
    def active(self) -> int:
        return len(self.in_context) + len(self.in_generation)

    # --- admission checks, as TensorRT-LLM's LLM._check_arguments / base_worker do -------------
    def resolve_max_tokens(self, prompt_len: int, max_tokens: Optional[int], kind: str) -> int:
        """Apply TensorRT-LLM's prompt-length checks and default ``max_tokens``."""
        lim = self.limits
        if lim.backend == "pytorch" and not lim.enable_chunked_prefill \
                and kind != "generation_only" and prompt_len > lim.max_num_tokens:
            raise RequestError(f"The sum of prompt length ({float(prompt_len)}), query length (0) "
                               f"should not exceed max_num_tokens ({lim.max_num_tokens})")
        if lim.backend == "tensorrt" and max_tokens is not None \
                and prompt_len + max_tokens > lim.max_seq_len:
            raise RequestError(f"The sum of prompt length ({prompt_len}), query length (0) and "
                               f"max_tokens ({max_tokens}) should not exceed max_seq_len "
                               f"({lim.max_seq_len})")
        default = lim.max_seq_len - prompt_len
        if default <= 0:
            raise RequestError(f"`default_max_tokens` ({default}) must be greater than 0, "
                               f"`default_max_tokens` ({default}) = max_seq_len ({lim.max_seq_len})"
                               f" - `splited_prompt_len` ({prompt_len}) - `query_token_len` (0)")
        if max_tokens is None:
            return default
        if max_tokens <= 0:
            raise RequestError(f"max_tokens ({max_tokens}) must be greater than 0")
        return min(max_tokens, default)

    # --- generation -----------------------------------------------------------------------------
    async def generate(self, req: Request) -> AsyncIterator[list]:
        """Yield lists of new output token ids at their due times; the last list ends it."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(max(1, self.limits.max_batch_size))
        loop = asyncio.get_running_loop()
        req.request_id = next(self._ids)
        self.by_kind[req.kind] = self.by_kind.get(req.kind, 0) + 1
        count = 1 if req.kind == "context_only" else req.max_tokens
        ids = output_token_ids(req.prompt_ids, count, req.first_token)
        self.queued += 1
        queued_at = time.monotonic()
        try:
            await self._slots.acquire()
        except BaseException:  # cancelled while queued (client went away)
            self.queued -= 1
            raise
        rid = req.request_id
        try:
            self.queued -= 1
            self._new_since_tick += 1
            self.in_context[rid] = len(req.prompt_ids)
            self.tokens_held[rid] = len(req.prompt_ids)
            self.max_active_seen = max(self.max_active_seen, self.active)
            self._ensure_ticker()
            start = loop.time()
            scheduled = time.monotonic()
            first_s = self.timing.first_token_ms(len(req.prompt_ids), req.kind) / 1000.0
            itl_s = self.timing.itl_ms / 1000.0
            interval = max(1, self.limits.stream_interval)
            pending: list = []
            first_token_time = None
            first_iter = self._iter
            for i, token in enumerate(ids):
                delay = start + first_s + i * itl_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if i == 0:
                    self.in_context.pop(rid, None)
                    self.in_generation.add(rid)
                    first_token_time = time.monotonic()
                self.tokens_held[rid] += 1
                pending.append(token)
                if i == 0 or i == len(ids) - 1 or (i + 1) % interval == 0:
                    yield pending
                    pending = []
            self._record_perf(req, queued_at, scheduled, first_token_time, first_iter)
        finally:
            self.in_context.pop(rid, None)
            self.in_generation.discard(rid)
            self.tokens_held.pop(rid, None)
            self.completed += 1
            self._completed_since_tick += 1
            self._slots.release()

    # --- /perf_metrics ---------------------------------------------------------------------------
    def _record_perf(self, req: Request, queued_at: float, scheduled: float,
                     first_token: Optional[float], first_iter: int) -> None:
        if self.limits.perf_metrics_max_requests <= 0:
            return
        off = self.clock_offset
        blocks = math.ceil(len(req.prompt_ids) / self.limits.tokens_per_block)
        item = {
            "request_id": req.request_id,
            "perf_metrics": {
                "first_iter": first_iter,
                "last_iter": self._iter,
                "timing_metrics": {
                    "server_arrival_time": req.server_arrival + off,
                    "arrival_time": queued_at + off,
                    "first_scheduled_time": scheduled + off,
                    "first_token_time": (first_token or scheduled) + off,
                    "server_first_token_time": (first_token or scheduled) + off,
                    "last_token_time": time.monotonic() + off,
                },
                "kv_cache_metrics": {"num_total_allocated_blocks": blocks,
                                     "num_new_allocated_blocks": blocks,
                                     "num_reused_blocks": 0, "num_missed_blocks": blocks},
            },
        }
        if req.kind != "aggregated":
            item["ctx_request_id"] = req.ctx_request_id or req.request_id
        self.perf_metrics.append(item)

    def drain_perf_metrics(self) -> list:
        items = list(self.perf_metrics)
        self.perf_metrics.clear()
        return items

    # --- /metrics: iteration statistics ----------------------------------------------------------
    def _ensure_ticker(self) -> None:
        if self.limits.iter_stats and (self._ticker is None or self._ticker.done()):
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        period = max(self.timing.itl_ms, 1.0) / 1000.0
        while self.active or self.queued:
            started = time.monotonic()
            await asyncio.sleep(period)
            self._iter += 1
            self.iteration_stats.append(self._snapshot((time.monotonic() - started) * 1000.0))

    def _snapshot(self, latency_ms: float) -> dict:
        lim = self.limits
        tpb = lim.tokens_per_block
        used = sum(math.ceil(t / tpb) for t in self.tokens_held.values())
        max_blocks = max(used, lim.max_batch_size * math.ceil(lim.max_seq_len / tpb))
        stats = {
            "cpuMemUsage": 0, "gpuMemUsage": 0, "pinnedMemUsage": 0,
            "iter": self._iter, "iterLatencyMS": latency_ms,
            "maxBatchSizeRuntime": lim.max_batch_size, "maxBatchSizeStatic": lim.max_batch_size,
            "maxBatchSizeTunerRecommended": lim.max_batch_size,
            "maxNumActiveRequests": lim.max_batch_size,
            "maxNumTokensRuntime": lim.max_num_tokens, "maxNumTokensStatic": lim.max_num_tokens,
            "maxNumTokensTunerRecommended": lim.max_num_tokens,
            "newActiveRequestsQueueLatencyMS": 0.0,
            "numActiveRequests": self.active, "numQueuedRequests": self.queued,
            "numCompletedRequests": self._completed_since_tick,
            "numNewActiveRequests": self._new_since_tick,
            "inflightBatchingStats": {
                "numContextRequests": len(self.in_context),
                "numCtxTokens": sum(self.in_context.values()),
                "numGenRequests": len(self.in_generation),
                "numPausedRequests": 0, "numScheduledRequests": self.active,
                "microBatchId": 0, "avgNumDecodedTokensPerIter": 1.0 if self.in_generation else 0.0,
            },
            "kvCacheStats": {
                "maxNumBlocks": max_blocks, "freeNumBlocks": max_blocks - used,
                "usedNumBlocks": used, "tokensPerBlock": tpb, "allocTotalBlocks": used,
                "allocNewBlocks": used, "reusedBlocks": 0, "missedBlocks": used,
                "cacheHitRate": 0.0,
            },
            "staticBatchingStats": None,
            "timestamp": time.strftime("%m-%d-%Y %H:%M:%S"),
        }
        self._new_since_tick = 0
        self._completed_since_tick = 0
        return stats

    def drain_iteration_stats(self) -> list:
        items = list(self.iteration_stats)
        self.iteration_stats.clear()
        return items

    def counters(self) -> dict:
        """Stand-in-only counters (``GET /standin/stats``), for tests and debugging."""
        return {"requests": dict(self.by_kind), "active": self.active, "queued": self.queued,
                "completed": self.completed, "max_active_seen": self.max_active_seen,
                "max_batch_size": self.limits.max_batch_size}
