"""The worker: trtllm-serve's OpenAI server (``tensorrt_llm/serve/openai_server.py``) on aiohttp.

Routes as the real server's: ``GET /health`` (empty 200), ``/health_generate``, ``/version``,
``/v1/models`` (one model, id = MODEL's directory name), ``/metrics`` (JSON list of iteration
stats, drained on read; PyTorch backend only with ``enable_iter_perf_stats: true``),
``/perf_metrics`` (per-request timing, drained on read; needs ``return_perf_metrics: true`` and
``perf_metrics_max_requests > 0``), ``GET``/``POST /steady_clock_offset``,
``POST /kv_cache_events`` and ``POST /v1/completions`` / ``/v1/chat/completions``.
A request carrying ``disaggregated_params`` with ``request_type: context_only`` runs prefill and
returns one token plus the parameters a generation server needs; ``generation_only`` skips the
prefill. ``GET /standin/stats`` (not in ``TRTLLM_STANDIN_STRICT=1`` mode) exposes counters.

The console entry point :func:`main` lives in :mod:`.cli` and is re-exported here.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import time
from typing import Any, Optional

from aiohttp import web

from . import log
from .engine import Engine, Request, RequestError
from .log import logger
from .protocol import (DONE, RequestValidationError, ResponseBuilder, error_body, max_tokens_of,
                       usage, validate_request)
from .tokenizer import SimpleTokenizer, render_chat


def _strict() -> bool:
    return os.environ.get("TRTLLM_STANDIN_STRICT") == "1"


@web.middleware
async def fastapi_like(request: web.Request, handler: Any) -> web.StreamResponse:
    """404/405 bodies as FastAPI writes them, and uvicorn's access-log line."""
    try:
        response = await handler(request)
    except web.HTTPNotFound:
        response = web.json_response({"detail": "Not Found"}, status=404)
    except web.HTTPMethodNotAllowed:
        response = web.json_response({"detail": "Method Not Allowed"}, status=405)
    if os.environ.get("TRTLLM_STANDIN_ACCESS_LOG", "1") != "0":
        peer = request.transport.get_extra_info("peername") if request.transport else None
        where = f"{peer[0]}:{peer[1]}" if peer else "-"
        log.uvicorn(f'{where} - "{request.method} {request.path_qs} HTTP/'
                    f'{request.version.major}.{request.version.minor}" {response.status} '
                    f"{response.reason}")
    return response


class WorkerServer:
    """HTTP front of one simulated engine instance."""

    def __init__(self, model_id: str, engine: Engine, tokenizer: Any = None,
                 server_role: Optional[str] = None):
        self.model_id = model_id
        self.engine = engine
        self.tokenizer = tokenizer or SimpleTokenizer()
        self.server_role = server_role
        self.steady_clock_offset = 0.0

    def app(self) -> web.Application:
        app = web.Application(middlewares=[fastapi_like], client_max_size=1 << 30)
        r = app.router
        r.add_get("/health", self.health)
        r.add_get("/health_generate", self.health_generate)
        r.add_get("/version", self.version)
        r.add_get("/v1/models", self.models)
        r.add_get("/metrics", self.metrics)
        r.add_get("/perf_metrics", self.perf_metrics)
        r.add_get("/steady_clock_offset", self.get_clock_offset)
        r.add_post("/steady_clock_offset", self.set_clock_offset)
        r.add_post("/kv_cache_events", self.kv_cache_events)
        r.add_post("/v1/completions", self.completions)
        r.add_post("/v1/chat/completions", self.chat_completions)
        if not _strict():
            r.add_get("/standin/stats", self.stats)
        return app

    # --- small endpoints -------------------------------------------------------------------------
    async def health(self, _: web.Request) -> web.Response:
        return web.Response(status=200)

    async def health_generate(self, _: web.Request) -> web.Response:
        try:
            prompt = self.tokenizer.encode(render_chat([{"role": "user", "content": "hi"}]))
            async for _tokens in self.engine.generate(Request(prompt, 1)):
                pass
        except Exception as e:  # noqa: BLE001 - mirrors the real handler's catch-all
            return web.Response(status=500, text=f"Generation health check failed: {e}")
        return web.Response(status=200, text="Generation health check OK")

    async def version(self, _: web.Request) -> web.Response:
        return web.json_response({"version": log.VERSION})

    async def models(self, _: web.Request) -> web.Response:
        card = {"id": self.model_id, "object": "model", "created": int(time.time()),
                "owned_by": "tensorrt_llm"}
        return web.json_response({"object": "list", "data": [card]})

    async def metrics(self, _: web.Request) -> web.Response:
        return web.json_response(self.engine.drain_iteration_stats())

    async def perf_metrics(self, _: web.Request) -> web.Response:
        return web.json_response(self.engine.drain_perf_metrics())

    async def get_clock_offset(self, _: web.Request) -> web.Response:
        receive_ts = time.monotonic()
        await asyncio.sleep(0.2)
        return web.json_response({"receive_ts": receive_ts, "transmit_ts": time.monotonic()})

    async def set_clock_offset(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.engine.clock_offset = float(body.get("offset", 0.0))
        logger.info(f"The steady clock offset between local and disagg server: "
                    f"{self.engine.clock_offset} second")
        return web.Response(status=200)

    async def kv_cache_events(self, _: web.Request) -> web.Response:
        return web.json_response([])

    async def stats(self, _: web.Request) -> web.Response:
        return web.json_response(self.engine.counters() | {"server_role": self.server_role})

    # --- generation ------------------------------------------------------------------------------
    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        arrival = time.monotonic()
        try:
            body = validate_request(await request.json(), chat)
        except RequestValidationError as e:
            return web.json_response({"error": str(e)}, status=400)
        except ValueError as e:  # body is not JSON
            return web.json_response({"error": str([{"type": "json_invalid", "loc": ("body",),
                                                     "msg": f"JSON decode error: {e}"}])},
                                     status=400)
        try:
            plan = self._plan(body, chat, arrival)
        except RequestError as e:
            logger.error(str(e))
            return web.json_response(error_body(str(e)), status=400)
        if body.get("stream"):
            return await self._stream(request, plan)
        return await self._complete(plan)

    def _prompts(self, body: dict, chat: bool) -> list:
        if chat:
            if body.get("prompt_token_ids") is not None:
                return [list(body["prompt_token_ids"])]
            text = render_chat(body["messages"], body.get("add_generation_prompt", True))
            return [self.tokenizer.encode(text)]
        prompt = body["prompt"]
        if isinstance(prompt, str):
            return [self.tokenizer.encode(prompt)]
        if all(isinstance(p, int) for p in prompt):
            return [list(prompt)]
        return [self.tokenizer.encode(p) if isinstance(p, str) else list(p) for p in prompt]

    def _plan(self, body: dict, chat: bool, arrival: float) -> dict:
        params = body.get("disaggregated_params") or {}
        kind = params.get("request_type") or "aggregated"
        if kind == "context_and_generation":
            kind = "aggregated"
        if kind not in ("aggregated", "context_only", "generation_only"):
            raise RequestError(f"Unknown disaggregated request_type: {kind}")
        if kind != "aggregated" and not self.engine.limits.disagg_capable:
            raise RequestError(f"{kind} request needs a KV cache transceiver: set "
                               "cache_transceiver_config.backend in this server's "
                               "--extra_llm_api_options")
        first = None
        if kind == "generation_only":
            gen_tokens = params.get("first_gen_tokens") or []
            if params.get("ctx_request_id") is None or not gen_tokens:
                raise RequestError("generation_only request needs disaggregated_params with "
                                   "ctx_request_id and first_gen_tokens from the context server")
            first = gen_tokens[0]
        n = int(body.get("n") or 1)
        prompts = self._prompts(body, chat)
        wanted = max_tokens_of(body, chat)
        reqs = []
        for p_idx, ids in enumerate(prompts):
            max_tokens = self.engine.resolve_max_tokens(len(ids), wanted, kind)
            for c_idx in range(n):
                index = c_idx if chat else p_idx * n + c_idx
                reqs.append((index, Request(ids, max_tokens, kind, first,
                                            params.get("ctx_request_id"), arrival)))
        # StreamOptions defaults: include_usage True, continuous_usage_stats False
        options = body.get("stream_options")
        include = options is not None and bool(options.get("include_usage", True))
        return {"chat": chat, "kind": kind, "reqs": reqs, "prompts": prompts,
                "wanted": wanted, "include_usage": include,
                "continuous": include and bool(options.get("continuous_usage_stats"))}

    def _finish(self, plan: dict, req: Request) -> str:
        if plan["kind"] == "context_only":
            return "length" if req.max_tokens == 1 else "not_finished"
        return "length"

    def _disagg_params(self, plan: dict, req: Request, tokens: list) -> Optional[dict]:
        if plan["kind"] != "context_only":
            return None
        state = base64.b64encode(f"standin-ctx:{req.request_id}".encode()).decode()
        return {"request_type": "context_only", "first_gen_tokens": tokens[:1],
                "ctx_request_id": req.request_id, "encoded_opaque_state": state,
                "draft_tokens": None, "disagg_request_id": None, "ctx_dp_rank": 0,
                "ctx_info_endpoint": None, "schedule_style": None}

    async def _run_all(self, plan: dict, queue: asyncio.Queue) -> None:
        async def one(index: int, req: Request) -> None:
            try:
                async for tokens in self.engine.generate(req):
                    await queue.put((index, req, tokens))
            finally:
                queue.put_nowait((index, req, None))  # end marker, also on failure

        await asyncio.gather(*(one(i, r) for i, r in plan["reqs"]))

    async def _complete(self, plan: dict) -> web.Response:
        queue: asyncio.Queue = asyncio.Queue()
        outputs: dict = {}
        try:
            await self._run_all(plan, queue)
        except RequestError as e:
            return web.json_response(error_body(str(e)), status=400)
        while not queue.empty():
            index, req, tokens = queue.get_nowait()
            entry = outputs.setdefault(index, {"req": req, "tokens": []})
            if tokens:
                entry["tokens"].extend(tokens)
        builder = ResponseBuilder(self.model_id, plan["chat"])
        choices = []
        for index in sorted(outputs):
            req, tokens = outputs[index]["req"], outputs[index]["tokens"]
            text = "".join(self.tokenizer.decode_one(t) for t in tokens)
            choices.append(builder.choice(index, text, self._finish(plan, req),
                                          self._disagg_params(plan, req, tokens)))
        prompt_tokens = sum(len(p) for p in plan["prompts"])
        completion_tokens = sum(len(o["tokens"]) for o in outputs.values())
        prompt_ids = None
        if plan["kind"] == "context_only":
            prompt_ids = plan["prompts"][0] if len(plan["prompts"]) == 1 else plan["prompts"]
        body = builder.full(choices, usage(prompt_tokens, completion_tokens), prompt_ids)
        return web.json_response(body)

    async def _stream(self, request: web.Request, plan: dict) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)
        builder = ResponseBuilder(self.model_id, plan["chat"])
        queue: asyncio.Queue = asyncio.Queue()
        runner = asyncio.ensure_future(self._run_all(plan, queue))
        prompt_tokens = sum(len(p) for p in plan["prompts"])
        produced: dict = {}
        remaining = len(plan["reqs"])
        try:
            while remaining:
                index, req, tokens = await queue.get()
                if tokens is None:
                    remaining -= 1
                    continue
                first = index not in produced
                produced[index] = produced.get(index, 0) + len(tokens)
                done = produced[index] >= (1 if req.kind == "context_only" else req.max_tokens)
                use = usage(prompt_tokens, sum(produced.values())) if plan["continuous"] else None
                chunk = ""
                if first and plan["chat"]:
                    chunk += builder.role_chunk(index, use)
                text = "".join(self.tokenizer.decode_one(t) for t in tokens)
                chunk += builder.token_chunk(index, text, self._finish(plan, req) if done else None,
                                             use)
                await response.write(chunk.encode())
            await runner
            if plan["include_usage"]:
                await response.write(builder.usage_chunk(
                    usage(prompt_tokens, sum(produced.values()))).encode())
            await response.write(DONE.encode())
        except ConnectionResetError:  # the client went away: abort, as await_disconnected does
            logger.info(f"{request.remote} is disconnected, abort request")
            return response
        finally:
            if not runner.done():
                runner.cancel()
        await response.write_eof()
        return response


async def serve(app: web.Application, sock: socket.socket, url: str,
                load_seconds: float = 0.0, before_listen: Any = None) -> None:
    """Load (sleep), then listen on the pre-bound ``sock`` until SIGTERM/SIGINT.

    The socket is bound but not listening while "loading", so connections are refused, as with
    trtllm-serve (it binds before building the LLM and uvicorn listens afterwards).
    ``before_listen`` is an optional coroutine function awaited after uvicorn's startup banner
    lines and before listening (the disaggregated server waits for its workers there).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if load_seconds > 0:
        try:
            await asyncio.wait_for(stop.wait(), timeout=load_seconds)
            return  # stopped while loading
        except asyncio.TimeoutError:
            pass
    pid = os.getpid()
    log.uvicorn(f"Started server process [{pid}]")
    log.uvicorn("Waiting for application startup.")
    if before_listen is not None:
        waiter = asyncio.ensure_future(before_listen())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            return
        stopper.cancel()
        waiter.result()  # re-raise a start-up failure (e.g. TimeoutError)
    # handler_cancellation: a client that disconnects aborts its request (frees its slot)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    site = web.SockSite(runner, sock, shutdown_timeout=1.0)
    await site.start()
    log.uvicorn("Application startup complete.")
    log.uvicorn(f"Uvicorn running on {url} (Press CTRL+C to quit)")
    await stop.wait()
    log.uvicorn("Shutting down")
    log.uvicorn("Waiting for application shutdown.")
    await runner.cleanup()
    log.uvicorn("Application shutdown complete.")
    log.uvicorn(f"Finished server process [{pid}]")


def bind(host: str, port: int) -> socket.socket:
    """Bind (not listen) like ``launch_server``; raise RuntimeError as it does on failure."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise RuntimeError(f"Failed to bind socket to {host}:{port}: {e}") from e
    return sock


def __getattr__(name: str) -> Any:  # lazy re-export, avoids an import cycle with .cli
    if name == "main":
        from .cli import main
        return main
    raise AttributeError(name)
