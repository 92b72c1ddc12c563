"""Asking the judge actors, with retries that wait for Ray to restart a judge.

A judge actor whose process dies is restarted by Ray (`workers.max_restarts`); until the
new process is up, calls to it fail at once with ActorUnavailableError. Asking again
straight away would spend every retry within milliseconds, so a trial waits for the
judge to be back (`search.pool.await_restart`, the wait the merge workers use), bounded by
`workers.restart_timeout_s` over the whole call, and then fails with the reason.
"""

from __future__ import annotations

import time

import ray

from judges import JudgeItem, Verdict
from search.pool import Context, await_restart


class JudgingUnavailableError(RuntimeError):
    """No judge actor answered within the retries and the restart wait; says which and why."""


def ask_judges(ctx: Context, items: list[JudgeItem], key: str) -> tuple[list[Verdict], float]:
    """Verdicts for `items` and the judge's seconds, from the judge `key` maps to, or the next
    ones when it dies. A judge that is restarting is waited for (not counted as a retry); one
    that died mid-call counts as one (`search.trial_retries`)."""
    first = hash(key) % len(ctx.judges)
    deadline = time.monotonic() + ctx.restart_timeout_s
    errors: list[str] = []
    attempt = 0
    while attempt <= ctx.retries:
        name = ctx.judges[(first + attempt) % len(ctx.judges)]
        try:
            return ray.get(ray.get_actor(name, namespace=ctx.namespace).judge_items.remote(items))
        except ray.exceptions.ActorUnavailableError as err:  # restarting: wait, then ask it again
            remaining = deadline - time.monotonic()
            if remaining > 0 and await_restart(ctx, name, timeout_s=remaining):
                continue
            errors.append(f"judge {name} did not come back: {type(err).__name__}")
        except (ray.exceptions.RayActorError, ValueError) as err:  # died mid-call, or gone for good
            errors.append(f"judge {name} lost: {type(err).__name__}")
        attempt += 1
    raise JudgingUnavailableError(
        "; ".join(errors) + f" (gave up after {len(errors)} attempt(s): search.trial_retries={ctx.retries}, "
                            f"restart wait at most workers.restart_timeout_s={ctx.restart_timeout_s:g} s)")
