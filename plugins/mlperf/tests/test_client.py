"""benchstack's streaming client (``benchstack.client``, the SUT of the mlperf plugin): SSE parsing
edge cases against a scripted server, endpoint policies, load shapes and metrics."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from aiohttp import web

from benchstack import client as c


def event(obj) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def delta(text, finish=None, **extra):
    return event({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}], **extra})


ROLE = event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
USAGE = event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})
DONE = b"data: [DONE]\n\n"


async def scripted(writes, *, status=200, ctype="text/event-stream", gap=0.004, **client_kw):
    """Serve ``writes`` (a list of byte strings, written ``gap`` s apart) and send one request."""
    seen = {}

    async def handler(request):
        seen["body"] = json.loads(await request.read())
        seen["headers"] = dict(request.headers)
        resp = web.StreamResponse(status=status, headers={"Content-Type": ctype})
        await resp.prepare(request)
        for w in writes:
            await resp.write(w)
            await asyncio.sleep(gap)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    app.router.add_post("/v1/completions", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    prompt = client_kw.pop("prompt", c.Prompt(text="hi there", max_tokens=3))
    try:
        async with c.StreamingClient([f"http://127.0.0.1:{port}"], "m", c.ClientOptions(**client_kw)) as cl:
            rec = await cl.send(prompt)
    finally:
        await runner.cleanup()
    return rec, seen


def run(coro):
    return asyncio.run(coro)


def test_usage_counts_and_first_token_skips_the_role_chunk():
    rec, seen = run(scripted([ROLE, delta("a"), delta("b"), delta("c", "length"), USAGE, DONE]))
    assert rec.ok and rec.usage and rec.output_tokens == 3 and rec.input_tokens == 7
    assert rec.t_send < rec.t_first < rec.t_end
    assert rec.e2e_ms - rec.ttft_ms > 10  # the first token came after the role chunk's gap...
    body = seen["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": "hi there"}] and body["max_tokens"] == 3
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers["x-request-id"].startswith("bench-") and headers["accept-encoding"] == "identity"


def test_without_usage_content_events_are_counted():
    writes = [ROLE, delta("a"), delta("b"), delta(""), delta("c", "stop"), DONE]
    rec, _ = run(scripted(writes, include_usage=False))
    assert rec.ok and not rec.usage and rec.output_tokens == 4  # fast path: every data line, less [DONE]
    rec, _ = run(scripted([ROLE + delta("a") + delta("b") + delta("c") + DONE], include_usage=False))
    assert rec.ok and rec.output_tokens == 3  # one read: every event decoded


def test_events_split_across_reads_and_crlf():
    whole = ROLE + delta("x") + delta("y") + delta("z") + USAGE + DONE
    pieces = [whole[i:i + 37] for i in range(0, len(whole), 37)]
    rec, _ = run(scripted(pieces, gap=0.002))
    assert rec.ok and rec.output_tokens == 3 and rec.usage
    crlf = [w.replace(b"\n", b"\r\n") for w in (ROLE, delta("x"), delta("y"), USAGE, DONE)]
    rec, _ = run(scripted(crlf, include_usage=True))
    assert rec.ok and rec.output_tokens == 3 and rec.t_first is not None


def test_usage_null_in_every_chunk_then_the_real_one():
    nul = lambda t: delta(t, usage=None)  # noqa: E731 - OpenAI sends "usage": null on every chunk
    rec, _ = run(scripted([nul("a"), nul("b"), nul("c"), nul("d"), USAGE, DONE]))
    assert rec.usage and rec.output_tokens == 3  # the server's count wins over 4 events


ERROR = b'event: error\ndata: {"error": {"message": "engine died", "code": 500}}\n\n'


@pytest.mark.parametrize("layout", ["own read", "with a token", "split", "data only", "before first"])
def test_in_stream_error_fails_the_request(layout):
    if layout == "own read":
        writes = [ROLE, delta("a"), delta("b"), ERROR]
    elif layout == "with a token":
        writes = [ROLE, delta("a"), delta("b") + ERROR]
    elif layout == "split":
        writes = [ROLE, delta("a"), delta("b") + ERROR[:9], ERROR[9:]]
    elif layout == "data only":
        writes = [ROLE, delta("a"), delta("b"), b'data: {"error": {"message": "engine died"}}\n\n']
    else:
        writes = [ROLE, ERROR]
    rec, _ = run(scripted(writes))
    assert not rec.ok and rec.error == "in-stream error: engine died"
    assert rec.t_end is not None


def test_error_words_inside_content_are_content():
    writes = [ROLE, delta("a"), delta('the "error" event: error'), delta("c"), USAGE, DONE]
    rec, _ = run(scripted(writes))
    assert rec.ok and rec.output_tokens == 3


def test_http_error_and_connection_refused():
    rec, _ = run(scripted([b'{"error": {"message": "model not found", "code": 404}}'], status=404,
                          ctype="application/json"))
    assert not rec.ok and rec.status == 404 and rec.error == "HTTP 404: model not found"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def refused():
        async with c.StreamingClient([f"http://127.0.0.1:{port}"], "m") as cl:
            return await cl.send(c.Prompt(text="x"))
    rec = run(refused())
    assert not rec.ok and "ConnectionRefusedError" in rec.error


def test_non_streaming_and_completions_token_ids():
    body = json.dumps({"choices": [{"index": 0, "text": "abc"}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 5}}).encode()
    rec, seen = run(scripted([body], ctype="application/json", stream=False, api="completions",
                             keep_text=True, prompt=c.Prompt(token_ids=[1, 2, 3], max_tokens=5)))
    assert rec.ok and rec.output_tokens == 5 and rec.text == "abc" and rec.itl_ms is None
    assert rec.ttft_ms == rec.e2e_ms
    assert seen["body"]["prompt"] == [1, 2, 3] and "stream_options" not in seen["body"]


def test_keep_text_and_extra_body():
    rec, seen = run(scripted([ROLE, delta("he"), delta("llo"), USAGE, DONE], keep_text=True,
                             ignore_eos=True, extra_body={"temperature": 0}, request_ids=False))
    assert rec.text == "hello" and rec.output_tokens == 3
    assert seen["body"]["ignore_eos"] is True and seen["body"]["temperature"] == 0
    assert "x-request-id" not in {k.lower() for k in seen["headers"]}


def test_chat_needs_text():
    cl = c.StreamingClient(["http://127.0.0.1:1"], "m")
    with pytest.raises(ValueError, match="chat API needs text"):
        cl.body(c.Prompt(token_ids=[1, 2]))
    with pytest.raises(ValueError):
        c.Prompt()


def test_endpoint_policies():
    rr = c.EndpointPicker(3, "round_robin")
    assert [rr.acquire() for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    lo = c.EndpointPicker(3, "least_outstanding")
    a, b, d = lo.acquire(), lo.acquire(), lo.acquire()
    assert sorted((a, b, d)) == [0, 1, 2]
    lo.release(1)
    assert lo.acquire() == 1  # the only idle one
    lo.release(0), lo.release(2)
    assert lo.acquire() in (0, 2) and lo.outstanding.count(0) <= 1
    with pytest.raises(ValueError):
        c.EndpointPicker(2, "random")


def test_metrics_from_records_itl_formula():
    recs = []
    for i, (first, end, n) in enumerate([(20, 100, 5), (30, 130, 11)]):
        r = c.RequestRecord(i, 0)
        r.t_send, r.t_first, r.t_end = 0, first * 10**6, end * 10**6
        r.output_tokens, r.input_tokens, r.ok = n, 4, True
        recs.append(r)
    bad = c.RequestRecord(2, 0)
    bad.t_send, bad.t_end, bad.error = 0, 50 * 10**6, "HTTP 500"
    m = c.metrics_from_records(recs + [bad])
    assert m.itl_ms.mean == pytest.approx((80 / 4 + 100 / 10) / 2)  # (end - first) / (n - 1)
    assert m.ttft_ms.p50 == pytest.approx(25) and m.e2e_ms.max == pytest.approx(130)
    assert (m.requests_sent, m.requests_completed, m.requests_failed) == (3, 2, 1)
    assert m.duration_s == pytest.approx(0.13)
    assert m.request_throughput == pytest.approx(2 / 0.13)
    assert m.output_token_throughput == pytest.approx(16 / 0.13)
    assert m.total_token_throughput == pytest.approx(24 / 0.13)
    assert c.failure_summary(recs + [bad]) == ["1 x HTTP 500"]


def test_arrival_times():
    assert c.arrival_times(4, 4, "constant") == [0, 0.25, 0.5, 0.75]
    t = c.arrival_times(100, 5000, "poisson", seed=1)
    assert t == c.arrival_times(100, 5000, "poisson", seed=1) and t == sorted(t)
    assert 5000 / t[-1] == pytest.approx(100, rel=0.05)
    with pytest.raises(ValueError):
        c.arrival_times(1, 1, "bursty")


def test_load_shapes_against_the_timed_server(server):
    server.configure(ttft_ms=2, itl_ms=1)
    prompts = c.make_prompts(4, 8, 4)

    async def closed():
        async with c.StreamingClient([server.url], "timed-model") as cl:
            return await c.closed_loop(cl, prompts, concurrency=3, num_requests=12, warmup=2)

    recs = c.run(closed())
    stats = server.stats()
    assert [r.index for r in recs] == list(range(12)) and all(r.ok for r in recs)
    assert stats["requests"] == 14 and stats["max_in_flight"] <= 3
    server.reset()

    async def opened():
        async with c.StreamingClient([server.url], "timed-model") as cl:
            return await c.open_loop(cl, prompts, rate=200, num_requests=40, arrival="constant")

    recs = c.run(opened())
    sends = sorted(r.t_send for r in recs)
    assert all(r.ok for r in recs) and (sends[-1] - sends[0]) / 1e9 == pytest.approx(39 / 200, abs=0.03)


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("step", [1, 2, 3, 7, 19, 64, 10_000])
def test_http_parser_handles_any_read_boundaries(step, crlf):
    """The response parser inside the client's protocol: chunked bodies cut at every place."""
    events = [ROLE, delta("a"), delta("b"), delta("c", "length"), USAGE, DONE]
    if crlf:  # SSE with CRLF line ends: CRLF inside chunk data too
        events = [e.replace(b"\n", b"\r\n") for e in events]
    body = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"
    wire = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + body)

    async def go():
        loop = asyncio.get_running_loop()
        conn = c._Connection()
        conn.transport = _FakeTransport()
        rec = c.RequestRecord(0, 0)
        fut = loop.create_future()
        conn.send(b"request", c._Exchange(rec, fut, None, True, True))
        for i in range(0, len(wire), step):
            conn.data_received(wire[i:i + step])
        assert fut.done() and conn.exchange is None and conn.reusable
        return rec

    rec = run(go())
    assert rec.ok and rec.status == 200 and rec.text == "abc" and rec.output_tokens == 3 and rec.usage


def test_http_parser_content_length_and_close():
    async def go(wire, close=False):
        loop = asyncio.get_running_loop()
        conn = c._Connection()
        conn.transport = _FakeTransport()
        rec = c.RequestRecord(0, 0)
        fut = loop.create_future()
        conn.send(b"request", c._Exchange(rec, fut, None, True, False))
        for i in range(0, len(wire), 5):
            conn.data_received(wire[i:i + 5])
        if close:
            conn.connection_lost(None)
        return rec, conn

    body = json.dumps({"choices": [{"text": "xyz"}], "usage": {"completion_tokens": 2}}).encode()
    rec, conn = run(go(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)))
    assert rec.ok and rec.text == "xyz" and rec.output_tokens == 2 and conn.reusable
    rec, conn = run(go(b"HTTP/1.0 200 OK\r\n\r\n" + body, close=True))  # ends when the server closes
    assert rec.ok and rec.text == "xyz" and not conn.reusable


class _FakeTransport:
    def write(self, data):
        pass

    def is_closing(self):
        return False

    def close(self):
        pass


def test_timeout_fails_the_request_and_drops_the_connection():
    rec, _ = run(scripted([ROLE, delta("a")] + [b": keep-alive comment\n\n"] * 40, gap=0.01,
                          timeout_s=0.12))
    assert not rec.ok and rec.error == "timed out after 0.12 s"
    assert rec.t_first is not None and 100 < rec.e2e_ms < 400
