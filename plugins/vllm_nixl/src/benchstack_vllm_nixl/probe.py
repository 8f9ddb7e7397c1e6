"""Talking to running servers: readiness checks and ``/metrics`` scrapes (stdlib HTTP, threads)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from benchstack.probe import http_get, models_listed

from . import metrics

CHECK_TIMEOUT_S = 3.0
STATE_FILE = "metrics/last.json"  # the previous scrape per server, for per-point deltas


def _each(fn: Callable[[str], Any], items: list[str]) -> list[Any]:
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(16, len(items))) as pool:
        return list(pool.map(fn, items))


def server_state(url: str, model: str) -> str | None:
    """None when a vLLM server is healthy and lists ``model``; else what is missing."""
    try:
        status, _ = http_get(url + "/health", CHECK_TIMEOUT_S)
        if status != 200:
            return f"/health is {status}"
        listed = models_listed(url, model, CHECK_TIMEOUT_S)
    except OSError as exc:
        return f"not answering ({getattr(exc, 'reason', exc)})"
    return None if listed is True else listed


def wait_servers(launcher, handles, urls: dict[str, str], model: str, timeout_s: float) -> None:
    """Wait until every vLLM server is healthy and lists the model (fails at once if one exits)."""
    names = list(urls)

    def check() -> bool | str:
        states = _each(lambda n: server_state(urls[n], model), names)
        missing = [f"{n}: {s}" for n, s in zip(names, states) if s]
        return True if not missing else f"{len(missing)} of {len(names)} not ready: " + "; ".join(missing)

    launcher.wait_ready(handles, check, what=f"{len(names)} vLLM server(s)", timeout_s=timeout_s,
                        interval_s=1.0)


def router_state(url: str, kind: str, model: str, expected: dict[str, int]) -> str | None:
    """None when the router lists ``model`` and sees every upstream healthy; else what is missing."""
    try:
        status, body = http_get(url + "/health", CHECK_TIMEOUT_S)
        if status != 200:
            return f"router /health is {status}: {body[:200]}"
        if kind == "benchstack":
            seen = json.loads(body)
            for role, n in expected.items():
                ok = sum(1 for u in seen.get(role, []) if u.get("healthy"))
                if ok != n:
                    return f"router sees {ok} of {n} {role} server(s) healthy"
        else:  # vllm-router: GET /workers lists what it routes to
            status, body = http_get(url + "/workers", CHECK_TIMEOUT_S)
            data = json.loads(body) if status == 200 else None
            workers = data.get("workers") if isinstance(data, dict) else data
            total = len(workers) if isinstance(workers, list) else 0
            if total and total < sum(expected.values()):
                return f"router lists {total} of {sum(expected.values())} workers"
        listed = models_listed(url, model, CHECK_TIMEOUT_S)
    except (OSError, ValueError) as exc:
        return f"router not answering ({getattr(exc, 'reason', exc)})"
    return None if listed is True else f"router: {listed}"


def wait_router(launcher, handles, url: str, kind: str, model: str, roles: dict[str, str],
                timeout_s: float) -> None:
    expected: dict[str, int] = {}
    for role in roles.values():
        key = "workers" if role == "aggregated" else role
        expected[key] = expected.get(key, 0) + 1

    def check() -> bool | str:
        return router_state(url, kind, model, expected) or True

    launcher.wait_ready(handles, check, what=f"router {url}", timeout_s=timeout_s)


# --------------------------------------------------------------------------- metrics


def scrape(urls: dict[str, str], timeout_s: float) -> dict[str, str | Exception]:
    """Raw ``/metrics`` text of each server (or the error that stopped the scrape)."""
    names = list(urls)

    def one(name: str) -> str | Exception:
        try:
            status, body = http_get(urls[name] + "/metrics", timeout=timeout_s)
        except OSError as exc:
            return exc
        return body if status == 200 else RuntimeError(f"HTTP {status}")

    return dict(zip(names, _each(one, names)))


def baseline(run_dir: Path, urls: dict[str, str], timeout_s: float) -> None:
    """Remember every server's counters once ready, so the first point's deltas are its own."""
    raw = scrape(urls, timeout_s)
    state = {n: metrics.summarize(t) for n, t in raw.items() if isinstance(t, str)}
    path = Path(run_dir) / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=1, sort_keys=True))


def collect(run_dir: Path, out_dir: Path, info: dict[str, Any], final: bool,
            timeout_s: float) -> tuple[dict[str, Any], list[str]]:
    """Scrape every server (and the router), save the raw text, return the compact summary.

    After a point: per-server counters of that point (deltas since the previous scrape) and the
    sums per role. At the end (``final``): cumulative counters of the whole deployment.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    urls, roles = dict(info["urls"]), dict(info["roles"])
    raw = scrape(urls, timeout_s)
    metrics_dir = out_dir / ("metrics-final" if final else "metrics")
    metrics_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / STATE_FILE
    try:
        before = json.loads(state_path.read_text())
    except (OSError, ValueError):
        before = {}
    servers: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    artifacts: list[str] = []
    now_state = dict(before)
    for name, text in raw.items():
        if isinstance(text, Exception):
            errors[name] = f"{type(text).__name__}: {text}"
            continue
        path = metrics_dir / f"{name}.prom"
        path.write_text(text)
        artifacts.append(_rel(path, run_dir))
        now = metrics.summarize(text)
        now_state[name] = now
        values = metrics.delta(now, None if final else before.get(name))
        servers[name] = {"role": roles[name], "url": urls[name], **values}
    state_path.parent.mkdir(parents=True, exist_ok=True)
    state_path.write_text(json.dumps(now_state, indent=1, sort_keys=True))
    meta: dict[str, Any] = {
        "scope": "deployment" if final else "point",
        "roles": metrics.role_totals(servers, roles),
        "servers": servers,
    }
    if info.get("router_metrics"):
        r = scrape({"router": info["router_metrics"].removesuffix("/metrics")}, timeout_s)["router"]
        if isinstance(r, str):
            path = metrics_dir / "router.prom"
            path.write_text(r)
            artifacts.append(_rel(path, run_dir))
            own = metrics.router_counters(r)
            if own:
                meta["router"] = own
        else:
            errors["router"] = f"{type(r).__name__}: {r}"
    if errors:
        meta["errors"] = errors
    return meta, artifacts


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
