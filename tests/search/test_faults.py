"""Injected faults on a real local Ray pool with the small model: one trial's trouble stays one trial's.

The pool (one transformers worker, one rubric judge) is built by the search's own
`start_pool`; trials go through `evaluate_plan`, the function every strategy calls.
Faults: a plan whose merge overflows to inf, a plan whose model produces no text, and
the worker process SIGKILLed in the middle of a trial — first while Ray may restart it
(the trial is retried on the restarted worker, which has a new pid), then once more
after its restarts are used up (the trial is failed with the reason, nothing hangs).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest
import ray

from judges import load_eval_set
from search.config import parse_search_config
from search import evaluate_plan
from search.pool import close_pool, start_pool, start_ray, worker_info

pytestmark = pytest.mark.slow


def _linear(weights: dict[str, object], **parameters: object) -> dict:
    return {"merge_method": "linear", "base_model": "base", "parameters": parameters,
            "models": [{"model": k, "parameters": {"weight": w}} for k, w in weights.items()]}


@pytest.fixture(scope="module")
def pool(smollm_family, tmp_path_factory):
    exp = tmp_path_factory.mktemp("faults")
    config = parse_search_config({
        "experiment": {"name": "faults", "dir": str(exp)},
        "models": {"base": str(smollm_family["base"]), "sources": {"a": str(smollm_family["a"]),
                                                                   "b": str(smollm_family["b"])}},
        "search": {"trial_retries": 1, "objectives": ["safety", "conciseness"]},
        "workers": {"count": 1, "cpus": 2, "max_restarts": 1},
        "serving": {"backend": "transformers", "generation": {"max_tokens": 8, "batch_size": 8}},
        "eval": {"set": "smoke", "subset": 4},
    })
    eval_set = load_eval_set("smoke").subset(4, seed=0)
    models = {k: str(v) for k, v in smollm_family.items()}
    start_ray(config)
    ctx = start_pool(config, models, eval_set, exp, ["a", "b"])
    yield ctx
    close_pool(ctx)
    ray.shutdown()


def _running_trial_pid(timeout: float = 120) -> int:
    """The worker process while it executes a trial: Ray titles it `ray::MergeWorker.run`.
    Only this process's own Ray is searched (its raylet is our child, the workers are the
    raylet's), never a search someone else runs on the machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in psutil.Process().children(recursive=True):
            try:
                cmd = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            if cmd.startswith("ray::MergeWorker.run"):
                return proc.pid
        time.sleep(0.05)
    raise AssertionError("no MergeWorker.run in flight")


def _evaluate_while_killing(ctx, plan) -> tuple[dict, int]:
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(evaluate_plan(ctx, plan)))
    thread.start()
    pid = _running_trial_pid()
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive(), "the trial hung after its worker was killed"
    return out, pid


def test_overflowing_plan_fails_with_the_tensor_and_the_worker_stays_usable(pool):
    bad = evaluate_plan(pool, _linear({"a": 1e38, "b": 1e38}, normalize=False))
    assert bad["status"] == "failed"
    assert "NaN or inf" in bad["error"] and "model." in bad["error"], bad["error"]
    assert bad["workers_lost"] == 0
    good = evaluate_plan(pool, _linear({"a": 0.5, "b": 0.5}))
    assert good["status"] == "ok", good["error"]
    assert 0.0 <= good["safety"] <= 1.0 and good["worker"] == pool.workers[0]


def test_model_that_produces_no_text_is_a_failed_trial(pool):
    # Zero embeddings (tied to the LM head) make every logit 0: greedy decoding emits
    # token 0, <|endoftext|>, which decodes to nothing.
    silent = _linear({"a": [{"filter": "embed", "value": 0.0}, {"value": 1.0}], "b": 0.0}, normalize=False)
    row = evaluate_plan(pool, silent)
    assert row["status"] == "failed"
    assert row["error"] == "the merged model produced no text for any of the 4 prompts"
    assert row["empty_answers"] == 4
    assert all(row[o] != row[o] for o in pool.objectives)  # NaN: no made-up score


def test_killed_worker_is_restarted_and_the_trial_retried_then_failed_once_restarts_run_out(pool):
    plan = _linear({"a": 0.3, "b": 0.7})
    before = worker_info(pool)[0]["pid"]
    row, killed = _evaluate_while_killing(pool, plan)
    assert killed == before
    assert row["status"] == "ok", row["error"]
    assert row["workers_lost"] == 1
    after = worker_info(pool)[0]
    assert after["pid"] != before and "error" not in after  # the pool replaced the dead process

    # max_restarts=1 is now used up: the next kill leaves the worker dead, and the
    # trial (retried once, as configured) is recorded failed instead of hanging.
    row, _ = _evaluate_while_killing(pool, plan)
    assert row["status"] == "failed" and row["workers_lost"] == 2
    assert row["error"].count("lost") == 2 and "search.trial_retries=1" in row["error"], row["error"]
    assert "error" in worker_info(pool)[0]


def test_failed_reload_marks_the_engine_broken_and_the_next_trial_answers_from_whole_weights(smollm_family):
    # The worker's per-trial step (`answer_on`, what MergeWorker.run calls) on a transformers
    # engine whose weight copy is made to fail after 20 tensors: a half-loaded model.
    from search.workers import answer_on
    from serving import EngineSettings, ModelSet, create_backend

    backend = create_backend("transformers", ModelSet(dict(smollm_family), base="base"), EngineSettings(threads=2))
    prompts = [[{"role": "user", "content": "What is the capital of France?"}],
               [{"role": "user", "content": "Name three primary colours."}]]
    generation = {"max_tokens": 12, "batch_size": 2}
    plan = _linear({"a": 0.3, "b": 0.7})
    try:
        expected = answer_on(backend, plan, prompts, generation)["answers"]
        whole_load = backend._load

        def load_then_fail(tensors):
            def first_twenty():
                for i, item in enumerate(tensors):
                    if i == 20:
                        raise RuntimeError("injected: device lost during the weight copy")
                    yield item
            return whole_load(first_twenty())

        backend._load = load_then_fail
        failed = answer_on(backend, _linear({"a": 1.0, "b": 0.0}), prompts, generation)
        backend._load = whole_load
        assert "answers" not in failed and backend.broken
        assert "injected: device lost" in failed["error"] and "engine left half-loaded" in failed["error"]
        assert "'base' before its next trial" in failed["error"], failed["error"]

        again = answer_on(backend, plan, prompts, generation)
        assert "error" not in again, again.get("error")
        assert again["answers"] == expected and not backend.broken
    finally:
        backend.close()


def _actor_pid(title: str, timeout: float = 120) -> int:
    """This process's own Ray actor process titled `title` (e.g. `ray::JudgeActor`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in psutil.Process().children(recursive=True):
            try:
                if proc.cmdline()[:1] == [title]:
                    return proc.pid
            except psutil.Error:
                continue
        time.sleep(0.05)
    raise AssertionError(f"no {title} process")


def test_a_restarting_judge_is_waited_for_and_a_dead_one_fails_the_trial_with_the_reason(pool):
    # Last in the module: it uses up the judge's one restart.
    from search.judge_calls import JudgingUnavailableError
    from search.trial import judge_answers

    answers = ["Paris is the capital of France."] * len(pool.items)
    os.kill(_actor_pid("ray::JudgeActor"), signal.SIGKILL)
    metrics, _, _ = judge_answers(pool, answers, "after-a-judge-crash")  # asked at once: Ray is restarting it
    assert 0.0 <= metrics["safety"] <= 1.0

    os.kill(_actor_pid("ray::JudgeActor"), signal.SIGKILL)  # its restarts are used up now
    with pytest.raises(JudgingUnavailableError, match=r"judge .*-judge-0 .*search\.trial_retries=1"):
        judge_answers(pool, answers, "after-the-last-crash")
