"""Data passed between judges, the cache and the metrics.

Outcomes are always stated from the *candidate's* point of view (better / tie / worse
than the gold answer), whatever order the judge saw the answers in: the mapping from the
judge's "A"/"B" back to candidate/gold happens once, in `judges.pairwise`, using the order
recorded for the item. A verdict that could not be obtained is kept as a verdict with a
non-OK status and no outcomes, so failures are counted and reported, never scored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from judges.rubric import Category


class Outcome(str, Enum):
    """Candidate vs gold on one dimension."""

    BETTER = "better"
    TIE = "tie"
    WORSE = "worse"
    # Judged in both orders and the two verdicts contradict each other (one says the
    # candidate is worse, the other that it is better or equal). Counts as *not* ≥ gold.
    INCONSISTENT = "inconsistent"

    @property
    def win_or_tie(self) -> bool:
        return self in (Outcome.BETTER, Outcome.TIE)


class VerdictStatus(str, Enum):
    OK = "ok"
    UNPARSEABLE = "unparseable"  # the judge answered, but not in a form we can read (after retries)
    FAILED = "failed"  # no usable answer: connection error, timeout, HTTP error, ...


class Order(str, Enum):
    """Which answer the judge saw as "A"."""

    CANDIDATE_FIRST = "candidate_first"
    GOLD_FIRST = "gold_first"
    BOTH = "both"  # judged twice, once in each order
    NONE = "none"  # order-free judge (the heuristic rubric judge)


@dataclass(frozen=True)
class JudgeItem:
    """One prompt of the eval set with the gold (human) answer and the candidate's answer.

    ``answer`` is the *candidate's* answer (the name predates the eval set's ``answer``
    column), so the eval set's short reference answer travels as ``reference_answer``.
    ``facts`` are the key facts a correct answer states, each ``alt1|alt2`` (eval-set
    schema); a judge may check them. Both are optional and part of the verdict cache key
    only when given."""

    item_id: str
    prompt: str
    gold: str
    answer: str
    category: Category
    reference_answer: str | None = None
    facts: tuple[str, ...] = ()

    @classmethod
    def from_eval(cls, item: Any, answer: str) -> JudgeItem:
        """From an eval-set row (anything with id, prompt, gold, category and optionally
        answer and facts, e.g. judges.eval_set.EvalItem)."""
        return cls(str(item.id), item.prompt, item.gold, answer, item.category,
                   getattr(item, "answer", None), tuple(getattr(item, "facts", ()) or ()))


@dataclass(frozen=True)
class Verdict:
    """The judgement of one item.

    outcomes: dimension -> candidate's outcome; exactly the rubric's applicable dimensions
        when status is OK, empty otherwise.
    order: the order(s) the judge saw.
    error: why the verdict is not OK (never contains secrets).
    attempts: requests sent to the judge for this item (transport retries and parse
        retries included); 0 for a cache hit or an offline judge.
    cached: served from the verdict cache.
    """

    item_id: str
    category: Category
    status: VerdictStatus
    outcomes: Mapping[str, Outcome] = field(default_factory=dict)
    order: Order = Order.NONE
    judge: str = ""
    error: str | None = None
    attempts: int = 0
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.status is VerdictStatus.OK
