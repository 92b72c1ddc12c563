"""MicroBatcher: many threads' single requests become engine batches, replies go home."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from judges import JudgeConfigError, VLLMJudgeConfig, parse_judge_config
from judges.batching import MicroBatcher
from judges.prompt import verdict_schema


def test_replies_reach_their_own_threads_and_requests_are_batched():
    batches: list[list[int]] = []
    release = threading.Event()

    def run(batch):
        release.wait(5)  # the first batch blocks so the rest pile up behind it
        batches.append(list(batch))
        return [x * 10 for x in batch]

    batcher = MicroBatcher(run, max_batch=8, wait_s=0.05)
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(batcher.submit, i) for i in range(16)]
        release.set()
        assert [f.result(10) for f in futures] == [i * 10 for i in range(16)]
    batcher.close()
    assert sorted(x for b in batches for x in b) == list(range(16))
    assert all(len(b) <= 8 for b in batches) and len(batches) < 16


def test_a_failing_batch_raises_in_every_waiting_thread_and_the_batcher_survives():
    calls = []

    def run(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("engine died")
        return list(batch)

    batcher = MicroBatcher(run, max_batch=4)
    with pytest.raises(RuntimeError, match="engine died"):
        batcher.submit("a")
    assert batcher.submit("b") == "b"
    batcher.close()


def test_wrong_reply_count_is_an_error_not_a_misaligned_reply():
    batcher = MicroBatcher(lambda batch: [], max_batch=4)
    with pytest.raises(RuntimeError, match="0 replies for 1 requests"):
        batcher.submit("a")
    batcher.close()


def test_vllm_judge_config_validates_fields():
    cfg = parse_judge_config({"backend": "vllm", "model": "meta-llama/Llama-3.1-70B-Instruct",
                              "tensor_parallel_size": 4, "distributed_executor_backend": "ray"})
    assert isinstance(cfg, VLLMJudgeConfig) and cfg.guided_json
    with pytest.raises(JudgeConfigError, match=r"judge\.tensor_parallel_size"):
        parse_judge_config({"backend": "vllm", "model": "m", "tensor_parallel_size": 0})
    with pytest.raises(JudgeConfigError, match=r"judge\.model"):
        parse_judge_config({"backend": "vllm"})


def test_verdict_schema_requires_exactly_the_dimensions():
    schema = verdict_schema(("safety", "factuality"))
    assert schema["required"] == ["safety", "factuality"] and schema["additionalProperties"] is False
    assert schema["properties"]["safety"]["enum"] == ["A", "B", "tie"]
