"""benchstack's prefill/decode router for vLLM: an aiohttp proxy speaking vLLM's P/D protocol.

    python -m benchstack_vllm_nixl.router --host H --port P --model NAME \\
        --prefill http://p0:8100 [--prefill ...] --decode http://d0:8200 [--decode ...]
    python -m benchstack_vllm_nixl.router ... --worker http://w0:8000 [--worker ...]   (aggregated)

Each completion or chat request goes first to a prefill server as ``max_tokens: 1``,
``stream: false`` with ``kv_transfer_params: {"do_remote_decode": true}`` (vLLM then keeps the
KV blocks for a remote reader and answers with the ``kv_transfer_params`` that locate them);
then the original request goes to a decode server with those ``kv_transfer_params``, and its
answer (streamed or not) is passed back as it comes. Both legs carry one ``X-Request-Id``.
This is the protocol of vLLM's own ``toy_proxy_server.py`` and of ``vllm-router``.

``GET /health`` is 200 only when every upstream's ``/health`` is, and lists them per role;
``GET /v1/models`` is a decode (or worker) server's answer; ``GET /metrics`` counts requests.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import itertools
import json
import logging
import sys
import time
import uuid
from typing import Any

from aiohttp import (ClientOSError, ClientResponse, ClientSession, ClientTimeout,
                     ServerDisconnectedError, TCPConnector, web)

log = logging.getLogger("benchstack.router")

#: what vLLM's NixlConnector expects on the prefill leg (do_remote_decode: keep KV for a reader)
PREFILL_KV_PARAMS = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}
# Request headers worth forwarding upstream (hop-by-hop and length headers are not).
FORWARD_HEADERS = ("authorization", "x-request-id", "traceparent")


def prefill_request(body: dict[str, Any]) -> dict[str, Any]:
    """The prefill leg of ``body``: one token, not streamed, KV kept for the decode server."""
    req = copy.deepcopy(body)
    req["kv_transfer_params"] = dict(PREFILL_KV_PARAMS)
    req["stream"] = False
    req["max_tokens"] = 1
    if "max_completion_tokens" in req:
        req["max_completion_tokens"] = 1
    for key in ("stream_options", "min_tokens", "min_completion_tokens"):
        req.pop(key, None)  # not supported with one token / no stream
    return req


def decode_request(body: dict[str, Any], kv_transfer_params: dict[str, Any] | None) -> dict[str, Any]:
    """The decode leg: the original request plus what the prefill server returned."""
    req = copy.deepcopy(body)
    if kv_transfer_params:
        req["kv_transfer_params"] = kv_transfer_params
    return req


class Pool:
    """Upstreams of one role; ``pick`` by round robin or fewest requests in flight."""

    def __init__(self, role: str, urls: list[str], policy: str = "round_robin"):
        self.role = role
        self.urls = [u.rstrip("/") for u in urls]
        self.policy = policy
        self.inflight = {u: 0 for u in self.urls}
        self.served = {u: 0 for u in self.urls}
        self._rr = itertools.cycle(self.urls)

    def pick(self) -> str:
        if self.policy == "least_loaded":
            # ties go to the one that served least so far, then to list order
            return min(self.urls, key=lambda u: (self.inflight[u], self.served[u]))
        return next(self._rr)

    def acquire(self, url: str) -> None:
        self.inflight[url] += 1
        self.served[url] += 1

    def release(self, url: str) -> None:
        self.inflight[url] -= 1


class Router:
    def __init__(self, prefill: list[str], decode: list[str], workers: list[str], model: str | None,
                 policy: str = "round_robin", health_timeout_s: float = 5.0):
        if workers and (prefill or decode):
            raise ValueError("give --worker (aggregated) or --prefill and --decode, not both")
        if not workers and not (prefill and decode):
            raise ValueError("need at least one --prefill and one --decode (or --worker)")
        self.disaggregated = not workers
        self.prefill = Pool("prefill", prefill, policy)
        self.decode = Pool("decode", decode if self.disaggregated else workers, policy)
        self.model = model
        self.health_timeout_s = health_timeout_s
        self.counts = {"requests": 0, "errors": 0, "prefill_errors": 0, "decode_errors": 0}
        self.prefill_seconds = 0.0
        self.session: ClientSession | None = None

    # ------------------------------------------------------------------ app
    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app: web.Application) -> None:
        # No total timeout: a long generation is not an error; connecting is bounded. Idle
        # connections are dropped after 3 s, before vLLM's uvicorn drops them (5 s): a pooled
        # connection the server already closed fails the next request ("Server disconnected").
        self.session = ClientSession(connector=TCPConnector(limit=0, keepalive_timeout=3),
                                     timeout=ClientTimeout(total=None, sock_connect=30))

    async def _stop(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    # ------------------------------------------------------------------ handlers
    async def completions(self, request: web.Request) -> web.StreamResponse:
        self.counts["requests"] += 1
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "request body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        path = request.path
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARD_HEADERS}
        headers.setdefault("X-Request-Id", uuid.uuid4().hex)
        kv_params = None
        if self.disaggregated:
            result = await self._prefill(path, body, headers)
            if isinstance(result, web.Response):
                return result
            kv_params = result
        return await self._decode(request, path, decode_request(body, kv_params), headers)

    async def _prefill(self, path: str, body: dict, headers: dict) -> dict | None | web.Response:
        assert self.session is not None
        url = self.prefill.pick()
        self.prefill.acquire(url)
        t0 = time.monotonic()
        try:
            async with await self._post(url + path, prefill_request(body), headers) as resp:
                data = await resp.read()
                if resp.status != 200:
                    self._count_error("prefill_errors")
                    return web.Response(status=resp.status, body=data, content_type=resp.content_type)
        except Exception as exc:  # connection refused, reset, ...: the client gets a 502
            self._count_error("prefill_errors")
            return _error(502, f"prefill server {url}: {type(exc).__name__}: {exc}")
        finally:
            self.prefill.release(url)
            self.prefill_seconds += time.monotonic() - t0
        try:
            return json.loads(data).get("kv_transfer_params")
        except (ValueError, AttributeError):
            self._count_error("prefill_errors")
            return _error(502, f"prefill server {url} answered something that is not a JSON object")

    async def _decode(self, request: web.Request, path: str, body: dict, headers: dict) -> web.StreamResponse:
        assert self.session is not None
        url = self.decode.pick()
        self.decode.acquire(url)
        out: web.StreamResponse | None = None
        try:
            async with await self._post(url + path, body, headers) as resp:
                if resp.status != 200:
                    self._count_error("decode_errors")
                    return web.Response(status=resp.status, body=await resp.read(),
                                        content_type=resp.content_type)
                out = web.StreamResponse(status=200)
                out.content_type = resp.content_type
                await out.prepare(request)
                async for chunk in resp.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
                return out
        except (ConnectionResetError, asyncio.CancelledError):
            raise  # the client went away
        except Exception as exc:
            self._count_error("decode_errors")
            if out is None:
                return _error(502, f"decode server {url}: {type(exc).__name__}: {exc}")
            raise  # headers already sent: dropping the connection is all that is left
        finally:
            self.decode.release(url)

    async def _post(self, url: str, body: dict, headers: dict) -> ClientResponse:
        """POST; once more if the connection broke before any answer (a stale pooled one)."""
        assert self.session is not None
        try:
            return await self.session.post(url, json=body, headers=headers)
        except (ServerDisconnectedError, ClientOSError) as exc:
            log.warning("retrying %s once: %s: %s", url, type(exc).__name__, exc)
            return await self.session.post(url, json=body, headers=headers)

    def _count_error(self, key: str) -> None:
        self.counts["errors"] += 1
        self.counts[key] += 1

    async def models(self, request: web.Request) -> web.Response:
        assert self.session is not None
        errors = []
        for url in self.decode.urls:
            try:
                async with self.session.get(url + "/v1/models", timeout=ClientTimeout(total=10)) as resp:
                    if resp.status == 200:
                        return web.Response(body=await resp.read(), content_type="application/json")
                    errors.append(f"{url}: HTTP {resp.status}")
            except Exception as exc:
                errors.append(f"{url}: {type(exc).__name__}")
        return _error(503, "no upstream lists models: " + "; ".join(errors))

    async def _healthy(self, url: str) -> bool:
        assert self.session is not None
        try:
            async with self.session.get(url + "/health",
                                        timeout=ClientTimeout(total=self.health_timeout_s)) as resp:
                return resp.status == 200
        except Exception:
            return False

    async def health(self, request: web.Request) -> web.Response:
        pools = [self.prefill, self.decode] if self.disaggregated else [self.decode]
        checks = [(p, u) for p in pools for u in p.urls]
        results = await asyncio.gather(*(self._healthy(u) for _, u in checks))
        body: dict[str, Any] = {}
        for (pool, url), ok in zip(checks, results):
            role = pool.role if self.disaggregated else "workers"
            body.setdefault(role, []).append({"url": url, "healthy": ok})
        ok = all(results)
        body["status"] = "ok" if ok else "unhealthy"
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        lines = []
        for key, value in self.counts.items():
            lines += [f"# TYPE benchstack_router_{key}_total counter",
                      f"benchstack_router_{key}_total {value}"]
        lines += ["# TYPE benchstack_router_prefill_seconds_total counter",
                  f"benchstack_router_prefill_seconds_total {self.prefill_seconds:.6f}"]
        for pool in (self.prefill, self.decode):
            for url in pool.urls:
                lines.append(f'benchstack_router_upstream_requests_total{{role="{pool.role}",'
                             f'url="{url}"}} {pool.served[url]}')
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "code": status}}, status=status)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchstack_vllm_nixl.router", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--prefill", action="append", default=[], metavar="URL")
    ap.add_argument("--decode", action="append", default=[], metavar="URL")
    ap.add_argument("--worker", action="append", default=[], metavar="URL")
    ap.add_argument("--model", help="served model name (informational)")
    ap.add_argument("--policy", choices=["round_robin", "least_loaded"], default="round_robin")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        router = Router(a.prefill, a.decode, a.worker, a.model, a.policy)
    except ValueError as exc:
        ap.error(str(exc))
    log.info("routing %s on %s:%d: prefill=%s decode=%s", a.model or "-", a.host, a.port,
             router.prefill.urls, router.decode.urls)
    web.run_app(router.app(), host=a.host, port=a.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
