"""A deterministic OpenAI-compatible test server with known timing: the truth load plugins are checked against.

Every request streams ``max_tokens`` tokens: the first ``ttft_ms`` after the request arrived, then
one every ``itl_ms`` (deadlines from the arrival time, so delays never accumulate). The server
records what it really did (arrival, first-token and last-token send times, token counts) and
serves it at ``/stats``: tests compare a client's numbers with that truth, not with the nominal
settings. Timestamps are ``time.perf_counter_ns()``, which on Linux is CLOCK_MONOTONIC and so
comparable across processes of one machine.

Failure injection (for validity-gate tests), on a deterministic share ``fail_fraction`` of the
requests (request i fails when ``floor((i+1)*f) > floor(i*f)``):

- ``http500``: HTTP 500 with an OpenAI error body;
- ``stream_error``: HTTP 200, ``stream_error_after`` tokens, then an in-stream ``error`` event
  (as the Dynamo frontend does);
- ``zero_tokens``: a complete stream with no content token (``usage.completion_tokens`` 0);
- ``short``: only ``short_fraction`` of ``max_tokens`` tokens.

Endpoints: ``/health``, ``/v1/models``, ``/v1/chat/completions`` and ``/v1/completions`` (streaming
and not), ``GET /stats`` (``?requests=1`` adds one record per request), ``POST /reset`` (clears the
stats), ``POST /config`` (changes settings; JSON body of :class:`TimedConfig` fields).

``zero_latency`` answers at once with pre-rendered bodies (one write): the request-rate ceiling
benchmark uses it.

The server speaks HTTP/1.1 through a small asyncio protocol on uvloop (when installed), not a web
framework: a request's arrival is stamped in the callback that receives its bytes and each token
is written by a timer callback straight to the socket. With aiohttp's server, about 0.4 ms passed
between a request reaching an idle server and its handler seeing it, and the truth charged that
to the client.

It is also the ``timed`` test backend (see :func:`bench_launch_servers`), and
:func:`compare_to_truth` checks a load generator's metrics against what it served.

CLI: ``python -m benchstack.testing.timed_server --port P --ttft-ms 20 --itl-ms 5``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import attrs

from .. import hookimpl as _hookimpl
from ..metrics import stat_of

__all__ = ["TimedConfig", "TimedServer", "FAIL_KINDS", "start_subprocess", "TimedServerProcess",
           "TimedBackendOptions", "timed_backend", "within", "compare_to_truth"]

FAIL_KINDS = ("http500", "stream_error", "zero_tokens", "short")
#: Token texts, each a single token of benchstack's tiny tokenizer (trained on Python sources),
#: so a client that re-tokenizes the output (genai-perf) counts what the server sent.
TOKEN_WORDS = (" self", " return", " None", " def", " if", " for", " in", " not")

_now = time.perf_counter_ns


@attrs.define(kw_only=True)
class TimedConfig:
    """What the server does; every field can be changed at run time through ``POST /config``."""

    model: str = "timed-model"
    ttft_ms: float = 20.0
    itl_ms: float = 5.0
    default_max_tokens: int | None = 16  # None: a request without max_tokens fails (as Dynamo's)
    role_chunk: bool = True  # send a role-only delta at once (as vLLM does); not a token
    zero_latency: bool = False
    fail_kind: str | None = attrs.field(default=None, validator=attrs.validators.optional(
        attrs.validators.in_(FAIL_KINDS)))
    fail_fraction: float = 0.0
    short_fraction: float = 0.5
    stream_error_after: int = 2
    timer_slack_ms: float | None = None  # wake this early (None: 0 on uvloop, 0.5 ms on asyncio,
    # whose epoll timeouts round up to whole ms)
    tick_ms: float = 1.0  # wake at least this often (0: never): an idle CPU answers late


class _Truth:
    """Per-request records kept by the server (``__slots__``: cheap at thousands per second)."""

    __slots__ = ("rid", "path", "stream", "recv", "first", "last", "end", "tokens", "prompt_tokens",
                 "fail")

    def __init__(self, rid: str, path: str, stream: bool, recv: int):
        self.rid, self.path, self.stream, self.recv = rid, path, stream, recv
        self.first = self.last = self.end = None
        self.tokens = 0
        self.prompt_tokens = 0
        self.fail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def _prompt_tokens(data: dict[str, Any]) -> int:
    """Input tokens: the length of a token-id prompt, else whitespace-separated words."""
    prompt = data.get("prompt")
    if prompt is None:
        msgs = data.get("messages") or []
        parts = []
        for m in msgs:
            c = m.get("content") if isinstance(m, dict) else None
            if isinstance(c, str):
                parts.append(c)
            elif isinstance(c, list):
                parts.extend(p.get("text", "") for p in c if isinstance(p, dict))
        return sum(len(p.split()) for p in parts)
    if isinstance(prompt, list):
        if prompt and isinstance(prompt[0], list):
            prompt = prompt[0]
        if prompt and isinstance(prompt[0], int):
            return len(prompt)
        return sum(len(str(p).split()) for p in prompt)
    return len(str(prompt).split())


class TimedServer:
    """The server's state and truth; :meth:`start` serves it on a port (or run the CLI).

    HTTP/1.1 is spoken by a small asyncio protocol (:class:`_Connection`), not a web framework:
    a request is time-stamped in the very callback that receives its bytes, and every token
    is written from a timer callback straight to the socket, so the truth holds what went over
    the wire and the server adds next to nothing a client would be blamed for.
    """

    def __init__(self, config: TimedConfig | None = None):
        self.config = config or TimedConfig()
        self.truth: list[_Truth] = []
        self._seq = 0
        self._inflight = 0
        self._max_inflight = 0
        self._cache: dict[tuple, Any] = {}
        self._server: asyncio.AbstractServer | None = None
        self._ticker: asyncio.Task | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0: any free port) and return the port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, backlog=4096,
                                                reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.config.tick_ms > 0 and not self.config.zero_latency:
            # a CPU left idle for tens of ms (a VM's vCPU above all) takes up to a millisecond
            # to wake when a request arrives, which the truth would count against the client
            self._ticker = loop.create_task(self._tick())
        return self.port

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(max(self.config.tick_ms, 0.1) / 1000)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._server is not None:
            self._server.close()
            self._server = None

    # ------------------------------------------------------------------ small endpoints
    def control(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, Any]:
        """Every endpoint but generation: (status, JSON)."""
        if method == "GET" and path == "/health":
            return 200, {"status": "healthy", "model": self.config.model}
        if method == "GET" and path == "/v1/models":
            return 200, {"object": "list", "data": [
                {"id": self.config.model, "object": "model", "created": 0, "owned_by": "benchstack"}]}
        if method == "GET" and path == "/stats":
            out = self.summary()
            if query.get("requests"):
                out["requests"] = [t.as_dict() for t in self.truth]
            return 200, out
        if method == "POST" and path == "/reset":
            self.truth = []
            self._seq = 0
            self._max_inflight = self._inflight
            return 200, {"reset": True}
        if method == "POST" and path == "/config":
            try:
                self.config = attrs.evolve(self.config, **json.loads(body or b"{}"))
            except (TypeError, ValueError) as exc:
                return 400, {"error": {"message": str(exc), "code": 400}}
            self._cache.clear()
            return 200, attrs.asdict(self.config)
        return 404, {"error": {"message": f"no route {method} {path}", "code": 404}}

    def summary(self) -> dict[str, Any]:
        """The server's own view of what it served: the truth a client is compared with."""
        done = [t for t in self.truth if t.end is not None and t.fail not in ("http500", "stream_error")]
        ms = 1e-6
        ttft = [(t.first - t.recv) * ms for t in done if t.first is not None]
        itl = [(t.last - t.first) * ms / (t.tokens - 1) for t in done
               if t.first is not None and t.tokens > 1]
        e2e = [(t.end - t.recv) * ms for t in done]
        start = min((t.recv for t in self.truth), default=None)
        end = max((t.end for t in self.truth if t.end is not None), default=None)
        window = (end - start) / 1e9 if start is not None and end is not None and end > start else None
        tokens = sum(t.tokens for t in done)
        return {
            "config": attrs.asdict(self.config),
            "requests": len(self.truth),
            "completed": len(done),
            "failed": sum(1 for t in self.truth if t.fail in ("http500", "stream_error")),
            "in_flight": self._inflight,
            "max_in_flight": self._max_inflight,
            "output_tokens": tokens,
            "window_s": window,
            "first_recv_ns": start,
            "last_end_ns": end,
            "request_throughput": len(done) / window if window else None,
            "output_token_throughput": tokens / window if window else None,
            "ttft_ms": attrs.asdict(stat_of(ttft)),
            "itl_ms": attrs.asdict(stat_of(itl)),
            "e2e_ms": attrs.asdict(stat_of(e2e)),
        }

    # ------------------------------------------------------------------ generation
    def _fail_for(self, seq: int) -> str | None:
        f = self.config.fail_fraction
        if not self.config.fail_kind or f <= 0:
            return None
        return self.config.fail_kind if math.floor((seq + 1) * f) > math.floor(seq * f) else None

    def generate(self, conn: "_Connection", path: str, headers: "_Headers", body: bytes,
                 recv: int) -> None:
        """Answer one generation request on ``conn`` (now, or from timers)."""
        cfg = self.config
        if cfg.zero_latency and not cfg.fail_kind:  # answers cached by request body
            hit = self._cache.get((path, body))
            if hit is not None:
                payload, n, prompt_tokens = hit
                seq = self._seq
                self._seq += 1
                truth = _Truth(headers.get(b"x-request-id").decode() or str(seq), path, True, recv)
                truth.prompt_tokens, truth.tokens = prompt_tokens, n
                truth.first = truth.last = truth.end = _now()
                self.truth.append(truth)
                return conn.write(payload)
        chat = path.endswith("/chat/completions")
        seq = self._seq
        self._seq += 1
        rid = headers.get(b"x-request-id").decode() or str(seq)
        truth = _Truth(rid, path, True, recv)
        self.truth.append(truth)
        try:
            data = json.loads(body)
        except ValueError:
            truth.fail, truth.end = "http500", _now()
            return conn.reply(400, {"error": {"message": "request body is not JSON", "code": 400}})
        truth.stream = stream = bool(data.get("stream"))
        if data.get("model") != cfg.model:
            truth.fail, truth.end = "http500", _now()
            return conn.reply(404, {"error": {"message": f"model {data.get('model')!r} not found",
                                              "type": "NotFoundError", "code": 404}})
        max_tokens = data.get("max_tokens", data.get("max_completion_tokens", cfg.default_max_tokens))
        if not isinstance(max_tokens, int) or max_tokens < 1:
            truth.fail, truth.end = "http500", _now()
            return conn.reply(400, {"error": {"message": "max_tokens must be given as a positive integer",
                                              "code": 400}})
        fail = self._fail_for(seq)
        truth.fail = fail
        truth.prompt_tokens = _prompt_tokens(data)
        if fail == "http500":
            truth.end = _now()
            return conn.reply(500, {"error": {"message": "injected failure", "type": "InternalServerError",
                                              "code": 500}})
        n = max_tokens
        if fail == "zero_tokens":
            n = 0
        elif fail == "short":
            n = max(1, int(max_tokens * cfg.short_fraction))
        usage = bool((data.get("stream_options") or {}).get("include_usage"))
        if cfg.zero_latency and fail is None:
            return self._zero_latency(conn, truth, chat, n, stream, usage, body)
        self._inflight += 1
        self._max_inflight = max(self._max_inflight, self._inflight)
        _Response(self, conn, truth, chat, n, fail, stream, usage).start()

    def _zero_latency(self, conn: "_Connection", truth: _Truth, chat: bool, n: int, stream: bool,
                      usage: bool, body: bytes) -> None:
        key = (chat, n, truth.prompt_tokens, stream, usage)
        payload = self._cache.get(key)
        if payload is None:
            if stream:
                parts = [self._chunk("0", chat, None, role=True)] if self.config.role_chunk and chat else []
                parts += [self._chunk("0", chat, TOKEN_WORDS[k % len(TOKEN_WORDS)],
                                      "length" if k == n - 1 else None) for k in range(n)]
                parts.append(self._tail("0", chat, truth.prompt_tokens, n, usage))
                # chunked, one chunk per event, like a real stream (perf_analyzer needs it)
                payload = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                           b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
                           + b"".join(_frame(p) for p in parts) + b"0\r\n\r\n")
            else:
                payload = _http(200, self._unary_body("0", chat, truth.prompt_tokens, n), "application/json")
            self._cache[key] = payload
        self._cache[(truth.path, body)] = (payload, n, truth.prompt_tokens)
        t = _now()
        truth.first = truth.last = t if n else None
        truth.tokens, truth.end = n, t
        conn.write(payload)

    # ------------------------------------------------------------------ bodies
    def _chunk(self, rid: str, chat: bool, text: str | None, finish: str | None = None,
               role: bool = False) -> bytes:
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {"content": text}
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish}
            obj = "text_completion"
        body = {"id": f"cmpl-{rid}", "object": obj, "created": 0, "model": self.config.model,
                "choices": [choice]}
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    def _tail(self, rid: str, chat: bool, prompt_tokens: int, n: int, usage: bool = True) -> bytes:
        if not usage:  # OpenAI sends the usage chunk only when stream_options.include_usage is set
            return b"data: [DONE]\n\n"
        body = {"id": f"cmpl-{rid}", "object": "chat.completion.chunk" if chat else "text_completion",
                "created": 0, "model": self.config.model, "choices": [],
                "usage": _usage(prompt_tokens, n)}
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\ndata: [DONE]\n\n"

    def _unary_body(self, rid: str, chat: bool, prompt_tokens: int, n: int) -> bytes:
        text = "".join(TOKEN_WORDS[k % len(TOKEN_WORDS)] for k in range(n))
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
                  if chat else {"index": 0, "text": text, "finish_reason": "length"})
        return json.dumps({"id": f"cmpl-{rid}", "object": "chat.completion" if chat else "text_completion",
                           "created": 0, "model": self.config.model, "choices": [choice],
                           "usage": _usage(prompt_tokens, n)}).encode()


class _Response:
    """One timed response: tokens written from timer callbacks at deadlines from the arrival."""

    __slots__ = ("server", "conn", "truth", "chat", "n", "fail", "stream", "usage", "upto", "k",
                 "slack", "ttft", "itl", "handle")

    def __init__(self, server: TimedServer, conn: "_Connection", truth: _Truth, chat: bool, n: int,
                 fail: str | None, stream: bool, usage: bool):
        cfg = server.config
        self.server, self.conn, self.truth = server, conn, truth
        self.chat, self.n, self.fail, self.stream, self.usage = chat, n, fail, stream, usage
        self.upto = max(0, min(n - 1, cfg.stream_error_after)) if fail == "stream_error" else n
        self.k = 0
        slack = cfg.timer_slack_ms
        if slack is None:
            slack = 0.0 if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else 0.5
        self.slack = int(slack * 1e6)
        self.ttft, self.itl = int(cfg.ttft_ms * 1e6), int(cfg.itl_ms * 1e6)
        self.handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.conn.busy = self
        if not self.stream:
            total = self.ttft + max(0, self.n - 1) * self.itl
            return self._at(self.truth.recv + total, self._unary)
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        role = self.server._chunk(self.truth.rid, True, None, role=True) \
            if self.server.config.role_chunk and self.chat else b""
        self.conn.write(head + (_frame(role) if role else b""))
        self._at(self.truth.recv + self.ttft, self._token)

    def _at(self, deadline_ns: int, fn: Any) -> None:
        delay = (deadline_ns - self.slack - _now()) / 1e9
        loop = asyncio.get_running_loop()
        self.handle = loop.call_later(delay, fn) if delay > 0 else loop.call_soon(fn)

    def _token(self) -> None:
        if self.conn.closed:
            return self._finish(_now())
        srv, truth, k = self.server, self.truth, self.k
        if k >= self.upto:  # no (more) tokens: zero tokens, or the injected error
            if self.fail == "stream_error":
                err = {"error": {"message": "injected in-stream failure", "type": "internal_error",
                                 "code": 500}}
                data = b"event: error\ndata: " + json.dumps(err).encode() + b"\n\n"
            else:
                data = srv._chunk(truth.rid, self.chat, "", "length") + srv._tail(
                    truth.rid, self.chat, truth.prompt_tokens, 0, self.usage)
            t = _now()
            self.conn.write(_frame(data) + b"0\r\n\r\n")
            return self._finish(t)
        last = k == self.n - 1
        data = srv._chunk(truth.rid, self.chat, TOKEN_WORDS[k % len(TOKEN_WORDS)], "length" if last else None)
        if last:  # the last token, usage, [DONE] and the end of the body in one write
            data += srv._tail(truth.rid, self.chat, truth.prompt_tokens, self.n, self.usage)
        t = _now()
        self.conn.write(_frame(data) + (b"0\r\n\r\n" if last else b""))
        if k == 0:
            truth.first = t
        truth.last = t
        truth.tokens = k + 1
        self.k = k + 1
        if last:
            return self._finish(t)
        self._at(truth.recv + self.ttft + self.k * self.itl, self._token)

    def _unary(self) -> None:
        truth = self.truth
        payload = _http(200, self.server._unary_body(truth.rid, self.chat, truth.prompt_tokens, self.n),
                        "application/json")
        t = _now()
        self.conn.write(payload)
        truth.first = truth.last = t if self.n else None
        truth.tokens = self.n
        self._finish(t)

    def _finish(self, t: int) -> None:
        self.truth.end = t
        self.server._inflight -= 1
        self.conn.done(self)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()


class _Connection(asyncio.Protocol):
    """One client connection: HTTP/1.1 requests parsed as they arrive, answered in order."""

    def __init__(self, server: TimedServer):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.arrived: int | None = None  # when the first byte of the request being read came
        self.busy: _Response | None = None
        self.closed = False
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.busy is not None:
            self.busy.cancel()
            self.busy._finish(_now())

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        now = _now()
        if not self.buf:
            self.arrived = now
        self.buf += data
        self._serve()

    def _serve(self) -> None:
        while self.busy is None and self.buf:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = buf[:end]
            headers = _Headers(head)
            length = int(headers.get(b"content-length", b"0") or 0)
            if len(buf) < end + 4 + length:
                return
            body = buf[end + 4:end + 4 + length]
            self.buf = buf[end + 4 + length:]
            recv = self.arrived or _now()
            self.arrived = _now() if self.buf else None
            self.close_after = headers.get(b"connection", b"").lower() == b"close"
            method, _, rest = head[:head.find(b"\r\n") if b"\r\n" in head else None].partition(b" ")
            target = rest.rsplit(b" ", 1)[0].decode("latin-1")
            path, _, qs = target.partition("?")
            if method == b"POST" and path in ("/v1/chat/completions", "/v1/completions"):
                self.server.generate(self, path, headers, body, recv)
            else:
                query = dict(kv.split("=", 1) for kv in qs.split("&") if "=" in kv)
                status, obj = self.server.control(method.decode("latin-1"), path, query, body)
                self.reply(status, obj)

    def reply(self, status: int, obj: Any) -> None:
        self.write(_http(status, json.dumps(obj).encode(), "application/json"))
        self._after()

    def done(self, response: _Response) -> None:
        if self.busy is response:
            self.busy = None
            self._after()
            if self.buf and not self.closed:
                self._serve()

    def _after(self) -> None:
        if self.close_after and self.transport is not None:
            self.transport.close()


class _Headers:
    """A request's headers, looked up by lower-case name without parsing them all."""

    __slots__ = ("low",)

    def __init__(self, head: bytes):
        self.low = head.lower()

    def get(self, name: bytes, default: bytes = b"") -> bytes:
        i = self.low.find(b"\r\n" + name + b":")
        if i < 0:
            return default
        j = self.low.find(b"\r\n", i + 2)
        return self.low[i + len(name) + 3:j if j > 0 else None].strip()


def _frame(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _http(status: int, body: bytes, ctype: str) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}.get(status, "X")
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


# ---------------------------------------------------------------------------- checking against it


def within(measured: float | None, truth: float | None, *, rel: float = 0.02, abs_: float = 1.0) -> bool:
    """True if ``measured`` is within ``rel`` (a fraction) or ``abs_`` (its unit) of ``truth``."""
    if measured is None or truth is None:
        return False
    return abs(measured - truth) <= max(rel * abs(truth), abs_)


def compare_to_truth(metrics: Any, truth: dict[str, Any], *, rel: float = 0.02, abs_ms: float = 1.0,
                     overhead_ms: float = 0.0) -> list[str]:
    """Where a load generator's Metrics disagree with the server's ``/stats``: one line each.

    TTFT and end-to-end latency are compared at p50, ITL by its mean, request and output-token
    throughput by value. The tolerance is ``rel`` or ``abs_ms``, whichever is larger, plus
    ``overhead_ms`` for a tool whose own client overhead has been measured (latencies only;
    throughputs get the matching relative allowance).
    """
    checks = (
        ("TTFT p50 (ms)", metrics.ttft_ms.p50, truth["ttft_ms"]["p50"], True),
        ("ITL mean (ms)", metrics.itl_ms.mean, truth["itl_ms"]["mean"], True),
        ("e2e p50 (ms)", metrics.e2e_ms.p50, truth["e2e_ms"]["p50"], True),
        ("request throughput (1/s)", metrics.request_throughput, truth["request_throughput"], False),
        ("output token throughput (1/s)", metrics.output_token_throughput,
         truth["output_token_throughput"], False),
    )
    e2e = truth["e2e_ms"]["p50"] or 0.0
    problems = []
    for name, got, want, latency in checks:
        if latency:
            ok = within(got, want, rel=rel, abs_=abs_ms + overhead_ms)
        else:  # a fixed per-request overhead slows a closed loop by overhead/e2e
            ok = within(got, want, rel=rel + (overhead_ms / e2e if e2e else 0.0), abs_=0.0)
        if not ok:
            problems.append(f"{name}: measured {got} vs server truth {want}")
    return problems


# ---------------------------------------------------------------------------- running it


class TimedServerProcess:
    """The server in a subprocess (its own CPU, as a real server): ``url``, ``stats()``, ``stop()``."""

    def __init__(self, proc: subprocess.Popen, port: int, host: str):
        self.proc, self.port, self.host = proc, port, host
        self.url = f"http://{host}:{port}"

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def stats(self, requests: bool = False) -> dict[str, Any]:
        return self._call("GET", "/stats" + ("?requests=1" if requests else ""))

    def reset(self) -> None:
        self._call("POST", "/reset", {})

    def configure(self, **fields: Any) -> dict[str, Any]:
        return self._call("POST", "/config", fields)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> "TimedServerProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_subprocess(*, host: str = "127.0.0.1", port: int = 0, ready_timeout_s: float = 30.0,
                     python: str | None = None, **config: Any) -> TimedServerProcess:
    """Start ``python -m benchstack.testing.timed_server`` and wait until it answers ``/health``.

    ``port=0`` picks a free port (the server prints the one it bound). Keyword arguments are
    :class:`TimedConfig` fields.
    """
    argv = [python or sys.executable, "-m", "benchstack.testing.timed_server", "--host", host,
            "--port", str(port), "--print-port"]
    for key, value in config.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + key.replace("_", "-"))
        elif value is None:
            argv += [flag, "none"]
        else:
            argv += [flag, str(value)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + ready_timeout_s
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("PORT "):
        proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"timed server did not start: {line!r} {err[-2000:]}")
    server = TimedServerProcess(proc, int(line.split()[1]), host)
    while True:
        try:
            with socket.create_connection((host, server.port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError("timed server did not become ready")
            time.sleep(0.02)
    return server


# ---------------------------------------------------------------------------- as a backend


@attrs.frozen(kw_only=True)
class TimedBackendOptions:
    """Recipe section ``timed`` of the ``timed`` test backend: replicas and :class:`TimedConfig` fields."""

    replicas: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    ttft_ms: float = 20.0
    itl_ms: float = 5.0
    default_max_tokens: int | None = 16
    role_chunk: bool = True
    zero_latency: bool = False
    fail_kind: str | None = attrs.field(default=None, validator=attrs.validators.optional(
        attrs.validators.in_(FAIL_KINDS)))
    fail_fraction: float = attrs.field(default=0.0, validator=[attrs.validators.ge(0),
                                                               attrs.validators.le(1)])
    short_fraction: float = 0.5
    stream_error_after: int = 2


# The module itself is the ``timed`` backend plugin: ``make_manager(("timed", timed_server))`` in
# tests, or ``BENCHSTACK_EXTRA_PLUGINS=timed=benchstack.testing.timed_server bench run ...``.


@_hookimpl
def bench_register_backends():
    from ..records import BackendInfo

    return [BackendInfo(name="timed", options_type=TimedBackendOptions,
                        description="test backend: deterministic OpenAI-compatible server(s) with "
                                    "known timing (benchstack.testing.timed_server)")]


@_hookimpl
def bench_launch_servers(spec, allocation, launcher):
    """``replicas`` timed servers started through the launcher, one endpoint each."""
    from ..records import Endpoint, ProcessSpec, ServerSet

    if spec.backend != "timed":
        return None
    o = spec.options_for("timed") or TimedBackendOptions()
    addr = allocation.nodes[0].address
    handles, endpoints = [], []
    for i in range(o.replicas):
        port = launcher.ports.one(0)
        argv = [sys.executable, "-m", "benchstack.testing.timed_server", "--host", addr,
                "--port", str(port), "--model", spec.model.name, "--ttft-ms", str(o.ttft_ms),
                "--itl-ms", str(o.itl_ms), "--default-max-tokens",
                "none" if o.default_max_tokens is None else str(o.default_max_tokens),
                "--role-chunk" if o.role_chunk else "--no-role-chunk",
                "--zero-latency" if o.zero_latency else "--no-zero-latency",
                "--fail-kind", o.fail_kind or "none", "--fail-fraction", str(o.fail_fraction),
                "--short-fraction", str(o.short_fraction),
                "--stream-error-after", str(o.stream_error_after)]
        handles.append(launcher.start(ProcessSpec(name=f"timed-{i}", role="frontend", argv=argv,
                                                  ports=(port,))))
        endpoints.append(Endpoint(url=f"http://{addr}:{port}", model=spec.model.name,
                                  server=f"timed-{i}"))
    return ServerSet(backend="timed", servers=handles, endpoints=endpoints)


@_hookimpl
def bench_discover_endpoints(spec, servers, launcher):
    from ..probe import models_listed

    if spec.backend != "timed":
        return None

    def check():
        for e in servers.endpoints:
            got = models_listed(e.url, spec.model.name)
            if got is not True:
                return f"{e.url}: {got}"
        return True

    launcher.wait_ready(servers.servers, check, what="timed servers", timeout_s=spec.ready_timeout_s)
    return list(servers.endpoints)


@_hookimpl
def bench_collect(spec, servers, endpoints, point, out_dir):
    """After each point: every server's truth (``/stats``) into the results, then ``/reset``.

    ``results.json`` then holds, per point, ``server_metrics.timed.truth``: what the servers
    really did, next to what the load generator measured.
    """
    from ..probe import http_json
    from ..records import Collected

    if spec.backend != "timed" or point is None:
        return None
    truth = []
    for e in endpoints:
        status, stats = http_json(e.url + "/stats", timeout=10)
        truth.append(stats if status == 200 else {"error": f"HTTP {status}"})
        try:
            import urllib.request

            urllib.request.urlopen(urllib.request.Request(e.url + "/reset", data=b"{}", method="POST"),
                                   timeout=10).read()
        except OSError:
            pass
    return Collected(plugin="timed", metadata={"truth": truth})


#: this module, as a plugin object: ``make_manager(("timed", timed_backend))``
timed_backend = sys.modules[__name__]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchstack.testing.timed_server",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--print-port", action="store_true", help="print 'PORT <n>' once listening")
    p.add_argument("--model", default="timed-model")
    p.add_argument("--ttft-ms", type=float, default=20.0)
    p.add_argument("--itl-ms", type=float, default=5.0)
    p.add_argument("--default-max-tokens", type=lambda s: None if s == "none" else int(s), default=16)
    p.add_argument("--role-chunk", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--zero-latency", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--fail-kind", choices=FAIL_KINDS + ("none",), default=None)
    p.add_argument("--fail-fraction", type=float, default=0.0)
    p.add_argument("--short-fraction", type=float, default=0.5)
    p.add_argument("--stream-error-after", type=int, default=2)
    p.add_argument("--timer-slack-ms", type=float, default=None)
    p.add_argument("--tick-ms", type=float, default=1.0, help="wake at least this often (0: never)")
    p.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                   help="event loop: uvloop when installed (auto; it reacts faster to a request "
                        "arriving at an idle server), or asyncio's")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = _parse_args(argv)
    config = TimedConfig(
        model=a.model, ttft_ms=a.ttft_ms, itl_ms=a.itl_ms, default_max_tokens=a.default_max_tokens,
        role_chunk=a.role_chunk, zero_latency=a.zero_latency,
        fail_kind=None if a.fail_kind in (None, "none") else a.fail_kind,
        fail_fraction=a.fail_fraction, short_fraction=a.short_fraction,
        stream_error_after=a.stream_error_after, timer_slack_ms=a.timer_slack_ms, tick_ms=a.tick_ms)
    server = TimedServer(config)

    async def serve() -> None:
        port = await server.start(a.host, a.port)
        if a.print_port:
            print(f"PORT {port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, stop.set)
        await stop.wait()
        await server.stop()

    if a.loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if a.loop == "uvloop":
                raise
        else:
            uvloop.run(serve())
            return
    asyncio.run(serve())


if __name__ == "__main__":  # pragma: no cover
    main()
