"""Ray actors: long-lived merge workers (engine + resident sources) and judge actors.

A MergeWorker owns one device (a GPU, a fraction of one, or CPUs) for the whole search:
it loads base and sources once, and per trial merges a plan, swaps the weights into its
engine and answers the eval prompts. Trials lease workers through a Ray queue of worker
names, so concurrency equals the number of workers. Expected failures (a bad plan, NaN
weights, an engine error) come back as data with the reason; only a dead actor raises.
An engine left half-loaded by a failed weight reload is put back on the base model before
the worker's next trial (`answer_on`), so no trial generates from a mix of two models.
"""

from __future__ import annotations

import os
import time
import traceback
from typing import Any

import ray

from judges import CachedJudge, JudgeItem, Verdict, build_judge, parse_judging_config
from merging import parse_plan
from search.verdict_owner import RemoteVerdictStore
from serving import EngineSettings, GenerationSettings, ModelSet, ServingBackend, create_backend

# Set in every actor process before torch loads (see run_search.py for the measurement).
RUNTIME_ENV = {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"}}


@ray.remote
class MergeWorker:
    def __init__(self, models: dict[str, str], base: str, backend: str, engine: dict[str, Any],
                 allow_pickle: bool = False, trust_remote_code: bool = False, sources: str = "auto"):
        model_set = ModelSet(models, base=base, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                             sources=sources)
        self.backend = create_backend(backend, model_set, EngineSettings(**engine))

    def info(self) -> dict[str, Any]:
        ctx = ray.get_runtime_context()
        return {"node_id": ctx.get_node_id(), "pid": os.getpid(), "backend": self.backend.name}

    def run(self, target: dict[str, Any] | str, conversations: list, generation: dict[str, Any]) -> dict[str, Any]:
        """Swap to `target` (a plan dict, or a model key) and answer; errors come back as data."""
        return answer_on(self.backend, target, conversations, generation) | {
            "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def close(self) -> None:
        self.backend.close()


def answer_on(backend: ServingBackend, target: dict[str, Any] | str, conversations: list,
              generation: dict[str, Any]) -> dict[str, Any]:
    """One trial on `backend`: a broken engine (a reload that failed half-way) first gets the
    base back, then `target` is swapped in and the conversations answered. Every failure
    comes back as `error`; one that breaks the engine says so, and the next call repairs it."""
    try:
        if backend.broken:
            backend.restore()
        if isinstance(target, str):
            timing = backend.use_model(target)
        else:
            timing = backend.apply_plan(parse_plan(target, "trial plan"))
        started = time.perf_counter()
        answers = backend.generate(conversations, GenerationSettings(**generation))
        generate_s = time.perf_counter() - started
    except Exception as err:  # noqa: BLE001  (the trial records it; the worker stays usable)
        error = f"{type(err).__name__}: {err}"
        if backend.broken:
            error += f" (engine left half-loaded: the worker loads {backend.model_set.base!r} before its next trial)"
        return {"error": error, "traceback": traceback.format_exc(limit=5)}
    empty = sum(not a.strip() for a in answers)
    return {"answers": answers, "merge_s": timing.merge_s, "swap_s": timing.load_s, "generate_s": generate_s,
            "empty_answers": empty}


@ray.remote
class JudgeActor:
    """One judge for the search. With `cache_owner` (the owner actor's name and namespace,
    search/verdict_owner.py) its verdicts are cached in the owner's file, wherever in the
    cluster this actor runs."""

    def __init__(self, judging: dict[str, Any], cache_owner: tuple[str, str] | None = None):
        config = parse_judging_config(judging)
        if cache_owner is None:
            self.judge = build_judge(config)
        else:
            self.judge = CachedJudge(build_judge(config.judge), RemoteVerdictStore(cache_owner))

    def info(self) -> dict[str, Any]:
        """Where it runs; also what the trials' retry loop pings to know a restarted judge is up."""
        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def judge_items(self, items: list[JudgeItem]) -> tuple[list[Verdict], float]:
        started = time.perf_counter()
        verdicts = self.judge.judge(items)
        return verdicts, time.perf_counter() - started
