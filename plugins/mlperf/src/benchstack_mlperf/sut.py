"""The system under test LoadGen drives: benchstack's streaming client on its own event-loop thread.

LoadGen calls ``issue_queries`` from its own threads; each query sample becomes one request on
the client's loop. At the first content token the SUT calls ``lg.FirstTokenComplete``, at the
end ``lg.QuerySamplesComplete`` with the token count, so LoadGen times TTFT and TPOT itself. A
failed request is completed too (LoadGen would wait for it forever), with its tokens so far, and
counted as failed in benchstack's metrics.
"""

from __future__ import annotations

import array
import asyncio
import threading
from collections import deque
from typing import Any, Sequence

import mlperf_loadgen as lg

from benchstack.client import ClientOptions, Prompt, RequestRecord, StreamingClient, closed_loop


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LoadgenSut:
    """``with LoadgenSut(...) as sut``: ``sut.issue_queries`` / ``sut.flush`` go to ``lg.ConstructSUT``."""

    def __init__(self, endpoints: Sequence[str], model: str, options: ClientOptions,
                 prompts: Sequence[Prompt], *, max_inflight: int | None = None,
                 accuracy: bool = False, tokenizer: Any = None, tick_ms: float = 0.0):
        self.endpoints, self.model, self.options = list(endpoints), model, options
        self.prompts = prompts
        self.max_inflight = max_inflight
        self.accuracy = accuracy
        self.tokenizer = tokenizer  # set: accuracy data are int32 token ids, else UTF-8 text
        self.tick_ms = tick_ms
        self._ticker: asyncio.TimerHandle | None = None
        self.records: list[RequestRecord] = []
        self.outputs: dict[int, dict[str, Any]] = {}  # qsl index -> decoded output (accuracy)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: StreamingClient | None = None
        self._queue: deque[tuple[int, int]] = deque()
        self._active = 0
        self._ready = threading.Event()
        self._first_sent: set[int] = set()

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "LoadgenSut":
        self._thread = threading.Thread(target=self._run_loop, name="benchstack-sut", daemon=True)
        self._thread.start()
        self._ready.wait()
        self._call(self._start_client())
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None:
            self.tick_ms = 0.0  # the next tick schedules no other
            if self._ticker is not None:
                self._loop.call_soon_threadsafe(self._ticker.cancel)
            try:
                self._call(self._client.close() if self._client else asyncio.sleep(0))
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                if self._thread is not None:
                    self._thread.join(30)

    def _run_loop(self) -> None:
        loop = self._loop = _new_loop()
        asyncio.set_event_loop(loop)
        loop.call_soon(self._ready.set)
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def _call(self, coro) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

    async def _start_client(self) -> None:
        self._client = StreamingClient(self.endpoints, self.model, self.options, id_prefix="mlperf")
        await self._client.start()
        if self.tick_ms:
            self._tick()

    def _tick(self) -> None:
        # a thread that sleeps for tens of ms wakes up slowly (an idle vCPU runs the next few
        # hundred microseconds of Python many times slower): keep the SUT's loop warm so that
        # LoadGen's issue reaches the socket at once
        if self.tick_ms > 0:
            self._ticker = self._loop.call_later(self.tick_ms / 1000, self._tick)  # type: ignore[union-attr]

    def warmup(self, count: int, concurrency: int = 8) -> None:
        """Send ``count`` requests outside LoadGen's measurement (closed loop)."""
        if count > 0:
            self._call(closed_loop(self._client, self.prompts, concurrency=min(concurrency, count),
                                   num_requests=count))

    @property
    def sent_per_endpoint(self) -> list[int]:
        return list(self._client.picker.sent) if self._client else []

    # ------------------------------------------------------------------ LoadGen callbacks
    def issue_queries(self, samples: Sequence[Any]) -> None:
        items = [(s.id, s.index) for s in samples]
        self._loop.call_soon_threadsafe(self._issue, items)  # type: ignore[union-attr]

    def flush(self) -> None:
        pass

    def _issue(self, items: list[tuple[int, int]]) -> None:
        self._queue.extend(items)
        self._pump()

    def _pump(self) -> None:
        """Start queued samples while fewer than ``max_inflight`` are in flight (Offline)."""
        queue, cap, submit = self._queue, self.max_inflight, self._client.submit  # type: ignore[union-attr]
        while queue and (cap is None or self._active < cap):
            qid, idx = queue.popleft()
            self._active += 1
            # written before this returns on an idle connection: no task start between
            # LoadGen's issue and the send
            submit(self.prompts[idx], tag=(qid, idx), on_first=self._first, on_done=self._finished)

    def _finished(self, rec: RequestRecord) -> None:
        self._active -= 1
        self._done(rec)
        if self._queue:
            self._pump()

    def _first(self, rec: RequestRecord, data: bytes) -> None:
        qid = rec.tag[0]
        self._first_sent.add(qid)
        if self.accuracy:
            buf = self._encode(data.decode("utf-8", "replace"))
            ptr, n = buf.buffer_info()
            lg.FirstTokenComplete([lg.QuerySampleResponse(qid, ptr, n * buf.itemsize)])
        else:
            lg.FirstTokenComplete([lg.QuerySampleResponse(qid, 0, 0)])

    def _done(self, rec: RequestRecord) -> None:
        qid, idx = rec.tag
        self.records.append(rec)
        if qid not in self._first_sent:  # no token came: LoadGen still needs a first-token time
            lg.FirstTokenComplete([lg.QuerySampleResponse(qid, 0, 0)])
        self._first_sent.discard(qid)
        tokens = rec.output_tokens if rec.ok else 0
        if self.accuracy:
            text = rec.text or ""
            self.outputs[idx] = {"qsl_idx": idx, "ok": rec.ok, "output_tokens": rec.output_tokens,
                                 "text": text, "error": rec.error}
            buf = self._encode(text)
            ptr, n = buf.buffer_info()
            lg.QuerySamplesComplete([lg.QuerySampleResponse(qid, ptr, n * buf.itemsize, tokens)])
        else:
            lg.QuerySamplesComplete([lg.QuerySampleResponse(qid, 0, 0, tokens)])

    def _encode(self, text: str) -> array.array:
        if self.tokenizer is not None:
            return array.array("i", self.tokenizer.encode(text, add_special_tokens=False).ids)
        return array.array("B", text.encode("utf-8"))
