"""Tests of the trtllm-serve stand-in: schema, start-up checks, timing and the disaggregated flow.

Servers run as ``python -m benchstack_trtllm_serve.standin ...`` subprocesses on free ports of
127.0.0.1, each in its own process group, and are terminated (TERM, then KILL) afterwards.
Readiness is polled; nothing waits a fixed time.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from benchstack_trtllm_serve.standin import schema  # noqa: E402

MODULE = "benchstack_trtllm_serve.standin"


# --- helpers -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMPI_", "PMI_", "PMIX_", "SLURM_", "TRTLLM_STANDIN_"))
           and k not in ("CUDA_VISIBLE_DEVICES", "TLLM_SPAWN_PROXY_PROCESS", "tllm_mpi_size")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env["TRTLLM_STANDIN_LOAD_SECONDS"] = "0.2"
    env["TRTLLM_STANDIN_ACCESS_LOG"] = "0"
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 20, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", MODULE, *args], env=base_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def post(url: str, body: dict, timeout: float = 20) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


def wait_ready(url: str, proc: subprocess.Popen, log: Path, deadline_s: float = 15) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if get(url + "/health", timeout=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"server at {url} not ready:\n{log.read_text()}")


@contextmanager
def server(tmp_path: Path, name: str, args: list, port: int, ready: bool = True, **env: str):
    """Start a stand-in subprocess in its own process group; yield (base url, process, log)."""
    log = tmp_path / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", MODULE, *args], env=base_env(**env),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        if ready:
            wait_ready(url, proc, log)
        yield url, proc, log
    finally:
        stop(proc)


def write_yaml(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    model = tmp_path / "tiny-llama"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "max_position_embeddings": 4096}))
    return model


def stream_chat(url: str, body: dict) -> tuple[float, list[float], list[dict]]:
    """POST a streaming chat request; return (TTFT s, content-chunk times, parsed chunks)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    start = time.monotonic()
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200, response.read()
    times, chunks, ttft = [], [], None
    while True:
        line = response.readline()
        if not line:
            break
        line = line.decode().strip()
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            chunks.append("[DONE]")
            break
        chunk = json.loads(line[len("data: "):])
        chunks.append(chunk)
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content") is not None:
            now = time.monotonic()
            ttft = now - start if ttft is None else ttft
            times.append(now)
    conn.close()
    return ttft, times, chunks


# --- schema --------------------------------------------------------------------------------------
def nvidia_disagg_config() -> dict:
    """Shaped like NVIDIA's gen_yaml.py output for a 1 ctx + 1 gen deployment."""
    return {
        "hostname": "localhost", "port": 8336, "backend": "pytorch",
        "context_servers": {
            "num_instances": 1, "urls": ["node1:8001"], "tensor_parallel_size": 4,
            "pipeline_parallel_size": 1, "max_batch_size": 128, "max_num_tokens": 4096,
            "enable_attention_dp": False, "disable_overlap_scheduler": True,
            "print_iter_log": True,
            "kv_cache_config": {"free_gpu_memory_fraction": 0.85, "enable_block_reuse": False,
                                "dtype": "fp8"},
            "cache_transceiver_config": {"backend": "UCX", "max_tokens_in_buffer": 8448},
        },
        "generation_servers": {
            "num_instances": 1, "urls": ["node2:8002"], "tensor_parallel_size": 4,
            "moe_expert_parallel_size": 4, "max_batch_size": 512, "max_num_tokens": 512,
            "cuda_graph_config": {"enable_padding": True, "batch_sizes": [1, 2, 4, 8, 512]},
            "kv_cache_config": {"free_gpu_memory_fraction": 0.95},
            "cache_transceiver_config": {"backend": "NIXL"},
            "router": {"type": "load_balancing", "use_tokens": False},
            "speculative_config": {"decoding_type": "MTP", "num_nextn_predict_layers": 3},
        },
    }


def test_realistic_disagg_config_is_valid():
    assert schema.validate_disagg_config(nvidia_disagg_config()) == []


def test_unknown_keys_are_reported_with_their_path():
    config = nvidia_disagg_config()
    config["context_servers"]["kv_cache_config"]["free_gpu_memory_fractio"] = 0.5
    config["generation_servers"]["use_cuda_graph"] = True
    errors = schema.validate_disagg_config(config)
    assert any(e.startswith("context_servers.kv_cache_config.free_gpu_memory_fractio: unknown")
               and "did you mean 'free_gpu_memory_fraction'" in e for e in errors), errors
    assert any(e.startswith("generation_servers.use_cuda_graph: unknown") for e in errors)
    options = {"max_batch_size": 8, "cache_transceiver_config": {"backend": "TCP"},
               "speculative_config": {"decoding_type": "MTP", "bogus": 1}}
    errors = schema.validate_llm_api_options(options, "worker")
    assert "worker.cache_transceiver_config.backend: 'TCP' is not one of " \
           "DEFAULT, UCX, NIXL, MOONCAKE, MPI" in errors
    assert any(e.startswith("worker.speculative_config.bogus: unknown") for e in errors)
    with pytest.raises(schema.ConfigError):
        schema.check_llm_api_options({"pytorch_backend_config": {}})


def test_backend_specific_keys():
    assert schema.validate_llm_api_options({"build_config": {"max_batch_size": 8}},
                                           backend="tensorrt") == []
    assert schema.validate_llm_api_options({"enable_iter_perf_stats": True},
                                           backend="tensorrt")[0].startswith(
        "enable_iter_perf_stats: unknown")
    errors = schema.validate_llm_api_options({"speculative_config": {
        "decoding_type": "MTP", "num_nextn_predict_layers": 1}}, backend="trt")
    assert errors == ["speculative_config: decoding_type MTP does not support backend tensorrt"]
    assert "kv_cache_config" in schema.llm_api_option_keys()
    assert "free_gpu_memory_fraction" in schema.sub_option_keys("kv_cache_config")


def test_urls_must_match_num_instances_and_router_type_is_checked():
    config = nvidia_disagg_config()
    config["context_servers"]["num_instances"] = 2
    config["generation_servers"]["router"] = {"type": "random"}
    config["generation_servers"]["urls"] = ["http://node2:8002"]
    errors = schema.validate_disagg_config(config)
    assert "context_servers: Number of hostnames (1) should be equal to the number of " \
           "instances (2)" in errors
    assert any(e.startswith("generation_servers.router.type: Unsupported router type: random")
               for e in errors)
    assert any(e.startswith("generation_servers.urls[0]: 'http://node2:8002'") for e in errors)


def test_top_level_engine_keys_are_inherited_and_must_agree():
    config = nvidia_disagg_config()
    config["max_batch_size"] = 64  # top level, but both sections set another value
    config["free_gpu_memory_fraction"] = 0.5  # a get_llm_args() parameter: valid here
    del config["generation_servers"]["urls"]
    errors = schema.validate_disagg_config(config)
    assert any("Parameter max_batch_size is specified both in the top-level and in the "
               "context_servers section" in e for e in errors)
    assert any(e.startswith("generation_servers.urls: required") for e in errors)
    assert not any("free_gpu_memory_fraction" in e for e in errors)


# --- command line and start-up checks ------------------------------------------------------------
def test_unknown_cli_flag_exits_2_like_click(model_dir):
    result = run_cli(str(model_dir), "--max_batch_sz", "8")
    assert result.returncode == 2
    assert "No such option" in result.stderr


def run_in_process(monkeypatch, capsys, *args: str, **env: str) -> tuple[int, str]:
    """Run the CLI in this process (for paths that fail before serving); (exit code, stderr)."""
    from benchstack_trtllm_serve.standin import main

    for key in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS",
                "CUDA_VISIBLE_DEVICES", "TLLM_SPAWN_PROXY_PROCESS", "TRTLLM_STANDIN_NUM_GPUS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = main(list(args))
    return code, capsys.readouterr().err


def test_bad_inputs_fail_like_trtllm_serve(model_dir, tmp_path, monkeypatch, capsys):
    bad = write_yaml(tmp_path / "bad.yaml", {"kv_cache_config": {"free_gpu_memory_fractio": 0.5}})
    code, err = run_in_process(monkeypatch, capsys, str(model_dir), "--config", str(bad))
    assert code == 1
    assert "validation error for TorchLlmArgs" in err
    assert "kv_cache_config.free_gpu_memory_fractio" in err
    code, err = run_in_process(monkeypatch, capsys, str(tmp_path / "missing-model"))
    assert code == 1 and "not a local folder" in err
    code, err = run_in_process(monkeypatch, capsys, str(model_dir), "--backend", "trt")
    assert code == 1 and "TensorRT engine directory" in err
    code, err = run_in_process(monkeypatch, capsys, str(model_dir), "--tp_size", "4",
                               "--ep_size", "3")
    assert code == 1 and "tp_size must equal to moe_tp_size * moe_ep_size" in err


def test_mpi_world_size_must_match_parallelism(model_dir, monkeypatch, capsys):
    code, err = run_in_process(monkeypatch, capsys, str(model_dir), "--tp_size", "2",
                               OMPI_COMM_WORLD_SIZE="4")
    assert code == 1
    assert "n_workers must be equal to the number of processes in MPI, got 2 vs 4" in err
    code, err = run_in_process(monkeypatch, capsys, str(model_dir), "--tp_size", "4",
                               CUDA_VISIBLE_DEVICES="0,1")
    assert code == 1
    assert "Only 2 GPUs are available, but 4 are required." in err
    code, err = run_in_process(monkeypatch, capsys, str(model_dir), CUDA_VISIBLE_DEVICES="")
    assert code == 1 and "No GPU devices found on the node" in err


def test_non_leader_rank_waits_and_exits_cleanly_on_sigterm(model_dir, tmp_path):
    port = free_port()
    args = [str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--tp_size", "2"]
    with server(tmp_path, "rank1", args, port, ready=False, SLURM_NTASKS="2",
                SLURM_PROCID="1") as (url, proc, log):
        deadline = time.monotonic() + 10
        while "rank 1 is a worker rank" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        with pytest.raises(OSError):
            get(url + "/health", timeout=1)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=5) == 0


# --- serving -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    """One aggregated worker shared by the serving tests: max_batch_size 2, slow enough timing."""
    tmp_path = tmp_path_factory.mktemp("worker")
    model = tmp_path / "tiny-llama"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    port = free_port()
    args = [str(model), "--host", "127.0.0.1", "--port", str(port), "--max_batch_size", "2"]
    timing = {"TRTLLM_STANDIN_TTFT_MS": "60", "TRTLLM_STANDIN_ITL_MS": "15",
              "TRTLLM_STANDIN_PREFILL_MS_PER_TOKEN": "2"}
    with server(tmp_path, "worker", args, port, **timing) as (url, _, log):
        yield url, model.name, log


def test_streaming_chat_timing_and_token_count(worker):
    url, model_name, log = worker
    assert "Uvicorn running on http://127.0.0.1:" in log.read_text()
    status, models = get(url + "/v1/models")
    assert status == 200 and json.loads(models)["data"][0]["id"] == model_name
    body = {"model": model_name, "max_tokens": 8, "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Tell me a story " * 5}]}
    ttft, times, chunks = stream_chat(url, body)
    assert chunks[-1] == "[DONE]"
    usage = chunks[-2]["usage"]
    assert usage["completion_tokens"] == 8 == len(times)
    expected_ttft = 0.060 + 0.002 * usage["prompt_tokens"]  # 35 prompt tokens: 130 ms
    assert expected_ttft - 0.005 <= ttft <= expected_ttft + 0.060, (ttft, expected_ttft)
    itl = (times[-1] - times[0]) / (len(times) - 1)
    assert 0.012 <= itl <= 0.030, itl
    status, err = post(url + "/v1/chat/completions", body | {"unknown_field": 1})
    assert status == 400 and "extra_forbidden" in err["error"]


def test_max_batch_size_caps_concurrency(worker):
    import concurrent.futures

    url = worker[0]
    before = json.loads(get(url + "/standin/stats")[1])["completed"]
    body = {"model": "m", "prompt": "one two three", "max_tokens": 10}
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: post(url + "/v1/completions", body), range(6)))
    assert all(status == 200 and r["usage"]["completion_tokens"] == 10 for status, r in results)
    stats = json.loads(get(url + "/standin/stats")[1])
    assert stats["max_active_seen"] == 2 and stats["completed"] == before + 6
    status, err = post(url + "/v1/completions", {"model": "m", "prompt": "x " * 9000})
    assert status == 400 and "should not exceed max_num_tokens (8192)" in err["message"]


def test_disaggregated_flow(model_dir, tmp_path):
    worker_yaml = write_yaml(tmp_path / "worker.yaml", {
        "cache_transceiver_config": {"backend": "UCX"}, "disable_overlap_scheduler": True})
    ctx_port, gen_port, disagg_port = free_port(), free_port(), free_port()
    disagg_yaml = write_yaml(tmp_path / "disagg.yaml", {
        "hostname": "127.0.0.1", "port": disagg_port, "backend": "pytorch",
        "context_servers": {"num_instances": 1, "urls": [f"127.0.0.1:{ctx_port}"],
                            "cache_transceiver_config": {"backend": "UCX"}},
        "generation_servers": {"num_instances": 1, "urls": [f"127.0.0.1:{gen_port}"],
                               "cache_transceiver_config": {"backend": "UCX"}},
    })

    def worker_args(port: int, role: str) -> list:
        return [str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--server_role", role,
                "--extra_llm_api_options", str(worker_yaml)]

    # the disaggregated server starts first and must wait for both workers
    with server(tmp_path, "disagg", ["disaggregated", "-c", str(disagg_yaml), "-t", "30"],
                disagg_port, ready=False, TRTLLM_STANDIN_DISAGG_POLL_SECONDS="0.1") as (
            url, dproc, dlog), \
            server(tmp_path, "ctx", worker_args(ctx_port, "CONTEXT"), ctx_port) as (ctx, _, _l1), \
            server(tmp_path, "gen", worker_args(gen_port, "GENERATION"), gen_port) as (gen, _, _l2):
        wait_ready(url, dproc, dlog)
        assert "Context and generation servers are ready" in dlog.read_text()
        assert json.loads(get(url + "/v1/models")[1])["data"][0]["id"] == model_dir.name

        ttft, times, chunks = stream_chat(url, {
            "model": "m", "max_tokens": 6, "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "disaggregate me"}]})
        assert chunks[-1] == "[DONE]" and chunks[-2]["usage"]["completion_tokens"] == 6
        assert len(times) == 6
        status, result = post(url + "/v1/completions",
                              {"model": "m", "prompt": "hello disaggregated world", "max_tokens": 5})
        assert status == 200, result
        assert result["usage"]["completion_tokens"] == 5
        assert result["usage"]["prompt_tokens"] == 3
        assert result["choices"][0]["finish_reason"] == "length"

        ctx_stats = json.loads(get(ctx + "/standin/stats")[1])
        gen_stats = json.loads(get(gen + "/standin/stats")[1])
        assert ctx_stats["requests"] == {"aggregated": 0, "context_only": 2, "generation_only": 0}
        assert gen_stats["requests"] == {"aggregated": 0, "context_only": 0, "generation_only": 2}
        assert ctx_stats["server_role"] == "CONTEXT"


def test_disaggregated_server_gives_up_when_workers_never_start(tmp_path, monkeypatch, capsys):
    config = write_yaml(tmp_path / "disagg.yaml", {
        "hostname": "127.0.0.1", "port": free_port(),
        "context_servers": {"num_instances": 1, "urls": [f"127.0.0.1:{free_port()}"]},
        "generation_servers": {"num_instances": 1, "urls": [f"127.0.0.1:{free_port()}"]}})
    result = run_cli("disaggregated", "-c", str(config), "-t", "1",
                     TRTLLM_STANDIN_DISAGG_POLL_SECONDS="0.1")
    assert result.returncode == 3
    assert "Application startup failed" in result.stdout
    bad = write_yaml(tmp_path / "bad.yaml", {
        "context_servers": {"num_instances": 2, "urls": ["127.0.0.1:1"]},
        "generation_servers": {"urls": ["127.0.0.1:2"]}})
    code, err = run_in_process(monkeypatch, capsys, "disaggregated", "-c", str(bad))
    assert code == 1
    assert "Number of hostnames (1) should be equal to the number of instances (2)" in err
    code, err = run_in_process(monkeypatch, capsys, "disaggregated", "-c", str(bad), "--bogus")
    assert code == 2 and "No such option" in err
