"""``trtllm-serve disaggregated``: the context/generation orchestrator, after TensorRT-LLM's
``tensorrt_llm/serve/openai_disagg_server.py`` (1.2 line).

Start-up: wait (polling every ``TRTLLM_STANDIN_DISAGG_POLL_SECONDS``, 3 s as in TensorRT-LLM)
until every context and generation URL answers ``/health`` with 200, for at most ``-t``
seconds; only then listen. Per request: copy it, set ``disaggregated_params: {request_type:
context_only}``, ``stream: false``, ``stream_options: null``, send it to a context server (its
router), check the answer has one choice with ``disaggregated_params.ctx_request_id``; then send
the original request to a generation server with those parameters as ``generation_only`` and
the prompt replaced by the context server's ``prompt_token_ids``, and relay that answer (streamed
bytes as they come). Routes: ``/health``, ``/version``, ``/perf_metrics``, ``/cluster_info``,
``/v1/completions``, ``/v1/chat/completions``.

Stand-in additions (off with ``TRTLLM_STANDIN_STRICT=1``): ``/health`` re-checks the workers
(TensorRT-LLM answers 200 once started), and ``GET /v1/models`` relays the first generation
server's list (TensorRT-LLM's disaggregated server has no such route).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import os
import time
from typing import Any, Optional

import aiohttp
from aiohttp import web

from . import log
from .log import logger
from .protocol import RequestValidationError, validate_request
from .schema import disagg_worker_urls
from .server import fastapi_like


class HTTPError(Exception):
    """FastAPI's HTTPException: answered as ``{"detail": ...}`` with ``status``."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Router:
    """``round_robin``; ``load_balancing`` / ``kv_cache_aware`` pick the least-loaded server.

    The stand-in keeps no KV-cache block table, so ``kv_cache_aware`` reduces to its load term.
    """

    def __init__(self, kind: str, servers: list[str], use_tokens: bool = False):
        self.kind = kind.lower()
        self.servers = servers
        self.use_tokens = use_tokens
        self._cycle = itertools.cycle(range(len(servers))) if servers else None
        self.load = {s: 0 for s in servers}

    def pick(self, cost: int = 1) -> str:
        if not self.servers:
            raise ValueError("No servers available")
        if self.kind == "round_robin":
            server = self.servers[next(self._cycle)]
        else:
            server = min(self.servers, key=lambda s: self.load[s])
        self.load[server] += cost if self.use_tokens else 1
        return server

    def finish(self, server: str, cost: int = 1) -> None:
        self.load[server] -= cost if self.use_tokens else 1


def _router(section: dict, servers: list[str]) -> Router:
    args = dict(section.get("router") or {})
    return Router(str(args.pop("type", "round_robin")), servers, bool(args.get("use_tokens")))


class DisaggServer:
    """The orchestrator in front of context and generation workers."""

    def __init__(self, config: dict, request_timeout: float = 180,
                 start_timeout: float = 180):
        ctx, gen = disagg_worker_urls(config)
        self.ctx_servers = [f"http://{u}" for u in ctx]
        self.gen_servers = [f"http://{u}" for u in gen]
        self.ctx_router = _router(config.get("context_servers") or {}, self.ctx_servers)
        self.gen_router = _router(config.get("generation_servers") or {}, self.gen_servers)
        self.max_retries = int(config.get("max_retries", 1))
        self.perf_max = int(config.get("perf_metrics_max_requests", 0) or 0)
        self.request_timeout = request_timeout
        self.start_timeout = start_timeout
        self.poll = float(os.environ.get("TRTLLM_STANDIN_DISAGG_POLL_SECONDS", "3"))
        self.strict = os.environ.get("TRTLLM_STANDIN_STRICT") == "1"
        self.gen_only = os.environ.get("TRTLLM_DISAGG_BENCHMARK_GEN_ONLY") == "1"
        self.session: Optional[aiohttp.ClientSession] = None
        self.perf_keys: list = []
        self.server_perf: dict = {}
        self._health_cache = (0.0, True)
        logger.info(f"Server max retries: {self.max_retries}")

    # --- start-up ---------------------------------------------------------------------------------
    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            # as TensorRT-LLM: no connection limit, no keep-alive, one total timeout
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=True),
                timeout=aiohttp.ClientTimeout(total=self.request_timeout))
        return self.session

    async def _ready(self, server: str) -> bool:
        try:
            async with self._session().get(server + "/health",
                                           timeout=aiohttp.ClientTimeout(total=5)) as r:
                return r.status == 200
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
            return False

    async def _unready(self, servers: list[str]) -> list[str]:
        ready = await asyncio.gather(*(self._ready(s) for s in servers))
        return [s for s, ok in zip(servers, ready) if not ok]

    async def wait_for_servers(self) -> None:
        """Block until all workers are healthy; TimeoutError after ``start_timeout`` seconds."""
        logger.info("Waiting for context and generation servers to be ready")

        async def loop() -> None:
            iteration = 0
            unready = await self._unready(self.ctx_servers + self.gen_servers)
            while unready:
                logger.info(f"[{iteration}] Servers are not ready. Waiting for {unready}...")
                await asyncio.sleep(self.poll)
                iteration += 1
                unready = await self._unready(unready)

        await asyncio.wait_for(loop(), timeout=self.start_timeout)
        logger.info("Context and generation servers are ready")
        if self.perf_max > 0:
            await self._set_clock_offsets()

    async def _set_clock_offsets(self) -> None:
        for server in self.ctx_servers + self.gen_servers:
            try:
                t0 = time.monotonic()
                async with self._session().get(server + "/steady_clock_offset") as r:
                    t3 = time.monotonic()
                    data = await r.json()
                offset = ((data["receive_ts"] - t0) + (data["transmit_ts"] - t3)) / 2
                async with self._session().post(server + "/steady_clock_offset",
                                                json={"offset": -offset}):
                    pass
                logger.info(f"Server: {server}, offset: {offset} second")
            except (aiohttp.ClientError, OSError, KeyError, ValueError):
                logger.warning(f"Unable to measure steady clock offset for {server}; skipping "
                               "adjustment")

    # --- routes ------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[fastapi_like, self._http_errors],
                              client_max_size=1 << 30)
        r = app.router
        r.add_get("/health", self.health)
        r.add_get("/version", self.version)
        r.add_get("/perf_metrics", self.perf_metrics)
        r.add_get("/cluster_info", self.cluster_info)
        r.add_post("/v1/completions", self.completions)
        r.add_post("/v1/chat/completions", self.chat_completions)
        if not self.strict:
            r.add_get("/v1/models", self.models)
        app.on_cleanup.append(self._close)
        return app

    @web.middleware
    async def _http_errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except HTTPError as e:
            logger.error(f"HTTPException {e.status} {e.detail}")
            return web.json_response({"detail": e.detail}, status=e.status)

    async def _close(self, _: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def health(self, _: web.Request) -> web.Response:
        if self.strict:
            return web.Response(status=200)
        checked, ok = self._health_cache
        if time.monotonic() - checked > 1.0:
            ok = not await self._unready(self.ctx_servers + self.gen_servers)
            self._health_cache = (time.monotonic(), ok)
        return web.Response(status=200 if ok else 500)

    async def version(self, _: web.Request) -> web.Response:
        return web.json_response({"version": log.VERSION})

    async def cluster_info(self, _: web.Request) -> web.Response:
        return web.json_response({})

    async def models(self, _: web.Request) -> web.Response:
        try:
            async with self._session().get(self.gen_servers[0] + "/v1/models") as r:
                return web.json_response(await r.json(), status=r.status)
        except (aiohttp.ClientError, OSError, IndexError) as e:
            raise HTTPError(500, f"Internal server error {e}") from e

    async def perf_metrics(self, _: web.Request) -> web.Response:
        if self.perf_max <= 0:
            return web.json_response([])
        for server in self.ctx_servers + self.gen_servers:
            async with self._session().get(server + "/perf_metrics") as r:
                for item in await r.json():
                    if item.get("ctx_request_id") is not None:
                        self.server_perf.setdefault(server, {})[item["ctx_request_id"]] = item
        out, remain = [], []
        for ctx, gen, rid, arrival, first in self.perf_keys:
            gen_item = self.server_perf.get(gen, {}).pop(rid, None)
            if gen_item is None:
                remain.append((ctx, gen, rid, arrival, first))
                continue
            out.append({"ctx_server": ctx, "gen_server": gen,
                        "disagg_server_arrival_time": arrival,
                        "disagg_server_first_token_time": first,
                        "ctx_perf_metrics": self.server_perf.get(ctx, {}).pop(rid, None),
                        "gen_perf_metrics": gen_item})
        self.perf_keys = remain[-self.perf_max:]
        return web.json_response(out)

    # --- the disaggregated request flow -----------------------------------------------------------
    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._entry(request, chat=False)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._entry(request, chat=True)

    async def _entry(self, request: web.Request, chat: bool) -> web.StreamResponse:
        arrival = time.monotonic()
        try:
            body = validate_request(await request.json(), chat)
        except RequestValidationError as e:
            return web.json_response({"error": str(e)}, status=400)
        except ValueError as e:
            return web.json_response({"error": f"JSON decode error: {e}"}, status=400)
        if not chat and not isinstance(body["prompt"], str):
            prompt = body["prompt"]
            if isinstance(prompt, list) and len(prompt) == 1:
                body["prompt"] = prompt[0]
            elif not all(isinstance(x, int) for x in prompt):
                raise HTTPError(500, "Internal server error Disaggregated server currently only "
                                     "supports single string prompt or list of integers in "
                                     "request")
        endpoint = "/v1/chat/completions" if chat else "/v1/completions"
        try:
            return await self._disagg(request, body, chat, endpoint, arrival)
        except HTTPError:
            raise
        except Exception as e:  # noqa: BLE001 - the real server maps everything else to 500
            logger.error(f"Internal server error: {e!r}")
            raise HTTPError(500, f"Internal server error {e}") from e

    async def _post_json(self, server: str, endpoint: str, body: dict) -> dict:
        for attempt in range(self.max_retries + 1):
            try:
                async with self._session().post(server + endpoint, json=body) as r:
                    if "text/event-stream" in r.headers.get("Content-Type", ""):
                        raise ValueError("Received an event-stream although request stream was "
                                         "False")
                    data = await r.json()
                    if not r.ok:
                        logger.error(f"Received failed response {data}")
                        r.raise_for_status()
                    return data
            except (aiohttp.ClientError, OSError) as e:
                if attempt == self.max_retries:
                    raise HTTPError(500, "Internal server error") from e
                logger.error(f"Client error: {e} - retry {attempt} of {self.max_retries}")
                await asyncio.sleep(1)
        raise HTTPError(500, "Internal server error")

    async def _context_phase(self, body: dict, endpoint: str) -> tuple[str, dict]:
        ctx_body = copy.deepcopy(body)
        ctx_body["disaggregated_params"] = {"request_type": "context_only"}
        ctx_body["stream"] = False
        ctx_body["stream_options"] = None
        server = self.ctx_router.pick()
        logger.debug(f"Sending request to ctx server: {server}")
        try:
            response = await self._post_json(server, endpoint, ctx_body)
        finally:
            self.ctx_router.finish(server)
        choices = response.get("choices") or []
        if len(choices) != 1:
            raise ValueError("Context server did not return a single choice. This is not "
                             "expected")
        params = choices[0].get("disaggregated_params")
        if params is None:
            raise ValueError("Context server did not return disaggregated params")
        if params.get("ctx_request_id") is None:
            raise ValueError("Invalid disaggregated params in context phase response.")
        return server, response

    async def _disagg(self, request: web.Request, body: dict, chat: bool, endpoint: str,
                      arrival: float) -> web.StreamResponse:
        ctx_server, ctx_response, ctx_request_id = None, None, None
        if self.gen_only:
            body["disaggregated_params"] = {"request_type": "generation_only",
                                            "first_gen_tokens": [7], "ctx_request_id": 1,
                                            "encoded_opaque_state": None, "draft_tokens": None}
            body["ignore_eos"] = True
        else:
            ctx_server, ctx_response = await self._context_phase(body, endpoint)
            params = dict(ctx_response["choices"][0]["disaggregated_params"])
            params["request_type"] = "generation_only"
            ctx_request_id = params["ctx_request_id"]
            body["disaggregated_params"] = params
            if chat:
                body["prompt_token_ids"] = ctx_response.get("prompt_token_ids")
            else:
                body["prompt"] = ctx_response.get("prompt_token_ids")
        finished = ctx_response is not None and \
            ctx_response["choices"][0].get("finish_reason") not in ("length", "not_finished")
        gen_server = self.gen_router.pick()
        logger.debug(f"Sending request to gen server: {gen_server}")
        if not body.get("stream"):
            try:
                if finished:
                    ctx_response["choices"][0].pop("disaggregated_params", None)
                    return web.json_response(ctx_response)
                result = await self._post_json(gen_server, endpoint, body)
                self._remember(ctx_server, gen_server, ctx_request_id, arrival)
                return web.json_response(result)
            finally:
                self.gen_router.finish(gen_server)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)
        try:
            if finished:
                await response.write(b"data: [DONE]\n\n")
            else:
                await self._relay_stream(gen_server, endpoint, body, response)
                self._remember(ctx_server, gen_server, ctx_request_id, arrival)
        finally:
            self.gen_router.finish(gen_server)
        await response.write_eof()
        return response

    async def _relay_stream(self, server: str, endpoint: str, body: dict,
                            response: web.StreamResponse) -> None:
        async with self._session().post(server + endpoint, json=body) as r:
            if "text/event-stream" not in r.headers.get("Content-Type", ""):
                logger.error(f"Generation server answered {r.status} without an event stream: "
                             f"{(await r.text())[:500]}")
                return
            async for piece in r.content.iter_any():
                if piece:
                    await response.write(piece)

    def _remember(self, ctx: Optional[str], gen: str, rid: Optional[int], arrival: float) -> None:
        if self.perf_max > 0 and ctx is not None:
            self.perf_keys.append((ctx, gen, rid, arrival, time.monotonic()))
            del self.perf_keys[:-self.perf_max]
