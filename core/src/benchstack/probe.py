"""Small synchronous HTTP/TCP probes for readiness checks (no proxies, short timeouts)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body) of a GET; connection errors raise OSError."""
    try:
        with _opener.open(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def http_json(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    """(status, parsed JSON or None) of a GET."""
    status, body = http_get(url, timeout)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def models_listed(base_url: str, model: str, timeout: float = 2.0) -> bool | str:
    """True if ``GET {base_url}/v1/models`` lists ``model``; else what it lists."""
    status, data = http_json(f"{base_url}/v1/models", timeout)
    if status != 200 or not isinstance(data, dict):
        return f"/v1/models answered {status}"
    ids = [m.get("id") for m in data.get("data", []) if isinstance(m, dict)]
    return True if model in ids else f"/v1/models lists {ids or 'no model'}, waiting for {model!r}"
