"""genai-perf's artifacts: its ``profile_export_genai_perf.json`` and perf_analyzer's raw export.

genai-perf 0.0.16 leaves out requests that produced no token, and stops (no JSON) at the first
in-stream ``error`` event. perf_analyzer's ``profile_export.json`` still holds every request it
completed, with the time of the request and of each response: benchstack counts completed,
empty and failed requests from it, and falls back to it for the metrics when genai-perf wrote
none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
from attrs import field, frozen

from benchstack.metrics import metrics_from_perf_export, stat_of
from benchstack.records import Metrics

EXPORT = "profile_export_genai_perf.json"
RAW = "profile_export.json"


def find(out_dir: Path, name: str) -> Path | None:
    found = sorted(Path(out_dir).rglob(name))
    return found[0] if found else None


@frozen(kw_only=True)
class RawRequest:
    """One perf_analyzer request, from its raw export (times in ns since the epoch)."""

    start: int
    first: int | None  # first response with content
    end: int | None  # last response
    tokens: int
    error: str | None = None


@frozen(kw_only=True)
class RawSummary:
    requests: tuple[RawRequest, ...] = field(converter=tuple)

    @property
    def completed(self) -> list[RawRequest]:
        return [r for r in self.requests if r.error is None]

    @property
    def failed(self) -> list[RawRequest]:
        return [r for r in self.requests if r.error is not None]

    def metrics(self) -> Metrics:
        """benchstack's metrics computed from perf_analyzer's timestamps (first send to last end)."""
        ok = self.completed
        ends = [r.end for r in self.requests if r.end is not None]
        dur = (max(ends) - min(r.start for r in self.requests)) / 1e9 if ends else None
        tokens = sum(r.tokens for r in ok)
        rate = (lambda x: x / dur) if dur else (lambda x: None)
        return Metrics(
            duration_s=dur, requests_sent=len(self.requests), requests_completed=len(ok),
            requests_failed=len(self.failed), request_throughput=rate(len(ok)),
            output_token_throughput=rate(tokens),
            ttft_ms=stat_of((r.first - r.start) / 1e6 for r in ok if r.first is not None),
            itl_ms=stat_of((r.end - r.first) / 1e6 / (r.tokens - 1) for r in ok
                           if r.first is not None and r.end is not None and r.tokens > 1),
            e2e_ms=stat_of((r.end - r.start) / 1e6 for r in ok if r.end is not None),
            output_tokens=stat_of(r.tokens for r in ok))


def _events(text: str):
    """(event name, data) of each SSE event in one perf_analyzer response string."""
    for block in text.replace("\r\n", "\n").split("\n\n"):
        kind, data = None, None
        for line in block.split("\n"):
            if line.startswith("data:"):
                data = line[5:].strip()
            elif line.startswith("event:"):
                kind = line[6:].strip()
        if data is not None or kind is not None:
            yield kind, data


def _content(obj: Any) -> str:
    if not isinstance(obj, dict):
        return ""
    choices = obj.get("choices") or []
    if not choices:
        return ""
    c = choices[0]
    if "delta" in c:
        return (c.get("delta") or {}).get("content") or ""
    if "message" in c:
        return (c.get("message") or {}).get("content") or ""
    return c.get("text") or ""


def parse_raw(path: Path, count_tokens=None) -> RawSummary:
    """Every request of perf_analyzer's export; ``count_tokens(text)`` counts output tokens
    (genai-perf re-tokenizes the text), else content events are counted."""
    data = json.loads(Path(path).read_text())
    out: list[RawRequest] = []
    for exp in data.get("experiments", []):
        for req in exp.get("requests", []):
            stamps = req.get("response_timestamps") or []
            outputs = req.get("response_outputs") or []
            first, error, texts, events = None, None, [], 0
            for ts, resp in zip(stamps, outputs):
                body = resp.get("response", "") if isinstance(resp, dict) else str(resp)
                for kind, payload in _events(body):
                    if payload in (None, "[DONE]"):
                        if kind == "error":
                            error = "in-stream error event"
                        continue
                    try:
                        obj = json.loads(payload)
                    except ValueError:
                        continue
                    if kind == "error" or (isinstance(obj, dict) and obj.get("error")):
                        err = obj.get("error") if isinstance(obj, dict) else obj
                        error = "in-stream error: " + str(err.get("message") if isinstance(err, dict) else err)
                        continue
                    text = _content(obj)
                    if text:
                        events += 1
                        texts.append(text)
                        if first is None:
                            first = ts
            tokens = count_tokens("".join(texts)) if count_tokens and texts else events
            out.append(RawRequest(start=req["timestamp"], first=first,
                                  end=stamps[-1] if stamps else None, tokens=tokens, error=error))
    return RawSummary(requests=out)


def combine(export: dict[str, Any] | None, raw: RawSummary | None) -> tuple[Metrics, str]:
    """genai-perf's metrics with completed/failed counts and output lengths from the raw export.

    Returns the metrics and where they came from (``genai-perf`` or ``perf_analyzer export``).
    """
    if export is None:
        if raw is None:
            raise ValueError("neither genai-perf's JSON nor perf_analyzer's export")
        return raw.metrics(), "perf_analyzer export"
    m = metrics_from_perf_export(export)
    if raw is None:
        return m, "genai-perf"
    ok = raw.completed
    return attrs.evolve(
        m, requests_sent=len(raw.requests), requests_completed=len(ok),
        requests_failed=len(raw.failed), output_tokens=stat_of(r.tokens for r in ok),
    ), "genai-perf"
