#!/usr/bin/env python
"""How accurate and how cheap is benchstack's own client? Measured against genai-perf and AIPerf.

    .venv/bin/python benchmarks/client.py [--quick] [--tools benchstack,genai-perf,aiperf]

Every client runs as its own process against the same local timed server
(``benchstack.testing.timed_server``), which records what it really did. Printed:

1. TTFT error: the client's TTFT minus the server's own, at p50 and p99 (distributions compared;
   for benchstack also per request, matched by request id), at concurrency 16 (TTFT 20 ms, ITL
   5 ms, 64 tokens) and 256 (TTFT 20 ms, ITL 100 ms, 8 tokens).
2. Client CPU per request and per streamed token in the steady state: the CPU counters of the
   client's whole process tree, sampled every 50 ms, between the server's receipt of the
   10th-percentile request and the end of the 90th-percentile one (start-up, ramp-up and drain
   excluded); requests and tokens in that window come from the server's records.
3. Request-rate ceiling against a zero-latency server (8 tokens, concurrency 32), with the proof
   that the server is not the bottleneck: two benchstack clients together get more than one.

Targets: TTFT error p50 <= 1 ms at concurrency 16; CPU per streamed token <= 2/3 of genai-perf's
and <= 1/5 of AIPerf's; ceiling >= 1.5x genai-perf's. This is a measurement, not a test: it
prints the figures and the ratios and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchstack.metrics import metrics_from_perf_export, percentile
from benchstack.testing.timed_server import start_subprocess

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL = "timed-model"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- CPU of a process tree


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(x) for x in fh.read().split()]
    except OSError:
        pass
    return out


def _cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` (threads included), plus its reaped children's."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / CLK_TCK  # utime stime cutime cstime
    except (OSError, IndexError):
        return 0.0


class TreeSampler(threading.Thread):
    """Samples the total CPU seconds of a process and its descendants every ``interval`` s."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[int, float]] = []  # (perf_counter_ns, cpu seconds)
        self.last: dict[int, float] = {}
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            pids, todo = [], [self.pid]
            while todo:
                p = todo.pop()
                pids.append(p)
                todo += _children(p)
            for p in pids:
                cpu = _cpu_s(p)
                if cpu or p not in self.last:
                    self.last[p] = cpu  # a process that exits keeps its last reading
            self.samples.append((time.perf_counter_ns(), sum(self.last.values())))
            self.stop_flag.wait(self.interval)

    def cpu_at(self, t_ns: int) -> float:
        s = self.samples
        for (t0, c0), (t1, c1) in zip(s, s[1:]):
            if t0 <= t_ns <= t1:
                return c0 + (c1 - c0) * (t_ns - t0) / max(1, t1 - t0)
        return s[-1][1] if s and t_ns > s[-1][0] else (s[0][1] if s else 0.0)


def run_client(argv: list[str], log: Path, env: dict | None = None, timeout: float = 300) -> tuple[int, TreeSampler]:
    with open(log, "w") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=log.parent,
                                start_new_session=True)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = -9
        finally:
            sampler.stop_flag.set()
            sampler.join()
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
    return code, sampler


# --------------------------------------------------------------------------- the clients


def cmd_benchstack(url: str, concurrency: int, requests: int, isl: int, osl: int, out: Path) -> list[str]:
    return [sys.executable, __file__, "--worker", url, str(concurrency), str(requests), str(isl),
            str(osl), str(out)]


def cmd_genai_perf(url: str, concurrency: int, requests: int, isl: int, osl: int, out: Path,
                   tokenizer: Path) -> list[str]:
    return [str(BIN / "genai-perf"), "profile", "-m", MODEL, "--endpoint-type", "chat", "--streaming",
            "-u", url.split("://")[1], "--concurrency", str(concurrency), "--request-count", str(requests),
            "--synthetic-input-tokens-mean", str(isl), "--synthetic-input-tokens-stddev", "0",
            "--output-tokens-mean", str(osl), "--output-tokens-stddev", "0", "--tokenizer",
            str(tokenizer), "--artifact-dir", str(out), "--profile-export-file", "profile_export.json"]


def cmd_aiperf(url: str, concurrency: int, requests: int, isl: int, osl: int, out: Path,
               tokenizer: Path) -> list[str]:
    return [str(BIN / "aiperf"), "profile", "--model", MODEL, "--endpoint-type", "chat", "--streaming",
            "--url", url, "--concurrency", str(concurrency), "--request-count", str(requests),
            "--isl", str(isl), "--osl", str(osl), "--extra-inputs", f"max_tokens:{osl}",
            "--tokenizer", str(tokenizer), "--ui", "none", "--artifact-dir", str(out),
            "--use-server-token-count"]


def worker(url: str, concurrency: int, requests: int, isl: int, osl: int, out: str) -> None:
    """The benchstack client as a child process: closed loop, records to ``out``."""
    from benchstack import client as c

    prompts = c.make_prompts(64, isl, osl)

    async def go():
        async with c.StreamingClient([url], MODEL) as cl:
            return await c.closed_loop(cl, prompts, concurrency=concurrency, num_requests=requests)

    recs = c.run(go())
    m = c.metrics_from_records(recs)
    Path(out).write_text(json.dumps({
        "records": [{"rid": r.request_id, "ttft_ms": r.ttft_ms, "ok": r.ok} for r in recs],
        "ttft_ms": {"p50": m.ttft_ms.p50, "p99": m.ttft_ms.p99}, "request_throughput": m.request_throughput,
    }))


def tool_ttft(tool: str, out: Path) -> dict[str, float | None]:
    if tool == "benchstack":
        return json.loads((out / "result.json").read_text())["ttft_ms"]
    name = "profile_export_genai_perf.json" if tool == "genai-perf" else "profile_export_aiperf.json"
    found = sorted(out.rglob(name))
    if not found:
        return {"p50": None, "p99": None}
    m = metrics_from_perf_export(json.loads(found[0].read_text()))
    return {"p50": m.ttft_ms.p50, "p99": m.ttft_ms.p99}


# --------------------------------------------------------------------------- one measurement


def measure(tool: str, server, work: Path, tokenizer: Path, concurrency: int, requests: int,
            isl: int, osl: int) -> dict[str, Any]:
    out = work / f"{tool}-c{concurrency}-{int(time.time() * 1000) % 100000}"
    out.mkdir(parents=True)
    server.reset()
    if tool == "benchstack":
        argv = cmd_benchstack(server.url, concurrency, requests, isl, osl, out / "result.json")
    elif tool == "genai-perf":
        argv = cmd_genai_perf(server.url, concurrency, requests, isl, osl, out / "artifacts", tokenizer)
    else:
        argv = cmd_aiperf(server.url, concurrency, requests, isl, osl, out / "artifacts", tokenizer)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("HF_HUB_OFFLINE", None)
    t0 = time.monotonic()
    code, sampler = run_client(argv, out / "client.log", env=env)
    wall = time.monotonic() - t0
    truth = server.stats(requests=True)
    reqs = sorted((r for r in truth["requests"] if r["end"] is not None), key=lambda r: r["recv"])
    res: dict[str, Any] = {"tool": tool, "exit": code, "wall_s": wall, "requests": len(reqs),
                           "truth_ttft_ms": truth["ttft_ms"], "out": str(out)}
    if code != 0 or len(reqs) < 10:
        res["error"] = f"exit {code}; see {out / 'client.log'}"
        return res
    # steady state: from the receipt of the 10th-percentile request to the end of the 90th
    k = len(reqs) // 10
    t_a = reqs[k]["recv"]
    t_b = sorted(r["end"] for r in reqs)[len(reqs) - 1 - k]
    done = sum(1 for r in reqs if t_a <= r["end"] <= t_b)
    tokens = 0.0
    for r in reqs:
        if r["first"] is None or r["tokens"] == 0:
            continue
        if r["tokens"] == 1 or r["last"] == r["first"]:
            tokens += r["tokens"] if t_a <= r["first"] <= t_b else 0
            continue
        lo, hi = max(t_a, r["first"]), min(t_b, r["last"])
        if hi >= lo:  # tokens go out evenly between the first and the last
            tokens += r["tokens"] * (hi - lo) / (r["last"] - r["first"])
    cpu = sampler.cpu_at(t_b) - sampler.cpu_at(t_a)
    window = (t_b - t_a) / 1e9
    res.update(cpu_per_request_us=cpu / done * 1e6 if done else None,
               cpu_per_token_us=cpu / tokens * 1e6 if tokens else None,
               steady_window_s=window, steady_rps=done / window if window else None,
               cpu_total_s=sampler.samples[-1][1] if sampler.samples else None,
               ceiling_rps=truth["request_throughput"])
    t = tool_ttft(tool, out)
    res["ttft_ms"] = t
    if t["p50"] is not None:
        res["ttft_err_p50_ms"] = t["p50"] - truth["ttft_ms"]["p50"]
        res["ttft_err_p99_ms"] = t["p99"] - truth["ttft_ms"]["p99"]
    if tool == "benchstack":  # per request, matched by the X-Request-Id the server logged
        by_id = {r["rid"]: r for r in reqs}
        errs = sorted(rec["ttft_ms"] - (by_id[rec["rid"]]["first"] - by_id[rec["rid"]]["recv"]) / 1e6
                      for rec in json.loads((out / "result.json").read_text())["records"]
                      if rec["ok"] and rec["rid"] in by_id and rec["ttft_ms"] is not None)
        res["per_request_err_p50_ms"] = percentile(errs, 50)
        res["per_request_err_p99_ms"] = percentile(errs, 99)
    return res


def two_clients(server, work: Path, requests: int) -> float:
    """Two benchstack clients at once against the zero-latency server: their total rate."""
    server.reset()
    procs = []
    for i in range(2):
        out = work / f"pair-{i}"
        out.mkdir(parents=True, exist_ok=True)
        procs.append(subprocess.Popen(cmd_benchstack(server.url, 32, requests, 16, 8, out / "result.json"),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
    try:
        for p in procs:
            p.wait(300)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return server.stats()["request_throughput"]


# --------------------------------------------------------------------------- main


def fmt(x: Any, unit: str = "", digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}{unit}"


def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if not a or not b else f"{a / b:.2f}"


def main() -> int:
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so every client's process group is ended
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tools", default="benchstack,genai-perf,aiperf")
    ap.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    ap.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--phases", default="c16,c256,ceiling", help="which measurements to run")
    a = ap.parse_args()
    if a.worker:
        url, c, n, isl, osl, out = a.worker
        worker(url, int(c), int(n), int(isl), int(osl), out)
        return 0
    tools = []
    for t in (t for t in a.tools.split(",") if t):
        if t != "benchstack" and not (BIN / t).exists():
            print(f"note: {t} not found next to {sys.executable}: skipped")
        else:
            tools.append(t)
    scale = 0.25 if a.quick else 1.0
    work = Path(tempfile.mkdtemp(prefix="bench-client-"))
    from benchstack.tinymodel import make_tiny_model

    tokenizer = make_tiny_model(work / "model", name=MODEL)
    print(f"benchstack client benchmark: {', '.join(tools)}; work dir {work}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs\n")
    results: dict[str, dict[str, Any]] = {t: {} for t in tools}
    try:
        phases = set(a.phases.split(","))
        with start_subprocess(ttft_ms=20, itl_ms=5) as srv:
            for t in (tools if "c16" in phases else []):
                r = measure(t, srv, work, tokenizer, 16, int(800 * scale), 128, 64)
                results[t]["c16"] = r
                print(f"[c16]  {t:<11} TTFT err p50 {fmt(r.get('ttft_err_p50_ms'), ' ms', 3)}  "
                      f"p99 {fmt(r.get('ttft_err_p99_ms'), ' ms')}  CPU/request "
                      f"{fmt(r.get('cpu_per_request_us'), ' us', 0)}  CPU/token "
                      f"{fmt(r.get('cpu_per_token_us'), ' us', 1)}  {r.get('error', '')}", flush=True)
        with start_subprocess(ttft_ms=20, itl_ms=100) as srv:
            for t in (tools if "c256" in phases else []):
                r = measure(t, srv, work, tokenizer, 256, int(2048 * scale), 128, 8)
                results[t]["c256"] = r
                print(f"[c256] {t:<11} TTFT err p50 {fmt(r.get('ttft_err_p50_ms'), ' ms', 3)}  "
                      f"p99 {fmt(r.get('ttft_err_p99_ms'), ' ms')}  {r.get('error', '')}", flush=True)
        with start_subprocess(zero_latency=True, ttft_ms=0, itl_ms=0) as srv:
            n = {"benchstack": 20000, "genai-perf": 12000, "aiperf": 3000}
            for t in (tools if "ceiling" in phases else []):
                r = measure(t, srv, work, tokenizer, 32, int(n.get(t, 3000) * scale), 16, 8)
                results[t]["ceiling"] = r
                print(f"[max]  {t:<11} {fmt(r.get('ceiling_rps'), ' req/s', 0)}  (steady "
                      f"{fmt(r.get('steady_rps'), ' req/s', 0)})  {r.get('error', '')}", flush=True)
            pair = two_clients(srv, work, int(20000 * scale)) \
                if "benchstack" in tools and "ceiling" in phases else None
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)

    g = lambda t, k, f: results.get(t, {}).get(k, {}).get(f)  # noqa: E731
    print("\n=== benchstack's client ===")
    print(f"TTFT error at concurrency 16:  p50 {fmt(g('benchstack', 'c16', 'ttft_err_p50_ms'), ' ms', 3)} "
          f"(per request {fmt(g('benchstack', 'c16', 'per_request_err_p50_ms'), ' ms', 3)}), "
          f"p99 {fmt(g('benchstack', 'c16', 'ttft_err_p99_ms'), ' ms')}   target p50 <= 1 ms")
    print(f"TTFT error at concurrency 256: p50 {fmt(g('benchstack', 'c256', 'ttft_err_p50_ms'), ' ms', 3)} "
          f"(per request {fmt(g('benchstack', 'c256', 'per_request_err_p50_ms'), ' ms', 3)}), "
          f"p99 {fmt(g('benchstack', 'c256', 'ttft_err_p99_ms'), ' ms')}")
    print(f"CPU per request {fmt(g('benchstack', 'c16', 'cpu_per_request_us'), ' us', 0)}, per streamed "
          f"token {fmt(g('benchstack', 'c16', 'cpu_per_token_us'), ' us', 1)} (concurrency 16, steady state)")
    mine = g("benchstack", "ceiling", "ceiling_rps")
    print(f"request-rate ceiling {fmt(mine, ' req/s', 0)}; two clients together "
          f"{fmt(pair, ' req/s', 0)} ({ratio(pair, mine)}x one: the server is "
          f"{'not ' if pair and mine and pair > mine * 1.05 else 'maybe '}the bottleneck; "
          f"{ratio(pair, g('genai-perf', 'ceiling', 'ceiling_rps'))}x genai-perf, which uses "
          "threads on both cores)")
    for peer, cpu_target, ceil_target in (("genai-perf", 2 / 3, 1.5), ("aiperf", 1 / 5, None)):
        if peer not in results:
            continue
        cpu_r = ratio(g("benchstack", "c16", "cpu_per_token_us"), g(peer, "c16", "cpu_per_token_us"))
        print(f"vs {peer:<10} CPU/token ratio {cpu_r} (target <= {cpu_target:.2f}); CPU/request ratio "
              f"{ratio(g('benchstack', 'c16', 'cpu_per_request_us'), g(peer, 'c16', 'cpu_per_request_us'))}; "
              f"ceiling ratio {ratio(mine, g(peer, 'ceiling', 'ceiling_rps'))}"
              + (f" (target >= {ceil_target})" if ceil_target else "")
              + f"; its TTFT error p50 c16 {fmt(g(peer, 'c16', 'ttft_err_p50_ms'), ' ms', 3)}, "
              f"c256 {fmt(g(peer, 'c256', 'ttft_err_p50_ms'), ' ms', 3)}")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
