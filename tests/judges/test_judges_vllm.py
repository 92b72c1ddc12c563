"""LLM judges backed by real vLLM engines on the small model (CPU build).

* `vllm` backend: the judge model runs in this process; with guided JSON every verdict
  parses, so WTR is computed over all items.
* `openai` backend against vLLM's own OpenAI-compatible API server on loopback (started
  and stopped by the `vllm_api_server` fixture in conftest.py): verdicts come back through
  the real HTTP path; without a schema a 135M judge often writes unreadable verdicts, which
  must be counted as unparseable, never scored; with `json_schema` they all parse.

A 135M model is a poor judge: these tests check the machinery (requests, parsing,
counting, metrics), not verdict quality.
"""

from __future__ import annotations

import pytest

from judges import (JudgeItem, OpenAIJudgeConfig, VerdictStatus, VLLMJudgeConfig, build_judge, load_eval_set,
                    win_tie_rates)
from runtime import vllm_available

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
