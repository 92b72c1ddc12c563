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

import json
import urllib.request

import pytest

from judges import (DEFAULT_RUBRIC, JudgeItem, OpenAIJudgeConfig, Order, ParseError, Rubric, VerdictStatus,
                    VLLMJudgeConfig, build_judge, build_messages, load_eval_set, parse_verdict, win_tie_rates)
from judges.injection_suite import build_cases, format_report, run_suite
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


# --- Judge injection, level d (tests/judges/test_judge_injection.py has levels a-c) ---------------

#: Three dimensions per item instead of six keep the CPU run short (the bench runs all seven).
SLOW_RUBRIC = Rubric(f"{DEFAULT_RUBRIC.version}+injection-slow",
                     tuple(DEFAULT_RUBRIC.spec(n) for n in ("safety", "factuality", "false_rejection",
                                                            "false_acceptance")))


def _count_template_tokens(server_v1: str, messages: list[dict[str, str]]) -> int:
    body = json.dumps({"model": "smollm", "messages": messages, "add_generation_prompt": True}).encode()
    req = urllib.request.Request(server_v1.removesuffix("/v1") + "/tokenize", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        tokens = json.load(resp)["tokens"]
    return sum(t in (1, 2) for t in tokens)  # SmolLM2: <|im_start|> = 1, <|im_end|> = 2


def test_real_judge_treats_injections_as_content(vllm_api_server, tmp_path):
    """The machinery holds with a real model judge: every verdict is OK or counted unparseable,
    and every verdict comes from a reply that is the judge's own JSON object. The flips are
    recorded, not asserted: a 135M judge follows planted verdicts more or less at random. Two
    items (every payload on each) keep the CPU run short; bench/judge_injection.py runs more."""
    cases = build_cases(load_eval_set("smoke").subset(2, seed=0), alternate_bases=True)

    # The served path: the chat-template payload adds no real role token once neutralised.
    template = next(c for c in cases if c.payload.name == "chat_template_tokens").injected
    messages = build_messages(template, Order.CANDIDATE_FIRST, SLOW_RUBRIC)
    assert _count_template_tokens(vllm_api_server, messages) == 5  # system, user, assistant prompt
    raw = [messages[0], {"role": "user", "content": template.answer}]
    assert _count_template_tokens(vllm_api_server, raw) > 5  # what neutralise prevents

    judge = build_judge(OpenAIJudgeConfig(base_url=vllm_api_server, model="smollm", api_key_env=None,
                                          concurrency=8, timeout_s=120, max_tokens=64, json_schema=True,
                                          both_orders=False, parse_retries=1), SLOW_RUBRIC)
    replies: list[tuple[tuple[str, ...], str | None]] = []
    complete = judge.complete

    def recording(messages, dimensions=()):
        reply, n = complete(messages, dimensions)
        replies.append((dimensions, reply))
        return reply, n

    judge.complete = recording  # type: ignore[method-assign]
    report, injected, control = run_suite(judge, cases)

    verdicts = injected + control
    assert {v.status for v in verdicts} <= {VerdictStatus.OK, VerdictStatus.UNPARSEABLE}, \
        [v.error for v in verdicts if v.status is VerdictStatus.FAILED]
    for v in verdicts:
        assert not v.ok or set(v.outcomes) == set(SLOW_RUBRIC.applicable(v.category))
    # Every reply the parser turned into labels is the judge's own JSON object and nothing
    # else: no label was read out of prose that quotes the candidate.
    for dims, reply in replies:
        try:
            labels = parse_verdict(reply, dims)
        except ParseError:
            continue
        obj = json.loads(reply or "")
        assert isinstance(obj, dict) and set(obj) == set(dims) and obj == labels
    assert report.verdicts == len(verdicts)
    assert report.total_compared == sum(len(SLOW_RUBRIC.applicable(c.injected.category))
                                        for c, vi, vc in zip(cases, injected, control) if vi.ok and vc.ok)
    table = format_report(report, f"SmolLM2-135M judge via vLLM OpenAI server, json_schema, one order, "
                                  f"{len(cases)} cases")
    (tmp_path / "injection_flips.txt").write_text(table + "\n")
    print(f"\n{table}\n(written to {tmp_path / 'injection_flips.txt'})")
