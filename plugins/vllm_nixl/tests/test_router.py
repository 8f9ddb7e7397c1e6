"""benchstack's P/D router: request rewriting, upstream choice, and the HTTP flow against fake vLLMs."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from benchstack_vllm_nixl.router import Pool, Router, decode_request, prefill_request

KV = {"do_remote_prefill": True, "do_remote_decode": False, "remote_engine_id": "e1",
      "remote_block_ids": [1, 2], "remote_host": "10.0.0.11", "remote_port": 18001}


def test_prefill_request_is_one_token_unstreamed_and_asks_for_remote_decode():
    body = {"model": "m", "prompt": "hi", "max_tokens": 64, "stream": True,
            "stream_options": {"include_usage": True}, "min_tokens": 64, "max_completion_tokens": 64}
    p = prefill_request(body)
    assert p["max_tokens"] == 1 and p["max_completion_tokens"] == 1 and p["stream"] is False
    assert p["kv_transfer_params"]["do_remote_decode"] is True
    assert p["kv_transfer_params"]["do_remote_prefill"] is False
    assert "stream_options" not in p and "min_tokens" not in p
    assert body["max_tokens"] == 64 and body["stream"] is True  # the original is untouched


def test_decode_request_carries_what_prefill_returned():
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 8}
    d = decode_request(body, KV)
    assert d["kv_transfer_params"] == KV and d["max_tokens"] == 8
    assert "kv_transfer_params" not in body
    assert "kv_transfer_params" not in decode_request(body, None)


def test_pool_round_robin_and_least_loaded():
    rr = Pool("decode", ["http://a/", "http://b"])
    assert [rr.pick() for _ in range(3)] == ["http://a", "http://b", "http://a"]
    ll = Pool("decode", ["http://a", "http://b"], "least_loaded")
    ll.acquire(ll.pick())  # a: 1 in flight
    assert ll.pick() == "http://b"
    ll.acquire("http://b")
    ll.release("http://a")
    assert ll.pick() == "http://a"


def test_router_needs_both_roles_or_workers():
    with pytest.raises(ValueError):
        Router(["http://p"], [], [], "m")
    with pytest.raises(ValueError):
        Router(["http://p"], ["http://d"], ["http://w"], "m")


# --------------------------------------------------------------------------- HTTP flow


class FakeVllm:
    """A vLLM-like upstream that records requests; prefill returns kv_transfer_params."""

    def __init__(self, role: str, status: int = 200):
        self.role, self.status, self.requests = role, status, []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self.complete)
        app.router.add_post("/v1/chat/completions", self.complete)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=self.status)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "tiny", "object": "model"}]})

    async def complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append((request.headers.copy(), body))  # case-insensitive
        if self.status != 200:
            return web.json_response({"error": "boom"}, status=self.status)
        if self.role == "prefill":
            return web.json_response({"choices": [{"text": "a"}], "kv_transfer_params": KV})
        if not body.get("stream"):
            return web.json_response({"choices": [{"text": "abc"}], "usage": {"completion_tokens": 3}})
        resp = web.StreamResponse()
        resp.content_type = "text/event-stream"
        await resp.prepare(request)
        for tok in ("a", "b", "c"):
            await resp.write(f"data: {json.dumps({'choices': [{'text': tok}]})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp


@asynccontextmanager
async def serving(app: web.Application):
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def deployment(prefill_status=200, extra_decode_url=None):
    p, d = FakeVllm("prefill", prefill_status), FakeVllm("decode")
    async with serving(p.app()) as purl, serving(d.app()) as durl:
        decodes = [durl] + ([extra_decode_url] if extra_decode_url else [])
        router = Router([purl], decodes, [], "tiny")
        async with serving(router.app()) as rurl, aiohttp.ClientSession() as client:
            yield p, d, rurl, client


def test_streamed_chat_goes_prefill_then_decode():
    async def go():
        async with deployment() as (p, d, url, client):
            body = {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 3,
                    "stream": True}
            async with client.post(url + "/v1/chat/completions", json=body,
                                   headers={"Authorization": "Bearer k"}) as resp:
                assert resp.status == 200
                assert resp.content_type == "text/event-stream"
                text = await resp.text()
            assert text.count("data: ") == 4 and text.endswith("data: [DONE]\n\n")
            (ph, pb), (dh, db) = p.requests[0], d.requests[0]
            assert pb["max_tokens"] == 1 and pb["stream"] is False
            assert pb["kv_transfer_params"]["do_remote_decode"] is True
            assert db["kv_transfer_params"] == KV and db["stream"] is True and db["max_tokens"] == 3
            assert ph["X-Request-Id"] == dh["X-Request-Id"]  # one id for both legs
            assert ph["Authorization"] == dh["Authorization"] == "Bearer k"
            async with client.get(url + "/metrics") as resp:
                assert "benchstack_router_requests_total 1" in await resp.text()

    asyncio.run(go())


def test_unstreamed_completion_and_models():
    async def go():
        async with deployment() as (p, d, url, client):
            async with client.post(url + "/v1/completions",
                                   json={"model": "tiny", "prompt": "x", "max_tokens": 3}) as resp:
                assert resp.status == 200
                assert (await resp.json())["usage"]["completion_tokens"] == 3
            async with client.get(url + "/v1/models") as resp:
                assert (await resp.json())["data"][0]["id"] == "tiny"

    asyncio.run(go())


def test_prefill_error_is_passed_back_and_decode_not_called():
    async def go():
        async with deployment(prefill_status=400) as (p, d, url, client):
            async with client.post(url + "/v1/completions", json={"model": "tiny", "prompt": "x"}) as resp:
                assert resp.status == 400
            assert d.requests == []
            async with client.get(url + "/health") as resp:
                assert resp.status == 503  # the prefill fake answers 400 on /health too

    asyncio.run(go())


def test_health_lists_every_upstream_and_fails_while_one_is_down():
    async def go():
        async with deployment(extra_decode_url="http://127.0.0.1:9") as (p, d, url, client):
            async with client.get(url + "/health") as resp:
                body = await resp.json()
                assert resp.status == 503
            assert [u["healthy"] for u in body["prefill"]] == [True]
            assert [u["healthy"] for u in body["decode"]] == [True, False]
            # round robin: the second request meets the dead decode server -> 502, not a hang
            statuses = []
            for _ in range(2):
                async with client.post(url + "/v1/completions",
                                       json={"model": "tiny", "prompt": "x"}) as resp:
                    statuses.append(resp.status)
            assert statuses == [200, 502]

    asyncio.run(go())


def test_aggregated_workers_round_robin():
    async def go():
        a, b = FakeVllm("decode"), FakeVllm("decode")
        async with serving(a.app()) as aurl, serving(b.app()) as burl:
            router = Router([], [], [aurl, burl], "tiny")
            async with serving(router.app()) as url, aiohttp.ClientSession() as client:
                for _ in range(4):
                    async with client.post(url + "/v1/completions", json={"prompt": "x"}) as resp:
                        assert resp.status == 200
                async with client.get(url + "/health") as resp:
                    assert resp.status == 200
                    assert len((await resp.json())["workers"]) == 2
        assert len(a.requests) == len(b.requests) == 2
        assert "kv_transfer_params" not in a.requests[0][1]

    asyncio.run(go())


def test_a_connection_dropped_before_any_answer_is_retried_once():
    """vLLM's uvicorn closes idle keep-alive connections; a request on such a one is sent again."""
    class Dropping(FakeVllm):
        async def complete(self, request):
            if not self.requests:
                self.requests.append((request.headers.copy(), await request.json()))
                request.transport.close()  # the client sees "Server disconnected"
                raise asyncio.CancelledError
            return await super().complete(request)

    async def go():
        p, d = FakeVllm("prefill"), Dropping("decode")
        async with serving(p.app()) as purl, serving(d.app()) as durl:
            router = Router([purl], [durl], [], "tiny")
            async with serving(router.app()) as url, aiohttp.ClientSession() as client:
                async with client.post(url + "/v1/completions",
                                       json={"model": "tiny", "prompt": "x"}) as resp:
                    assert resp.status == 200
        assert len(d.requests) == 2 and d.requests[1][1]["kv_transfer_params"] == KV

    asyncio.run(go())


def test_readiness_probe_reads_the_router_health():
    """What bench_discover_endpoints asks the router: model listed, every upstream healthy."""
    from benchstack_vllm_nixl import probe

    async def go():
        async with deployment(extra_decode_url="http://127.0.0.1:9") as (p, d, url, client):
            state = await asyncio.to_thread(probe.router_state, url, "benchstack", "tiny",
                                            {"prefill": 1, "decode": 2})
            assert state.startswith("router /health is 503: ") and '"healthy": false' in state
        async with deployment() as (p, d, url, client):
            ok = await asyncio.to_thread(probe.router_state, url, "benchstack", "tiny",
                                         {"prefill": 1, "decode": 1})
            assert ok is None
            wrong = await asyncio.to_thread(probe.router_state, url, "benchstack", "other",
                                            {"prefill": 1, "decode": 1})
            assert "other" in wrong

    asyncio.run(go())
