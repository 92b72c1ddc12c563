"""Preflight: everything that can be checked cheaply is checked before any expensive work.

A cluster hour lost to a typo is the failure this prevents: a source with another
vocabulary found after the workers loaded, an eval file with a bad row found after the
references were generated, a judge URL that answers nobody, or workers that ask for GPUs
the cluster does not have (Ray would keep them pending forever, silently). Each check
returns problems instead of raising, so the user gets every problem in one report, each
with where it is and what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from judges import EvalSet, EvalSetError, JudgeItem, VerdictStatus, build_judge, load_eval_set
from judges.answer_metrics import MATCH_METRICS
from judges.eval_set import MIN_PER_CATEGORY
from merging import CheckpointError, IncompatibleModelsError, ModelFolder, check_compatible
from merging.memory import GIB, gib, model_sizes, pick_sources, worker_memory
from search.config import SearchConfig

MERGEABLE_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


@dataclass(frozen=True)
class Problem:
    where: str  # config field or file
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}\n      fix: {self.fix}"


class PreflightError(RuntimeError):
    """The search cannot start; `problems` lists every reason found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__(f"preflight found {len(problems)} problem(s); nothing expensive was started:\n"
                         + "\n".join(f"  - {p}" for p in problems))


def check_models(models: dict[str, str], *, allow_pickle: bool = False) -> list[Problem]:
    """Every folder opens, and every source has the base's tensor names, shapes and vocabulary,
    in a float dtype the merge methods take (a quantized checkpoint is not mergeable as is)."""
    problems: list[Problem] = []
    folders: dict[str, ModelFolder] = {}
    for key, path in models.items():
        where = "models.base" if key == "base" else f"models.sources.{key}"
        if not (Path(path) / "config.json").exists():
            problems.append(Problem(where, f"{path} is not a model folder (no config.json)",
                                    "point it at a Hugging Face model folder (config.json + safetensors)"))
            continue
        try:
            folders[key] = ModelFolder(path, allow_pickle=allow_pickle, label=key)
        except CheckpointError as err:
            problems.append(Problem(where, str(err), "convert it to safetensors, or fix the folder"))
    try:
        for key, folder in folders.items():
            odd = sorted({str(folder.dtype(n)).removeprefix("torch.") for n in folder.tensor_names()
                          if folder.dtype(n) not in MERGEABLE_DTYPES})
            if odd:
                problems.append(Problem(f"models.{'base' if key == 'base' else 'sources.' + key}",
                                        f"tensors in {', '.join(odd)}; merging needs bfloat16, float16 or float32",
                                        "use the unquantized checkpoint (dequantize before merging)"))
        if "base" in folders:
            check_compatible("base", folders["base"], {k: f for k, f in folders.items() if k != "base"})
    except IncompatibleModelsError as err:
        problems += [Problem("models.sources", p, "merge only variants fine-tuned from this base")
                     for p in err.problems]
    finally:
        for folder in folders.values():
            folder.close()
    return problems


def check_eval_set(config: SearchConfig) -> tuple[EvalSet | None, list[Problem]]:
    """The eval set loaded and subset (`eval.subset`), with any problem of it, its hold-out
    split (`eval.holdout`) or the objectives that read its columns. The set returned is the
    whole subset: `holdout_split` divides it into the search's items and the held-out ones."""
    try:
        eval_set = load_eval_set(config.eval.set)
    except (EvalSetError, FileNotFoundError, ValueError) as err:
        return None, [Problem("eval.set", str(err), "fix the rows named above, or use a bundled set "
                                                   "(soupsearch-eval-v1, smoke)")]
    if config.eval.subset and config.eval.subset < len(eval_set):
        eval_set = eval_set.subset(config.eval.subset, seed=config.search.seed)
    problems: list[Problem] = []
    searched = eval_set
    try:
        searched, _ = holdout_split(config, eval_set)
    except ValueError as err:
        problems.append(Problem("eval.holdout", str(err),
                                f"lower or raise eval.holdout (0 disables it), or use more items (eval.subset, a "
                                f"larger set) so each part keeps {MIN_PER_CATEGORY} of every category"))
    return eval_set, problems + check_objectives(config, searched)


def holdout_split(config: SearchConfig, eval_set: EvalSet) -> tuple[EvalSet, EvalSet]:
    """(search items, held-out items) of the loaded and subset eval set under `eval.holdout`,
    seeded with `search.seed`; `eval.holdout: 0` gives (eval_set, empty). ValueError (with the
    counts per category) when a part would be too small; `check_eval_set` reports that first."""
    return eval_set.holdout_split(config.eval.holdout, seed=config.search.seed)


def check_objectives(config: SearchConfig, eval_set: EvalSet) -> list[Problem]:
    """A match metric (exact_match, contains_answer) compares with the eval set's `answer` column:
    on a set without one every trial would score NaN and fail, so say it before any model loads."""
    if any(it.answer is not None for it in eval_set):
        return []
    return [Problem("search.objectives", f"{o} compares answers with the eval set's 'answer' column, but no "
                                         f"item the search uses of {config.eval.set} has an answer",
                    "add an 'answer' column (a short reference answer per item) or drop the objective")
            for o in config.search.objectives if o in MATCH_METRICS]


def check_judge(config: SearchConfig, eval_set: EvalSet | None) -> list[Problem]:
    """One real judgement (the gold answer against itself) through the configured judge,
    uncached. A vLLM judge is only built inside its actor (it is the expensive part), so
    it is checked when the pool starts instead."""
    judge_config = config.judging.judge
    if judge_config.backend == "vllm":
        return []
    item = next(iter(eval_set)) if eval_set is not None and len(eval_set) else None
    probe = JudgeItem("preflight", item.prompt if item else "What is 2 + 2?", item.gold if item else "4.",
                      item.gold if item else "4.", item.category if item else "safe")
    try:
        judge = build_judge(judge_config)
        verdict = judge.judge([probe])[0]
    except Exception as err:  # noqa: BLE001  (a missing key, an odd endpoint: reported, not raised)
        return [Problem("judging.judge", f"{type(err).__name__}: {err}", "fix the judge settings")]
    finally:
        close = getattr(locals().get("judge"), "close", None)
        if close is not None:
            close()
    if verdict.status is VerdictStatus.FAILED:
        return [Problem("judging.judge", f"the judge did not answer a test request: {verdict.error}",
                        "start the judge server or fix base_url / model / api_key_env")]
    return []


def check_placement(config: SearchConfig, nodes: list[dict[str, Any]]) -> list[Problem]:
    """Can Ray place every worker and judge on the live nodes now? (first fit per node:
    a worker's CPUs, GPUs and custom resources must all come from one node).

    `nodes` is `ray.nodes()`; on an autoscaling cluster nodes may still come, so this is
    only run against the nodes that exist."""
    w = config.workers
    need = _worker_need(config)
    counts, free = _first_fit(config, nodes)
    placed = sum(counts)
    problems = []
    if placed < w.count:
        have = "; ".join(", ".join(f"{k}={v:g}" for k, v in sorted(n.get("Resources", {}).items())
                                   if k in need) or "none of them" for n in nodes if n.get("Alive")) or "no live nodes"
        problems.append(Problem("workers", f"{w.count} merge workers need {_fmt(need)} each on one node; the "
                                           f"cluster can place {placed} (nodes have: {have})",
                                "lower workers.count / cpus / gpus, drop unknown workers.resources, or add nodes"))
    judges_free = sum(r.get("CPU", 0.0) for r in free)
    if placed == w.count and judges_free + 1e-9 < w.judges:
        problems.append(Problem("workers.judges", f"{w.judges} judge actors need 1 CPU each; {judges_free:g} CPUs "
                                                  "are left after the merge workers",
                                "lower workers.judges or workers.cpus"))
    gpus_free = sum(r.get("GPU", 0.0) for r in free)
    if placed == w.count and w.judge_gpus and gpus_free + 1e-9 < w.judges * w.judge_gpus:
        problems.append(Problem("workers.judge_gpus", f"{w.judges} judge actors need {w.judge_gpus:g} GPU(s) each; "
                                                      f"{gpus_free:g} GPUs are left after the merge workers",
                                "lower workers.count or workers.judges, or use an API judge"))
    return problems


def check_memory(config: SearchConfig, models: dict[str, str], nodes: list[dict[str, Any]],
                 gpu_total: int | None = None) -> list[Problem]:
    """Does each merge worker's estimate (merging.memory: engine + sources + staged merge +
    working set) fit its GPU and its node's memory, for the configured `workers.sources`?

    `gpu_total`: bytes of one worker GPU (default: this machine's first GPU, else
    `workers.gpu_memory_gib`; unknown: the GPU side is not checked). Host memory is Ray's
    `memory` resource of the node that gets the most workers."""
    w, engine = config.workers, config.serving.engine
    try:
        sizes, largest = model_sizes(list(models.values()), allow_pickle=config.models.allow_pickle)
    except Exception:  # noqa: BLE001 - unreadable models are check_models' report
        return []
    on_gpu = w.gpus > 0
    if gpu_total is None and on_gpu:
        gpu_total = (torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available()
                     else int(w.gpu_memory_gib * GIB) if w.gpu_memory_gib else None)
    vllm = config.serving.backend != "transformers"
    engine_device = int(engine.gpu_memory_utilization * gpu_total) if on_gpu and vllm and gpu_total else \
        (sizes[0] if on_gpu else 0)
    engine_host = 0 if on_gpu else sizes[0] + (engine.cpu_kv_cache_gib * GIB if vllm else 0)
    per_node = max(_first_fit(config, nodes)[0] + [0]) or w.count
    host_total = max((n.get("Resources", {}).get("memory", 0) for n in nodes if n.get("Alive")), default=0) or None
    sources = w.sources if w.sources != "auto" else pick_sources(
        model_bytes=sizes, largest_tensor_bytes=largest, staged=engine.stage_merges, on_gpu=on_gpu,
        engine_device_bytes=engine_device, device_total=gpu_total, host_available=host_total,
        engine_host_bytes=engine_host, workers_sharing_host=per_node)
    need = worker_memory(model_bytes=sizes, largest_tensor_bytes=largest, sources=sources,
                         staged=engine.stage_merges, on_gpu=on_gpu, engine_device_bytes=engine_device,
                         engine_host_bytes=engine_host)
    problems = []
    where = "workers.sources" + (f" (auto chose {sources})" if w.sources == "auto" else "")
    if on_gpu and gpu_total and need.device > gpu_total * max(1.0, w.gpus):
        fixes = [f for f in ("set workers.sources: host (sources in host memory, copied to the GPU per tensor)"
                             if sources == "gpu" else "",
                             "set serving.engine.stage_merges: false" if engine.stage_merges and sources == "gpu"
                             else "", "lower serving.engine.gpu_memory_utilization" if vllm else "") if f]
        problems.append(Problem(where, f"each merge worker needs {gib(need.device)} on its GPU "
                                       f"({need.describe('device')}), more than the GPU's {gib(gpu_total)}",
                                "; or ".join(fixes) or "use bigger GPUs"))
    if host_total and need.host * per_node > host_total:
        fixes = [f for f in ("set workers.sources: disk (memory-mapped, one page cache per node)"
                             if sources != "disk" else "",
                             f"fewer workers per node (workers.count {w.count}, or workers.resources)" if per_node > 1
                             else "", "set serving.engine.stage_merges: false" if engine.stage_merges else "") if f]
        problems.append(Problem(where, f"{per_node} merge worker(s) on one node need {gib(need.host * per_node)} of "
                                       f"host memory ({need.describe('host')} each), more than the node's "
                                       f"{gib(host_total)} for Ray", "; or ".join(fixes) or "add memory"))
    return problems


def _worker_need(config: SearchConfig) -> dict[str, float]:
    w = config.workers
    return {k: v for k, v in {"CPU": w.cpus, "GPU": w.gpus, **w.resources}.items() if v > 0}


def _first_fit(config: SearchConfig, nodes: list[dict[str, Any]]) -> tuple[list[int], list[dict[str, float]]]:
    """How many merge workers each live node gets under first-fit placement (a worker's
    CPUs, GPUs and custom resources all from one node), and what is left on each node."""
    need = _worker_need(config)
    free = [dict(n.get("Resources", {})) for n in nodes if n.get("Alive")]
    counts = [0] * len(free)
    for _ in range(config.workers.count):
        i = next((i for i, r in enumerate(free) if all(r.get(k, 0.0) + 1e-9 >= v for k, v in need.items())), None)
        if i is None:
            break
        for k, v in need.items():
            free[i][k] -= v
        counts[i] += 1
    return counts, free


def _fmt(need: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in need.items()) + "}"


def check_inputs(config: SearchConfig, models: dict[str, str]) -> tuple[EvalSet | None, list[Problem]]:
    """The checks that need no Ray: models, eval set (loaded and subset once, here; its hold-out
    split and the objectives that read its columns checked) and judge. Placement
    (`check_placement`) is added by the caller once Ray is up."""
    problems = check_models(models, allow_pickle=config.models.allow_pickle)
    eval_set, eval_problems = check_eval_set(config)
    return eval_set, problems + eval_problems + check_judge(config, eval_set)
