"""benchstack's own asynchronous streaming OpenAI client: a library load plugins build on.

One event loop, keep-alive HTTP/1.1 connections to every endpoint of a deployment. Per request
it records ``time.perf_counter_ns()`` at send, at the first content token, at each network read
(optional) and at the end of the stream. Token counts come from the server's ``usage`` (asked for
with ``stream_options: {include_usage: true}``), else from the number of content events.
An ``error`` event inside an HTTP 200 stream (as the Dynamo frontend sends) fails the request.

Parsing is cheap per chunk: the HTTP response is parsed inside the asyncio protocol's
``data_received`` (no task wakes up per chunk, and timestamps are taken as the bytes come off the
socket); SSE events are decoded as JSON only until the first content token and at the end of the
stream (where ``usage`` is); in between the client only counts ``data:`` lines with
``bytes.count`` and looks for an error marker. ITL per request is
``(end - first token) / (output tokens - 1)``.

Why not aiohttp's client: on Python 3.11 it writes every request body from a separate task (one
event-loop round later: +0.6 ms p50 between send and server at concurrency 8), and wakes the
reading task once per streamed chunk (about 40 us of CPU per token here, more than
perf_analyzer). The timed test server still uses aiohttp.

Entry points:

- :class:`StreamingClient` (``async with``): ``await client.send(prompt)`` -> :class:`RequestRecord`;
  optional callbacks at the first token and at the end (the MLPerf SUT calls LoadGen there);
- :func:`closed_loop` (N concurrent users, K requests or a duration) and :func:`open_loop`
  (Poisson or constant arrivals);
- :func:`metrics_from_records` -> :class:`benchstack.records.Metrics`;
- :func:`run` runs a coroutine on a fresh event loop (uvloop when installed).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import socket as _socket
from time import perf_counter_ns
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

from attrs import field, frozen, validators as v

from .metrics import stat_of
from .records import Metrics

try:  # several times faster than json for the few events the client decodes
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is optional
    _loads = json.loads

__all__ = [
    "ClientOptions", "Prompt", "RequestRecord", "EndpointPicker", "StreamingClient",
    "closed_loop", "open_loop", "metrics_from_records", "make_prompts", "run",
]

POLICIES = ("round_robin", "least_outstanding")
APIS = ("chat", "completions")

_DATA = b"data:"
_ERR_MARKERS = (b'"error"', b"event: error", b"event:error")
_TAIL = 4096  # bytes kept from the end of a stream to find the usage chunk in
#: a chunk with text in it (chat delta content, reasoning content, or completions text)
_HAS_TEXT = re.compile(rb'"(?:content|reasoning_content|text)":"(?!")')
#: a chunk whose only choice has an empty delta content (e.g. the first, role-only chunk)
_EMPTY_DELTA = re.compile(rb'^\{[^{]*"choices":\[\{[^{]*"delta":\{("role":"[a-z]+",)?"content":""\},'
                          rb'[^{}\[\]]*\}\]')


# --------------------------------------------------------------------------- configuration


@frozen(kw_only=True)
class ClientOptions:
    """How requests are built and spread over endpoints."""

    api: str = field(default="chat", validator=v.in_(APIS))
    stream: bool = True
    policy: str = field(default="round_robin", validator=v.in_(POLICIES))
    include_usage: bool = True  # stream_options.include_usage: the server's own token counts
    ignore_eos: bool = False  # add "ignore_eos": true (vLLM, TRT-LLM, Dynamo honour it)
    extra_body: Mapping[str, Any] = field(factory=dict)
    headers: Mapping[str, str] = field(factory=dict)
    timeout_s: float = field(default=3600.0, validator=v.gt(0))
    keep_text: bool = False  # keep each response's text (accuracy runs); decodes every event
    record_chunks: bool = False  # keep the time of every network read
    request_ids: bool = True  # send X-Request-Id (servers and the timed server log it)


@frozen(kw_only=True, cache_hash=True)
class Prompt:
    """One request's input: text (chat or completions) or token ids (completions only)."""

    text: str | None = None
    token_ids: tuple[int, ...] | None = field(default=None, converter=lambda x: None if x is None else tuple(x))
    max_tokens: int = field(default=64, validator=v.ge(1))
    input_tokens: int | None = None  # known length, when the dataset says it

    def __attrs_post_init__(self):
        if (self.text is None) == (self.token_ids is None):
            raise ValueError("a Prompt has either text or token_ids")


class RequestRecord:
    """What one request did. Times are ``perf_counter_ns``; ``None`` where it never happened."""

    __slots__ = ("index", "endpoint", "request_id", "t_send", "t_first", "t_end", "input_tokens",
                 "output_tokens", "events", "usage", "ok", "status", "error", "text", "chunk_times",
                 "streamed", "tag")

    def __init__(self, index: int, endpoint: int, request_id: str | None = None):
        self.index = index
        self.endpoint = endpoint
        self.request_id = request_id
        self.t_send = 0
        self.t_first: int | None = None
        self.t_end: int | None = None
        self.input_tokens: int | None = None
        self.output_tokens = 0
        self.events = 0  # content events seen (the fallback token count)
        self.usage = False  # token counts came from the server's usage
        self.ok = False
        self.status = 0
        self.error: str | None = None
        self.text: str | None = None
        self.chunk_times: list[int] | None = None
        self.streamed = True  # False for a non-streaming request (no ITL)
        self.tag: Any = None  # the caller's (e.g. a LoadGen query id)

    @property
    def ttft_ms(self) -> float | None:
        return None if self.t_first is None else (self.t_first - self.t_send) / 1e6

    @property
    def e2e_ms(self) -> float | None:
        return None if self.t_end is None else (self.t_end - self.t_send) / 1e6

    @property
    def itl_ms(self) -> float | None:
        if self.t_first is None or self.t_end is None or self.output_tokens < 2 or not self.streamed:
            return None
        return (self.t_end - self.t_first) / 1e6 / (self.output_tokens - 1)

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__slots__ if k not in ("tag", "chunk_times")}
        d.update(ttft_ms=self.ttft_ms, itl_ms=self.itl_ms, e2e_ms=self.e2e_ms)
        return d

    def __repr__(self) -> str:
        return (f"RequestRecord(index={self.index}, ok={self.ok}, ttft_ms={self.ttft_ms}, "
                f"itl_ms={self.itl_ms}, out={self.output_tokens}, error={self.error!r})")


# --------------------------------------------------------------------------- endpoints


class EndpointPicker:
    """Chooses an endpoint per request: round robin, or the one with fewest requests in flight."""

    def __init__(self, count: int, policy: str = "round_robin"):
        if count < 1:
            raise ValueError("at least one endpoint is needed")
        if policy not in POLICIES:
            raise ValueError(f"unknown endpoint policy {policy!r} (choices: {', '.join(POLICIES)})")
        self.count, self.policy = count, policy
        self.outstanding = [0] * count
        self.sent = [0] * count
        self._next = 0

    def acquire(self) -> int:
        n = self.count
        if n == 1:
            i = 0
        elif self.policy == "round_robin":
            i = self._next
            self._next = (i + 1) % n
        else:  # least outstanding; ties go round robin so idle endpoints share the load
            out = self.outstanding
            start = self._next
            i, best = start, out[start]
            for k in range(1, n):
                j = (start + k) % n
                if out[j] < best:
                    i, best = j, out[j]
            self._next = (i + 1) % n
        self.outstanding[i] += 1
        self.sent[i] += 1
        return i

    def release(self, i: int) -> None:
        self.outstanding[i] -= 1


# --------------------------------------------------------------------------- the exchange

#: called at the first token with the record and the token's text (UTF-8; b"" unless keep_text)
FirstCallback = Callable[[RequestRecord, bytes], None]
DoneCallback = Callable[[RequestRecord], None]


class _Exchange:
    """One request's response, fed body bytes as they arrive; resolves ``future`` at the end.

    Streaming responses are scanned as they come: events are decoded as JSON only until the
    first content token (and after an error marker); in between each read costs a
    ``bytes.count`` of ``data:`` and a search for ``error``. The usage chunk is decoded from the
    last bytes of the stream at the end.
    """

    __slots__ = ("rec", "future", "on_first", "keep_text", "stream", "status", "slow", "pending",
                 "texts", "done", "fast_data", "parts", "body", "chunk_times", "failed")

    def __init__(self, rec: RequestRecord, future: asyncio.Future, on_first: FirstCallback | None,
                 keep_text: bool, stream: bool):
        self.rec, self.future, self.on_first = rec, future, on_first
        self.keep_text, self.stream = keep_text, stream
        self.status = 0
        self.slow = True  # decoding every event: until the first token, when keeping text, near errors
        self.pending = b""  # undecoded bytes (slow mode)
        self.texts: list[str] = []
        self.done = False  # [DONE] decoded
        self.fast_data = 0  # data: lines counted in fast mode
        self.parts: list[bytes] = []  # the last reads
        self.body: list[bytes] = []  # whole body (errors, non-streaming)
        self.chunk_times = rec.chunk_times
        self.failed = False

    # ------------------------------------------------------------------ called by the connection
    def headers(self, status: int) -> None:
        self.status = self.rec.status = status

    def feed(self, data: bytes, now: int) -> None:
        if self.failed:
            return
        if self.chunk_times is not None:
            self.chunk_times.append(now)
        if self.status != 200 or not self.stream:
            self.body.append(data)
            return
        parts = self.parts  # the last reads: the usage chunk is in them at the end
        parts.append(data)
        if len(parts) > 24:
            del parts[:-12]
        if not self.slow:
            self.fast_data += data.count(_DATA)
            if b"error" not in data and (len(parts) < 2 or b"error" not in parts[-2][-6:] + data[:6]):
                return
            tail = self.tail()
            hit = max(tail.rfind(m) for m in _ERR_MARKERS)
            if hit < 0:
                return
            # decode again from the start of the event holding the marker (it may be content)
            start = tail.rfind(b"\n\n", 0, hit)
            self.pending = tail[start + 2:] if start >= 0 else tail
            self.fast_data -= self.pending.count(_DATA)
            self.slow = True
        else:
            self.pending += data
        self._decode(now)

    def tail(self) -> bytes:
        """The last bytes of the stream (at least _TAIL when the stream is that long)."""
        parts, size, i = self.parts, 0, len(self.parts)
        while i > 0 and size < _TAIL:
            i -= 1
            size += len(parts[i])
        return b"".join(parts[i:])

    def _decode(self, now: int) -> None:
        rec = self.rec
        pending = self.pending
        if b"\r" in pending:
            pending = pending.replace(b"\r\n", b"\n")
        pos = 0
        while (nxt := pending.find(b"\n\n", pos)) >= 0:
            kind, payload = _event(pending[pos:nxt])
            pos = nxt + 2
            if payload is None:
                continue
            if payload == b"[DONE]":
                self.done = True
                continue
            if kind is None and b"error" not in payload and b"usage\"" not in payload:
                if _EMPTY_DELTA.search(payload):
                    continue  # a role-only or empty delta: no token, nothing to learn
                if not self.keep_text and _HAS_TEXT.search(payload):
                    rec.events += 1  # a token: its time is needed, not its text
                    if rec.t_first is None:
                        rec.t_first = now
                        if self.on_first is not None:
                            self.on_first(rec, b"")
                    if pending.find(b"error", pos) < 0:
                        self.slow = False  # from now on only count data: lines
                        self.fast_data += pending.count(_DATA, pos)
                        pos = len(pending)
                        break
                    continue
            try:
                obj = _loads(payload)
            except ValueError:
                continue
            if kind == b"error" or (isinstance(obj, dict) and obj.get("error")):
                self.fail("in-stream error: " + _error_message(obj), now)
                return
            content = _content(obj)
            if content:
                rec.events += 1
                if self.keep_text:
                    self.texts.append(content)
                if rec.t_first is None:
                    rec.t_first = now
                    if self.on_first is not None:
                        self.on_first(rec, content.encode() if self.keep_text else b"")
            _take_usage(rec, obj)
            if rec.t_first is not None and not self.keep_text and pending.find(b"error", pos) < 0:
                self.slow = False  # from now on only count data: lines
                self.fast_data += pending.count(_DATA, pos)
                pos = len(pending)
                break
        self.pending = pending[pos:] if pos < len(pending) else b""

    def finish(self, now: int) -> None:
        """The response is complete."""
        if self.failed:
            return
        rec = self.rec
        rec.t_end = now
        if self.status != 200:
            rec.error = f"HTTP {self.status}: {_error_message(b''.join(self.body).decode('utf-8', 'replace'))}"
        elif not self.stream:
            self._unary(now)
        else:
            if self.pending.strip():  # an event without its blank line at the very end
                self.pending += b"\n\n"
                self._decode(now)
                if self.failed:
                    return
            if self.keep_text:
                rec.text = "".join(self.texts)
            if self.fast_data and not rec.usage:
                _usage_from(rec, self.tail())
            if not rec.usage:
                # fallback: content events; in fast mode every data: line less a [DONE] line
                extra = self.fast_data
                if extra and not self.done and b"[DONE]" in self.tail():
                    extra -= 1
                rec.events += extra
                rec.output_tokens = rec.events
            rec.ok = True
        self._resolve()

    def _unary(self, now: int) -> None:
        rec = self.rec
        rec.streamed = False
        try:
            obj = json.loads(b"".join(self.body))
        except ValueError as exc:
            rec.error = f"invalid JSON response: {exc}"
            return
        if isinstance(obj, dict) and obj.get("error"):
            rec.error = _error_message(obj)
            return
        choice = (obj.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content") if "message" in choice else choice.get("text")
        rec.events = 1 if text else 0
        _take_usage(rec, obj)
        if not rec.usage:
            rec.output_tokens = rec.events
        if text or rec.output_tokens:
            rec.t_first = now
            if self.on_first is not None:
                self.on_first(rec, (text or "").encode())
        if self.keep_text:
            rec.text = text or ""
        rec.ok = True

    def fail(self, message: str, now: int | None = None) -> None:
        if self.failed or self.future.done():
            return
        self.failed = True
        self.rec.t_end = now or perf_counter_ns()
        self.rec.ok, self.rec.error = False, message
        self._resolve()

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


# --------------------------------------------------------------------------- HTTP/1.1 connections


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one exchange at a time.

    The response is parsed in ``data_received`` itself (status line, headers, chunked or
    Content-Length body) and handed to the exchange in the same call: no task wakes up per chunk,
    and every timestamp is taken when the bytes come off the socket.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.exchange: _Exchange | None = None
        self.alive = True
        self.reusable = True
        self.got_bytes = False
        self._head = b""
        self._state = 0  # 0 headers, 1 chunked body, 2 length body, 3 until close
        self._left = 0  # bytes of the current chunk / body still to come
        self._buf = b""
        self._swallow = 0  # bytes of a finished body still to come (the final CRLF)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def send(self, data: bytes, exchange: _Exchange) -> None:
        self.exchange = exchange
        self.got_bytes = False
        self._head, self._state, self._buf, self._left = b"", 0, b"", 0
        if not self.alive or self.transport is None or self.transport.is_closing():
            self.exchange = None
            exchange.fail("connection closed by the server before the request")
            return
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        ex, self.exchange = self.exchange, None
        if ex is None:
            return
        if self._state == 3:  # the body ran until the server closed
            ex.finish(perf_counter_ns())
        else:
            ex.fail(f"connection closed by the server{': ' + str(exc) if exc else ''}")

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost finishes or fails the exchange

    def data_received(self, data: bytes) -> None:
        now = perf_counter_ns()
        ex = self.exchange
        if self._swallow:  # the end of the previous chunked body
            cut = min(self._swallow, len(data))
            data, self._swallow = data[cut:], self._swallow - cut
            if not data:
                return
        if ex is None:  # bytes with no request: the server is confused; drop the connection
            self.reusable = False
            self.transport.close()  # type: ignore[union-attr]
            return
        self.got_bytes = True
        if self._state == 0:
            head = self._head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                self._head = head
                return
            self._head = b""
            data = head[end + 4:]
            if not self._headers(head[:end], ex):
                if data:
                    self.data_received(data)
                return
            if self.exchange is None:  # an empty body: already complete
                return
        if self._state == 1:
            self._chunked(data, ex, now)
        elif self._state == 2:
            if len(data) >= self._left:
                data = data[:self._left]
                self._left = 0
                if data:
                    ex.feed(data, now)
                self._complete(ex, now)
            else:
                self._left -= len(data)
                ex.feed(data, now)
        elif data:
            ex.feed(data, now)

    def _headers(self, head: bytes, ex: _Exchange) -> bool:
        """Parse the status line and the headers that matter; False for an interim 1xx response."""
        status = int(head[9:12]) if head[9:12].isdigit() else 0  # "HTTP/1.1 200 OK"
        if 100 <= status < 200:
            return False
        low = head.lower()
        close = head.startswith(b"HTTP/1.0")
        chunked = length = None
        i = low.find(b"\r\ntransfer-encoding:")
        if i >= 0:
            chunked = b"chunked" in low[i + 20:low.find(b"\r\n", i + 2) if low.find(b"\r\n", i + 2) > 0 else None]
        if not chunked:
            i = low.find(b"\r\ncontent-length:")
            if i >= 0:
                j = low.find(b"\r\n", i + 2)
                length = int(low[i + 17:j if j > 0 else None].strip())
        i = low.find(b"\r\nconnection:")
        if i >= 0:
            j = low.find(b"\r\n", i + 2)
            v = low[i + 13:j if j > 0 else None].strip()
            close = v == b"close" or (close and v != b"keep-alive")
        self.reusable = not close
        ex.headers(status)
        if chunked:
            self._state, self._left = 1, -1
        elif length is not None:
            self._state, self._left = 2, length
            if length == 0:
                self._complete(ex, perf_counter_ns())
        else:
            self._state, self.reusable = 3, False
        return True

    def _chunked(self, data: bytes, ex: _Exchange, now: int) -> None:
        """Decode chunked transfer coding; hand the payload of this read to the exchange at once."""
        if self._left == -1 and not self._buf:  # the usual read: exactly one whole chunk
            eol = data.find(b"\r\n")
            if 0 < eol < 9:
                try:
                    size = int(data[:eol], 16)
                except ValueError:
                    size = -1
                if size > 0 and len(data) == eol + size + 4:
                    ex.feed(data[eol + 2:-2], now)
                    return
                if size > 0 and data.endswith(b"\r\n0\r\n\r\n"):  # a whole body in one read
                    parts = data.split(b"\r\n")  # size, data, size, data, ..., "0", "", ""
                    payload = parts[1:-3:2]
                    try:  # every size matches its data, unless a chunk's data holds a CRLF
                        whole = len(parts) % 2 == 1 and all(
                            int(n, 16) == len(d) for n, d in zip(parts[0:-3:2], payload))
                    except ValueError:
                        whole = False
                    if whole:  # else decode chunk by chunk below
                        self._swallow, self._left = 0, -1
                        ex.feed(b"".join(payload), now)
                        self._complete(ex, now)
                        return
        buf = self._buf + data if self._buf else data
        pos, n = 0, len(buf)
        out = []
        left = self._left
        if left > 0:  # the rest of a chunk begun in an earlier read
            take = left if left <= n else n
            out.append(buf[:take])
            pos = take
            left -= take
            if left:
                self._left = left
                self._buf = b""
                ex.feed(out[0], now)
                return
            left = -2
        if left == -2:  # the CRLF after a chunk's data
            if n - pos < 2:
                self._left, self._buf = -2, buf[pos:]
                if out:
                    ex.feed(out[0], now)
                return
            pos += 2
        find = buf.find
        while True:
            eol = find(b"\r\n", pos)
            if eol < 0:
                break
            try:
                size = int(buf[pos:eol], 16)
            except ValueError:  # a chunk extension
                size = int(buf[pos:eol].split(b";", 1)[0], 16)
            start = eol + 2
            if size == 0:  # the last chunk (no trailers from these servers); its CRLF may come later
                self._swallow = 2 - len(buf[start:start + 2])
                self._buf, self._left = b"", -1
                if out:
                    ex.feed(out[0] if len(out) == 1 else b"".join(out), now)
                self._complete(ex, now)
                return
            end = start + size
            if end + 2 <= n:  # a whole chunk and its CRLF
                out.append(buf[start:end])
                pos = end + 2
                continue
            out.append(buf[start:end])  # a partial chunk: the rest comes in later reads
            got = min(end, n) - start
            if got == size:
                self._left, pos = -2, min(end, n)
            else:
                self._left, pos = size - got, n
            self._buf = buf[pos:] if self._left == -2 else b""
            ex.feed(out[0] if len(out) == 1 else b"".join(out), now)
            return
        self._left = -1
        self._buf = buf[pos:] if pos < n else b""
        if out:
            ex.feed(out[0] if len(out) == 1 else b"".join(out), now)

    def _complete(self, ex: _Exchange, now: int) -> None:
        self.exchange = None
        self._state = 0
        ex.finish(now)


# --------------------------------------------------------------------------- the client


class StreamingClient:
    """An OpenAI-compatible client for many endpoints: ``async with StreamingClient(...) as c``."""

    def __init__(self, endpoints: Sequence[str], model: str, options: ClientOptions | None = None,
                 *, id_prefix: str = "bench"):
        if not endpoints:
            raise ValueError("at least one endpoint URL is needed")
        self.options = options or ClientOptions()
        self.model = model
        path = "/v1/chat/completions" if self.options.api == "chat" else "/v1/completions"
        self.urls = [e.rstrip("/") + path for e in endpoints]
        self._targets = [_target(u) for u in self.urls]
        self.picker = EndpointPicker(len(self.urls), self.options.policy)
        self.id_prefix = id_prefix
        self._bodies: dict[Prompt, bytes] = {}
        self._idle: list[list[_Connection]] = [[] for _ in self.urls]
        self._all: set[_Connection] = set()
        self._seq = itertools.count()
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.options.headers.items())
        accept = "Accept: text/event-stream\r\n" if self.options.stream else ""
        # identity: the stream is parsed as it arrives, never decompressed
        self._heads = [(f"POST {path_} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\n"
                        f"{accept}Accept-Encoding: identity\r\nUser-Agent: benchstack\r\n{extra}").encode()
                       for (_, _, hostport, path_, _) in self._targets]
        self._closed = False
        self._live: dict[_Exchange, int] = {}  # exchange -> deadline (perf_counter_ns)
        self._timeout_ns = int(self.options.timeout_s * 1e9)
        self._sweep_s = min(1.0, self.options.timeout_s / 4)
        self._sweeper: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> "StreamingClient":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._all):
            if conn.transport is not None:
                conn.transport.close()
        self._all.clear()
        for idle in self._idle:
            idle.clear()
        await asyncio.sleep(0)  # let the transports close

    # ------------------------------------------------------------------ request bodies
    def body(self, prompt: Prompt) -> bytes:
        """The JSON body for ``prompt`` (cached: one encoding per distinct prompt)."""
        b = self._bodies.get(prompt)
        if b is not None:
            return b
        o = self.options
        d: dict[str, Any] = {"model": self.model, "max_tokens": prompt.max_tokens, "stream": o.stream}
        if o.api == "chat":
            if prompt.text is None:
                raise ValueError("the chat API needs text prompts (token ids only go to completions)")
            d["messages"] = [{"role": "user", "content": prompt.text}]
        else:
            d["prompt"] = list(prompt.token_ids) if prompt.token_ids is not None else prompt.text
        if o.stream and o.include_usage:
            d["stream_options"] = {"include_usage": True}
        if o.ignore_eos:
            d["ignore_eos"] = True
        d.update(o.extra_body)
        b = self._bodies[prompt] = json.dumps(d, separators=(",", ":")).encode()
        return b

    # ------------------------------------------------------------------ connections
    async def _connect(self, ep: int) -> _Connection:
        scheme, host, _, _, port = self._targets[ep]
        ssl = None
        if scheme == "https":
            import ssl as _ssl

            ssl = _ssl.create_default_context()
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, host, port, ssl=ssl)
        self._all.add(conn)
        return conn

    def _release(self, ep: int, conn: _Connection) -> None:
        if conn.alive and conn.reusable and conn.exchange is None and not self._closed:
            self._idle[ep].append(conn)
        else:
            self._all.discard(conn)
            if conn.alive and conn.transport is not None:
                conn.transport.close()

    # ------------------------------------------------------------------ one request
    def _prepare(self, prompt: Prompt, index: int | None, tag: Any) -> tuple[RequestRecord, int, bytes]:
        seq = next(self._seq)
        ep = self.picker.acquire()
        rid = f"{self.id_prefix}-{seq}" if self.options.request_ids else None
        rec = RequestRecord(seq if index is None else index, ep, rid)
        rec.tag = tag
        rec.input_tokens = prompt.input_tokens
        if self.options.record_chunks:
            rec.chunk_times = []
        body = self.body(prompt)
        head = self._heads[ep]
        if rid is not None:
            head += b"X-Request-Id: " + rid.encode() + b"\r\n"
        return rec, ep, head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body

    def _pop_idle(self, ep: int) -> _Connection | None:
        idle = self._idle[ep]
        while idle:
            conn = idle.pop()
            if conn.alive:
                return conn
            self._all.discard(conn)
        return None

    def _write(self, conn: _Connection, rec: RequestRecord, request: bytes,
               on_first: FirstCallback | None) -> tuple[asyncio.Future, _Exchange]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        ex = _Exchange(rec, fut, on_first, self.options.keep_text, self.options.stream)
        # timeouts: one sweep a second over the live exchanges, not a timer per request
        self._live[ex] = rec.t_send + self._timeout_ns
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._sweep_s, self._sweep)
        conn.send(request, ex)
        return fut, ex

    def _sweep(self) -> None:
        now = perf_counter_ns()
        for ex, deadline in list(self._live.items()):
            if now >= deadline:
                ex.fail(f"timed out after {self.options.timeout_s:g} s", now)
        self._sweeper = None
        if self._live and not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_s, self._sweep)

    async def send(self, prompt: Prompt, index: int | None = None, *, tag: Any = None,
                   on_first: FirstCallback | None = None,
                   on_done: DoneCallback | None = None) -> RequestRecord:
        """Send one request and wait for its end; never raises for a failed request (the record
        says why)."""
        rec, ep, request = self._prepare(prompt, index, tag)
        conn = self._pop_idle(ep)
        rec.t_send = perf_counter_ns()
        started = self._write(conn, rec, request, on_first) if conn is not None else None
        return await self._complete(rec, ep, request, conn, started, on_first, on_done)

    def submit(self, prompt: Prompt, index: int | None = None, *, tag: Any = None,
               on_first: FirstCallback | None = None,
               on_done: DoneCallback | None = None) -> asyncio.Task:
        """Start a request from a callback of the event loop; returns the task that completes it.

        With an idle connection the request is written before this returns (``send`` would wait
        one loop iteration for its task to start): the SUT issues LoadGen's queries this way.
        """
        rec, ep, request = self._prepare(prompt, index, tag)
        conn = self._pop_idle(ep)
        rec.t_send = perf_counter_ns()
        started = self._write(conn, rec, request, on_first) if conn is not None else None
        return asyncio.get_running_loop().create_task(
            self._complete(rec, ep, request, conn, started, on_first, on_done))

    async def _complete(self, rec: RequestRecord, ep: int, request: bytes, conn: _Connection | None,
                        started: tuple[asyncio.Future, _Exchange] | None,
                        on_first: FirstCallback | None, on_done: DoneCallback | None) -> RequestRecord:
        fresh = conn is None
        try:
            for attempt in (0, 1):
                if started is None:
                    if conn is None:
                        conn = await self._connect(ep)
                    started = self._write(conn, rec, request, on_first)
                fut, ex = started
                try:
                    await fut
                finally:
                    self._live.pop(ex, None)
                # a kept-alive connection the server had closed: send once more on a new one
                if rec.ok or fresh or conn.got_bytes or attempt == 1 or not (rec.error or "").startswith(
                        "connection closed"):
                    break
                rec.error, rec.t_end = None, None
                self._release(ep, conn)
                conn, started = self._pop_idle(ep), None
                fresh = conn is None
        except asyncio.CancelledError:
            rec.t_end = perf_counter_ns()
            rec.ok, rec.error = False, "cancelled"
            if conn is not None:
                conn.reusable = False
            raise
        except Exception as exc:  # connection refused, DNS, TLS: a failed request
            rec.t_end = perf_counter_ns()
            rec.ok, rec.error = False, f"{type(exc).__name__}: {exc}"
        finally:
            if conn is not None:
                if not rec.ok and conn.exchange is not None:
                    conn.exchange = None  # failed mid-response (timeout): not reusable
                    conn.reusable = False
                self._release(ep, conn)
            self.picker.release(ep)
        if on_done is not None:
            on_done(rec)
        return rec


def _target(url: str) -> tuple[str, str, str, str, int]:
    """(scheme, host, host:port for the Host header, path, port) of an http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname
    hostport = parts.netloc.rsplit("@", 1)[-1]
    return parts.scheme, host, hostport, parts.path or "/", port


def _event(block: bytes) -> tuple[bytes | None, bytes | None]:
    """(event name, data payload) of one SSE event block; comments and empty blocks -> (None, None)."""
    if block.startswith(b"data: ") and b"\n" not in block:  # the usual event: one data line
        return None, block[6:]
    kind = None
    data = None
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            part = line[5:].lstrip(b" ")
            data = part if data is None else data + b"\n" + part
        elif line.startswith(b"event:"):
            kind = line[6:].strip()
    return kind, data


def _content(obj: Any) -> str | None:
    """Text of a chunk's first choice ('' for a role-only delta); None if it has no choice."""
    if not isinstance(obj, dict):
        return None
    choices = obj.get("choices")
    if not choices:
        return None
    c = choices[0]
    delta = c.get("delta")
    if delta is not None:
        return delta.get("content") or delta.get("reasoning_content") or ""
    return c.get("text") or ""


def _take_usage(rec: RequestRecord, obj: Any) -> None:
    usage = obj.get("usage") if isinstance(obj, dict) else None
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        rec.output_tokens, rec.usage = usage["completion_tokens"], True
        if isinstance(usage.get("prompt_tokens"), int):
            rec.input_tokens = usage["prompt_tokens"]


def _usage_from(rec: RequestRecord, data: bytes) -> None:
    """Take the last non-null ``usage`` object found in the final bytes of a stream."""
    pos = len(data)
    while (pos := data.rfind(b'"usage"', 0, pos)) >= 0:
        start = data.rfind(_DATA, 0, pos)
        if start < 0:
            return
        end = data.find(b"\n", pos)
        try:
            obj = _loads(data[start + 5:end if end >= 0 else len(data)])
        except ValueError:
            obj = None
        _take_usage(rec, obj)
        if rec.usage:
            return
        pos = start


def _error_message(obj: Any) -> str:
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except ValueError:
            return obj.strip()[:300]
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            return str(err.get("message") or err)[:300]
        return str(err)[:300]
    return str(obj)[:300]


# --------------------------------------------------------------------------- load shapes


async def closed_loop(client: StreamingClient, prompts: Sequence[Prompt], *, concurrency: int,
                      num_requests: int | None = None, duration_s: float | None = None,
                      warmup: int = 0) -> list[RequestRecord]:
    """``concurrency`` users, each sending its next request when the last one ended.

    Stops after ``num_requests`` (request i uses ``prompts[i % len(prompts)]``) or, with
    ``duration_s``, issues no new request after that time. ``warmup`` requests run first, at the
    same concurrency, and are not returned.
    """
    if num_requests is None and duration_s is None:
        raise ValueError("give num_requests or duration_s")
    if warmup:
        await _closed(client, prompts, concurrency, warmup, None, offset=0)
    return await _closed(client, prompts, concurrency, num_requests, duration_s, offset=warmup)


async def _closed(client, prompts, concurrency, num_requests, duration_s, offset):
    records: list[RequestRecord] = []
    counter = itertools.count()
    n_prompts = len(prompts)
    deadline = None if duration_s is None else perf_counter_ns() + int(duration_s * 1e9)

    async def user() -> None:
        while True:
            i = next(counter)
            if num_requests is not None and i >= num_requests:
                return
            if deadline is not None and perf_counter_ns() >= deadline:
                return
            records.append(await client.send(prompts[(offset + i) % n_prompts], i))

    await asyncio.gather(*(user() for _ in range(concurrency)))
    records.sort(key=lambda r: r.index)
    return records


def arrival_times(rate: float, count: int, arrival: str = "poisson", seed: int = 0) -> list[float]:
    """Send offsets in seconds: exponential gaps (Poisson) or even spacing (constant)."""
    if rate <= 0:
        raise ValueError("rate must be > 0")
    if arrival == "constant":
        return [i / rate for i in range(count)]
    if arrival != "poisson":
        raise ValueError(f"unknown arrival pattern {arrival!r} (poisson or constant)")
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(count):
        out.append(t)
        t += rng.expovariate(rate)
    return out


async def open_loop(client: StreamingClient, prompts: Sequence[Prompt], *, rate: float,
                    num_requests: int | None = None, duration_s: float | None = None,
                    arrival: str = "poisson", seed: int = 0,
                    max_concurrency: int | None = None) -> list[RequestRecord]:
    """Requests at ``rate`` per second whatever the server does (Poisson or constant arrivals).

    Sends are scheduled on absolute times, so a late wake-up never delays later requests.
    ``max_concurrency`` (optional) holds a request back while that many are in flight.
    """
    if num_requests is None:
        if duration_s is None:
            raise ValueError("give num_requests or duration_s")
        num_requests = max(1, int(rate * duration_s))
    times = arrival_times(rate, num_requests, arrival, seed)
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    tasks: list[asyncio.Task] = []
    n_prompts = len(prompts)

    async def one(i: int) -> RequestRecord:
        if sem is None:
            return await client.send(prompts[i % n_prompts], i)
        async with sem:
            return await client.send(prompts[i % n_prompts], i)

    start = loop.time()
    for i, t in enumerate(times):
        delay = start + t - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(i)))
    return list(await asyncio.gather(*tasks))


# --------------------------------------------------------------------------- metrics


def metrics_from_records(records: Iterable[RequestRecord], *, duration_s: float | None = None) -> Metrics:
    """benchstack's Metrics of a list of records (the window is first send to last end)."""
    records = list(records)
    ok = [r for r in records if r.ok]
    if duration_s is None and records:
        t0 = min(r.t_send for r in records)
        t1 = max((r.t_end or r.t_send) for r in records)
        duration_s = (t1 - t0) / 1e9 if t1 > t0 else None
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = [r.input_tokens for r in ok if r.input_tokens is not None]
    rate = (lambda x: x / duration_s) if duration_s else (lambda x: None)
    return Metrics(
        duration_s=duration_s,
        requests_sent=len(records),
        requests_completed=len(ok),
        requests_failed=len(records) - len(ok),
        request_throughput=rate(len(ok)),
        output_token_throughput=rate(out_tokens),
        total_token_throughput=rate(out_tokens + sum(in_tokens)) if len(in_tokens) == len(ok) else None,
        ttft_ms=stat_of(r.ttft_ms for r in ok),
        itl_ms=stat_of(r.itl_ms for r in ok),
        e2e_ms=stat_of(r.e2e_ms for r in ok),
        input_tokens=stat_of(in_tokens),
        output_tokens=stat_of(r.output_tokens for r in ok),
    )


def failure_summary(records: Iterable[RequestRecord], limit: int = 5) -> list[str]:
    """The most frequent error messages with their counts, for a LoadResult's ``extra``."""
    counts: dict[str, int] = {}
    for r in records:
        if not r.ok:
            counts[r.error or "unknown"] = counts.get(r.error or "unknown", 0) + 1
    return [f"{n} x {msg}" for msg, n in sorted(counts.items(), key=lambda kv: -kv[1])[:limit]]


# --------------------------------------------------------------------------- helpers


def make_prompts(count: int, isl: int, osl: int, *, seed: int = 0) -> list[Prompt]:
    """Synthetic text prompts of exactly ``isl`` whitespace-separated words (no tokenizer needed)."""
    rng = random.Random(seed)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
             "juliet", "kilo", "lima", "mike", "november", "oscar", "papa"]
    return [Prompt(text=" ".join(rng.choice(words) for _ in range(isl)), max_tokens=osl,
                   input_tokens=isl) for _ in range(count)]


def run(coro: Awaitable[Any], *, use_uvloop: bool | None = None) -> Any:
    """Run ``coro`` on a new event loop: uvloop when it is installed (unless
    ``BENCHSTACK_NO_UVLOOP=1``), else asyncio's."""
    if use_uvloop is None:
        use_uvloop = os.environ.get("BENCHSTACK_NO_UVLOOP", "") in ("", "0")
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro)  # type: ignore[arg-type]
    return asyncio.run(coro)  # type: ignore[arg-type]
