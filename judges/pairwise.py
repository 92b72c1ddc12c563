"""One pairwise judgement with an LLM judge: order(s), prompt, call, parse, retry, combine.

Backend-independent: a backend supplies only `complete(messages) -> (reply, requests)`
and raises `JudgeTransportError` when it could not get a reply (after its own bounded
transport retries). The openai and vllm backends both use it.

Both-orders rule (position-bias control). With `both_orders`, each item is judged with
the candidate as A and again with the candidate as B; the two candidate-vs-gold
outcomes are combined per dimension so that the candidate counts as "better or equal"
only if *both* orders say so:

    better + better -> better        tie + tie     -> tie       worse + worse -> worse
    better + tie    -> tie           tie + worse   -> worse
    better + worse  -> inconsistent  (position decided it; counts as NOT better-or-equal)

If either order fails or stays unparseable, the whole item is reported with that status
(never half-scored).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from judges.parse import Label, ParseError, parse_verdict
from judges.prompt import Message, assign_order, build_messages, repair_message
from judges.rubric import Rubric
from judges.verdicts import JudgeItem, Order, Outcome, Verdict, VerdictStatus

Complete = Callable[[list[Message]], tuple[str | None, int]]
#: A backend's request function: messages and the dimensions the verdict must hold.
CompleteFor = Callable[[list[Message], tuple[str, ...]], tuple[str | None, int]]

log = logging.getLogger(__name__)


class JudgeTransportError(RuntimeError):
    """No reply from the judge (connection, timeout, HTTP status) after bounded retries."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


def label_to_outcome(label: Label, order: Order) -> Outcome:
    """Map the judge's A/B/tie back to the candidate's outcome via the recorded order."""
    if label == "tie":
        return Outcome.TIE
    candidate_label = "A" if order is Order.CANDIDATE_FIRST else "B"
    return Outcome.BETTER if label == candidate_label else Outcome.WORSE


_GE = {Outcome.BETTER, Outcome.TIE}
_LE = {Outcome.WORSE, Outcome.TIE}


def combine_orders(first: Outcome, second: Outcome) -> Outcome:
    """Combine the outcomes of the two orders (see the module docstring for the table)."""
    if first == second:
        return first
    if first in _GE and second in _GE:
        return Outcome.TIE
    if first in _LE and second in _LE:
        return Outcome.WORSE
    return Outcome.INCONSISTENT


class _Failure(Exception):
    def __init__(self, status: VerdictStatus, error: str, attempts: int) -> None:
        super().__init__(error)
        self.status, self.error, self.attempts = status, error, attempts


def _judge_once(item: JudgeItem, order: Order, rubric: Rubric, complete: Complete,
                parse_retries: int) -> tuple[dict[str, Outcome], int]:
    dims = rubric.applicable(item.category)
    messages = build_messages(item, order, rubric)
    attempts = 0
    last_error = ""
    for _ in range(parse_retries + 1):
        try:
            reply, n = complete(messages)
        except JudgeTransportError as e:
            raise _Failure(VerdictStatus.FAILED, str(e), attempts + e.attempts) from None
        attempts += n
        try:
            labels = parse_verdict(reply, dims)
        except ParseError as e:
            last_error = str(e)
            messages = [*messages, {"role": "assistant", "content": reply or ""}, repair_message(last_error, dims)]
            continue
        return {d: label_to_outcome(labels[d], order) for d in dims}, attempts
    raise _Failure(VerdictStatus.UNPARSEABLE,
                   f"unparseable judge reply after {parse_retries + 1} tries ({order.value}): {last_error}", attempts)


def judge_pairwise(item: JudgeItem, complete: Complete, rubric: Rubric, *, judge_name: str,
                   both_orders: bool, seed: int, parse_retries: int) -> Verdict:
    """Judge one item; failures become a verdict with a non-OK status, never an exception."""
    orders = [Order.CANDIDATE_FIRST, Order.GOLD_FIRST] if both_orders else [assign_order(item.item_id, seed)]
    recorded = Order.BOTH if both_orders else orders[0]
    results: list[dict[str, Outcome]] = []
    attempts = 0
    for order in orders:
        try:
            outcomes, n = _judge_once(item, order, rubric, complete, parse_retries)
        except _Failure as f:
            return Verdict(item.item_id, item.category, f.status, order=recorded, judge=judge_name,
                           error=f.error, attempts=attempts + f.attempts)
        attempts += n
        results.append(outcomes)
    combined = results[0] if len(results) == 1 else {d: combine_orders(results[0][d], results[1][d]) for d in results[0]}
    return Verdict(item.item_id, item.category, VerdictStatus.OK, combined, order=recorded, judge=judge_name,
                   attempts=attempts)


def item_order(item: JudgeItem, *, both_orders: bool, seed: int) -> Order:
    return Order.BOTH if both_orders else assign_order(item.item_id, seed)


def judge_items(items: Sequence[JudgeItem], complete: CompleteFor, rubric: Rubric, *, judge_name: str,
                both_orders: bool, seed: int, parse_retries: int, workers: int, thread_prefix: str,
                scrub: Callable[[str], str] = str) -> list[Verdict]:
    """Every item judged on a thread pool (HTTP judges wait on the network; the vLLM judge
    batches the threads' requests). An unexpected error fails that one item as a counted
    FAILED verdict, never the batch; `scrub` cleans error text (API keys) before it is kept."""

    def one(item: JudgeItem) -> Verdict:
        try:
            dims = rubric.applicable(item.category)
            v = judge_pairwise(item, lambda messages: complete(messages, dims), rubric, judge_name=judge_name,
                               both_orders=both_orders, seed=seed, parse_retries=parse_retries)
        except Exception as e:  # noqa: BLE001  (last line of defence: one item never sinks the batch)
            v = Verdict(item.item_id, item.category, VerdictStatus.FAILED,
                        order=item_order(item, both_orders=both_orders, seed=seed), judge=judge_name,
                        error=scrub(f"internal error: {type(e).__name__}: {e}"))
        if not v.ok:
            log.warning("judge verdict for item %s is %s: %s", item.item_id, v.status.value, v.error)
        return v

    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix=thread_prefix) as pool:
        return list(pool.map(one, items))
