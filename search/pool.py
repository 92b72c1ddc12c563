"""The actor pool of a search: Ray up, merge workers and judges placed, workers leased per trial.

Workers are named actors listed in a Ray queue; a trial takes a name, runs on that worker
and puts the name back, so concurrency equals the number of workers. Ray restarts a
worker whose process dies (`workers.max_restarts`: OOM, lost node, kill): the restarted
actor keeps its name and reloads its sources in `__init__`, so the pool heals without
the driver tracking anything, and the trial that was running on it is retried
(`search.trial_retries`) on whichever worker is free next. A worker out of restarts
stays dead; trials that lease it fail fast with the reason, so the search still ends.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
from ray._common.utils import get_default_ray_temp_dir

from judges import EvalSet
from search.config import SearchConfig
from search.console import console
from search.dashboard import describe_dashboard
from search.leftovers import end_dead_sessions, record_local_session
from search.scoring import conversations
from search.verdict_owner import owner_name, start_verdict_owner
from search.workers import RUNTIME_ENV, JudgeActor, MergeWorker


# Actor handles per pool namespace, held by the driver process for the pool's lifetime.
_HANDLES: dict[str, list[Any]] = {}


@dataclass
class Context:
    """What every trial needs, in plain picklable data (Tune ships it to trial processes)."""

    prompts: list[list[dict[str, str]]]
    items: list[dict[str, Any]]
    objectives: list[str]
    sources: list[str]
    references: dict[str, dict[str, float]]
    generation: dict[str, Any]
    queue: Any
    workers: list[str]
    judges: list[str]
    namespace: str
    retries: int
    restart_timeout_s: float = 900.0
    #: The held-out items (`eval.holdout`): never answered during the search, only when the
    #: front and the references are validated; empty when the hold-out is off.
    holdout_prompts: list[list[dict[str, str]]] = field(default_factory=list)
    holdout_items: list[dict[str, Any]] = field(default_factory=list)

    def on_holdout(self) -> "Context":
        """The same pool and judges, asked about the held-out items instead."""
        return replace(self, prompts=self.holdout_prompts, items=self.holdout_items, holdout_prompts=[],
                       holdout_items=[])

    def on_all_items(self) -> "Context":
        """Search and held-out items in one pass (the references answer both at once)."""
        return replace(self, prompts=self.prompts + self.holdout_prompts, items=self.items + self.holdout_items,
                       holdout_prompts=[], holdout_items=[])


def start_ray(config: SearchConfig) -> None:
    """Join `experiment.ray_address`, or start a local Ray sized for the configured pool (with
    its dashboard where `ray[default]` is installed); either way print where the dashboard is."""
    if ray.is_initialized():
        return
    if config.experiment.ray_address:
        try:
            context = ray.init(address=config.experiment.ray_address, runtime_env=RUNTIME_ENV, log_to_driver=False)
        except (ConnectionError, ray.exceptions.RayError) as err:
            raise ConnectionError(
                f"experiment.ray_address: could not join the Ray cluster at {config.experiment.ray_address}: "
                f"{_first_line(err)}. Is `ray start --head` running there? Ray 2.60 clusters use token auth: "
                f"export RAY_AUTH_MODE=token and give the head's token (~/.ray/auth_token, or RAY_AUTH_TOKEN)"
            ) from None
        console.print(describe_dashboard(context, joined=True), markup=False, highlight=False)
        return
    w = config.workers
    # Logical CPUs: the workers' share plus room for judge actors and the light trials.
    # address="local": a new instance of our own size even where a `ray start` cluster (or
    # RAY_ADDRESS) is on this machine; plain ray.init() would join it and refuse num_cpus.
    # include_dashboard=None: Ray's own rule, the dashboard where its packages are installed and
    # a warning, not an error, when it fails to start (the search never depends on it).
    for ended in end_dead_sessions(get_default_ray_temp_dir()):  # a killed run's agents, ports, memory
        console.print(ended.message(), markup=False, highlight=False)
    context = ray.init(address="local", num_cpus=math.ceil(w.count * w.cpus) + w.judges + 1,
                       runtime_env=RUNTIME_ENV, include_dashboard=None, log_to_driver=False,
                       resources=_local_resources(config))
    record_local_session(context.address_info["session_dir"])
    console.print(describe_dashboard(context, joined=False), markup=False, highlight=False)


def _local_resources(config: SearchConfig) -> dict[str, float]:
    """A local one-node Ray gets the custom resources the workers ask for (a cluster's
    nodes declare their own with `ray start --resources`)."""
    return {k: v * config.workers.count for k, v in config.workers.resources.items()}


def start_pool(config: SearchConfig, models: dict[str, str], eval_set: EvalSet, exp_dir: Path,
               sources: list[str], holdout: EvalSet | None = None) -> Context:
    """Place the merge workers and judges, wait until each is up, and return the trial context."""
    namespace = f"soupsearch-{config.experiment.name}"
    w = config.workers
    worker_names = [f"{namespace}-worker-{i}" for i in range(w.count)]
    engine = config.serving.engine.model_copy(update={"threads": config.serving.engine.threads
                                                      or max(1, int(w.cpus))})
    workers = [MergeWorker.options(name=n, namespace=namespace, num_cpus=w.cpus, num_gpus=w.gpus,
                                   resources=dict(w.resources), max_restarts=w.max_restarts,
                                   max_task_retries=0).remote(
        models, "base", config.serving.backend, engine.model_dump(), config.models.allow_pickle,
        config.models.trust_remote_code, w.sources) for n in worker_names]
    judge_names = [f"{namespace}-judge-{i}" for i in range(w.judges)]
    judging = config.judging.model_dump(mode="json")
    # One actor on this node owns the verdict file; judges anywhere in the cluster use it.
    owner = start_verdict_owner(Path(judging.pop("cache_path") or exp_dir / "verdicts.sqlite"),
                                owner_name(namespace), namespace, w.max_restarts)
    judges = [JudgeActor.options(name=n, namespace=namespace, num_cpus=1, num_gpus=w.judge_gpus,
                                 max_restarts=w.max_restarts).remote(judging, (owner_name(namespace), namespace))
              for n in judge_names]
    ray.get([a.info.remote() for a in workers] + [j.judge_items.remote([]) for j in judges])
    # the driver owns the actors: dropping the handles would kill them
    _HANDLES[namespace] = workers + judges + [owner]
    from ray.util.queue import Queue

    queue = Queue()
    for name in worker_names:
        queue.put(name)
    # The file-schema record (answer / facts when the set has them, extra columns as metadata):
    # trials rebuild the EvalItems from it for the judge and the answer metrics.
    items = [i.to_record(metadata=True) for i in eval_set]
    held = list(holdout or [])
    return Context(prompts=conversations(list(eval_set)), items=items, objectives=list(config.search.objectives),
                   sources=sources, references={}, generation=config.serving.generation.model_dump(), queue=queue,
                   workers=worker_names, judges=judge_names, namespace=namespace, retries=config.search.trial_retries,
                   restart_timeout_s=w.restart_timeout_s, holdout_prompts=conversations(held),
                   holdout_items=[i.to_record(metadata=True) for i in held])


def worker_info(ctx: Context) -> list[dict[str, Any]]:
    """Where each worker runs (node id, pid); a dead worker is reported as such."""
    out = []
    for name in ctx.workers:
        try:
            out.append({"worker": name, **ray.get(ray.get_actor(name, namespace=ctx.namespace).info.remote())})
        except (ray.exceptions.RayActorError, ValueError) as err:
            out.append({"worker": name, "error": f"{type(err).__name__}"})
    return out


def lease_and_run(ctx: Context, target: dict[str, Any] | str) -> dict[str, Any]:
    """Run `target` on a free worker; a worker that dies mid-trial is retried on the next free one.

    The result says which worker and node answered and how many workers were lost on the
    way (`workers_lost`), so a flaky node shows up in the results, not only in Ray's logs."""
    errors: list[str] = []
    for _ in range(ctx.retries + 1):
        name = ctx.queue.get(block=True)
        try:
            worker = ray.get_actor(name, namespace=ctx.namespace)
            run = ray.get(worker.run.remote(target, ctx.prompts, ctx.generation))
            return run | {"worker": name, "workers_lost": len(errors)}
        except (ray.exceptions.RayActorError, ValueError) as err:
            errors.append(f"worker {name} lost: {type(err).__name__}: {_first_line(err)}")
            await_restart(ctx, name)  # back in the pool once it is up again (or known dead)
        finally:
            ctx.queue.put(name)
    return {"error": "; ".join(errors) + f" (gave up after {len(errors)} attempt(s): search.trial_retries="
                                        f"{ctx.retries})", "workers_lost": len(errors)}


def await_restart(ctx: Context, name: str, timeout_s: float | None = None) -> bool:
    """Wait until Ray has restarted actor `name` (a worker or a judge: calls to a restarting
    actor fail at once with ActorUnavailableError rather than queue); False when it is out of
    restarts or does not come back within `timeout_s` (default `workers.restart_timeout_s`) —
    then its trials fail fast instead."""
    deadline = time.monotonic() + (ctx.restart_timeout_s if timeout_s is None else timeout_s)
    while time.monotonic() < deadline:
        try:
            ray.get(ray.get_actor(name, namespace=ctx.namespace).info.remote(),
                    timeout=max(1.0, deadline - time.monotonic()))
            return True
        except ray.exceptions.ActorUnavailableError:
            time.sleep(1.0)
        except (ray.exceptions.RayActorError, ValueError, ray.exceptions.GetTimeoutError):
            return False
    return False


def close_pool(ctx: Context) -> None:
    """Close the engines and the verdict file, then let the actors go."""
    for name in [*ctx.workers, owner_name(ctx.namespace)]:
        try:
            ray.get(ray.get_actor(name, namespace=ctx.namespace).close.remote())
        except (ray.exceptions.RayActorError, ValueError):
            pass  # already dead: nothing to close
    _HANDLES.pop(ctx.namespace, None)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else ""
