"""Racing on items (multi-fidelity): a trial is answered and judged on a first round of items and
stopped there when even its best case cannot reach the front.

Generation is most of a trial (~98 % of one on the CPU example), and a merge that is clearly
worse than the front after a quarter of the items stays worse after all of them. So with
`search.racing` on, a trial answers and is judged on round 1 (a fixed, seeded, per-category
share of the search items: the same items for every trial), then is compared with each trial of
the current front ON THOSE SAME ITEMS: per objective, the 95 % paired bootstrap interval of
(trial − front trial) over the round-1 items (`judges.paired_bootstrap`, the paired comparison
of two systems on one item set). If for one front trial the OPTIMISTIC end of that interval is
≤ 0 on every objective and < 0 on one, even the trial's best case is dominated: it stops as
`pruned`, its row keeps its round-1 scores, it is told to Optuna as PRUNED and it is never on
the front. Otherwise it answers the rest of the items and is scored on all of them like any
trial.

Why paired (racing as in F-Race, Birattari et al. 2002, which blocks on instances): items differ
far more from each other than merges do on one item, so the trials' own intervals over a
quarter of the items overlap almost always. Measured offline on a 25-trial, 36-item unraced run
of the default search: comparing each trial's upper bounds (unpaired) with the front pruned 0
trials, the paired rule 3, with the same final front (docs/search.md has the figures).

The front lives in the driver (the recorder computes it after every finished trial) while
trials run in Tune's trial processes: a small named Ray actor, the `FrontBoard`, carries each
front trial's per-item scores from one to the other. A trial that cannot reach the board (it
died with its driver) prunes nothing: racing only ever saves work, it never loses a trial.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ray

from judges import paired_bootstrap

#: objective -> item id -> score, as a trial's `items_json` and items/trial_NNNN.parquet hold them
ItemScores = Mapping[str, Mapping[str, float]]
#: A front trial as the board holds it: (trial number, its per-item scores).
FrontPoint = tuple[int, ItemScores]

# Board handles held by the driver for the search's lifetime (dropping the last one kills the actor).
_BOARDS: dict[str, Any] = {}


def racing_off_reason(enabled: bool | str, n_trials: int, n_items: int, auto_trials: int,
                      auto_items: int) -> str | None:
    """Why `search.racing` is off (None: it is on). `enabled`: true / false, or `auto`: on from
    `auto_trials` trials and `auto_items` search items up. A short search has too few finished
    trials for a front worth comparing with. And a round is a generation batch whose time is set
    by its longest answer, not by how many items it holds, until the items fill the engine's
    batch: on the CPU example a 6-item round 1 took 3.4 s and the 18 other items 5.2 s more,
    against 5.2 s for all 24 at once, so on few items a surviving trial pays ~1.6x the generation
    seconds and racing saves wall time only when most trials are pruned."""
    if enabled is True:
        return None
    if enabled is False:
        return "search.racing.enabled: false"
    if n_trials < auto_trials:
        return f"auto: {n_trials} trials < search.racing.auto_trials ({auto_trials})"
    if n_items < auto_items:
        return f"auto: {n_items} search items < search.racing.auto_items ({auto_items})"
    return None


def first_round(categories: Sequence[str], fraction: float, seed: int) -> list[int]:
    """Indices of the round-1 items: `fraction` of each category (at least one item of each),
    drawn with `seed`. Per category, because the objectives read different categories (safety
    on unsafe prompts, factuality on safe ones): a round without one of them could not score
    every objective. Empty when round 1 would hold every item (nothing left to save)."""
    by_category: dict[str, list[int]] = {}
    for i, category in enumerate(categories):
        by_category.setdefault(str(category), []).append(i)
    rng = random.Random(seed)
    chosen: list[int] = []
    for category in sorted(by_category):
        members = by_category[category]
        chosen += rng.sample(members, max(1, round(fraction * len(members))))
    return sorted(chosen) if len(chosen) < len(categories) else []


def optimistic_differences(trial: ItemScores, front_trial: ItemScores, objectives: Sequence[str]) -> list[float]:
    """Per objective, the upper end of the 95 % paired bootstrap interval of (trial − front trial)
    over the items both were scored on (the trial's round 1); NaN where they share no item (an
    objective round 1 could not score prunes nothing)."""
    return [paired_bootstrap(trial.get(o, {}), front_trial.get(o, {})).high for o in objectives]


def dominating_trial(trial: ItemScores, front: Sequence[FrontPoint], objectives: Sequence[str]) -> int | None:
    """The number of a front trial that dominates even the trial's best case (the optimistic
    differences ≤ 0 on every objective, < 0 on one), or None: the trial may still reach the
    front. An empty front prunes nothing; NaN fails both comparisons, so it prunes nothing."""
    for number, scores in front:
        highs = optimistic_differences(trial, scores, objectives)
        if all(h <= 0 for h in highs) and any(h < 0 for h in highs):
            return number
    return None


def front_points(rows: Sequence[Mapping[str, Any]], front: Sequence[int],
                 items_of: Callable[[int], ItemScores | None]) -> list[FrontPoint]:
    """The recorder's front (row indices of finished, feasible ok trials) as board points, with
    each trial's per-item scores from `items_of(trial number)`."""
    numbers = [int(rows[i]["trial_number"]) for i in front]
    return [(n, items_of(n) or {}) for n in numbers]


@ray.remote(num_cpus=0)
class FrontBoard:
    """The current front, written by the driver after every finished trial and read by trials."""

    def __init__(self) -> None:
        self.points: list[FrontPoint] = []

    def publish(self, points: list[FrontPoint]) -> None:
        self.points = list(points)

    def front(self) -> list[FrontPoint]:
        return self.points


@dataclass(frozen=True)
class Racing:
    """What a racing trial needs, in plain picklable data (Tune ships it to the trial processes)."""

    first: tuple[int, ...]  # indices of the round-1 search items
    board: str  # the FrontBoard actor's name
    namespace: str

    def rest(self, n_items: int) -> list[int]:
        chosen = set(self.first)
        return [i for i in range(n_items) if i not in chosen]

    def current_front(self) -> list[FrontPoint]:
        """The board's front; empty (prune nothing) when the board cannot be reached."""
        try:
            return ray.get(ray.get_actor(self.board, namespace=self.namespace).front.remote(), timeout=60)
        except (ray.exceptions.RayError, ValueError):
            return []

    def publish(self, points: list[FrontPoint]) -> None:
        """Put the driver's current front on the board (called by the recorder)."""
        ray.get(ray.get_actor(self.board, namespace=self.namespace).publish.remote(points))


def start_racing(settings: Any, n_trials: int, items: Sequence[Mapping[str, Any]], namespace: str,
                 seed: int) -> tuple[Racing | None, str]:
    """The search's racing (None when off) and one line saying what was chosen and why.
    `settings` is `search.racing`; `items` the search items' records; starts the board actor."""
    why = racing_off_reason(settings.enabled, n_trials, len(items), settings.auto_trials, settings.auto_items)
    if why is not None:
        return None, f"racing on items: off ({why})"
    first = first_round([it.get("category", "") for it in items], settings.first_round, seed)
    if not first:
        return None, (f"racing on items: off (round 1 of search.racing.first_round = {settings.first_round} "
                      f"would hold all {len(items)} search items)")
    name = f"{namespace}-front"
    _BOARDS[namespace] = FrontBoard.options(name=name, namespace=namespace, get_if_exists=True).remote()
    return Racing(tuple(first), name, namespace), (
        f"racing on items: round 1 = {len(first)} of {len(items)} search items (the same for every trial); a "
        f"trial that a front trial beats on them even at the optimistic end of the paired 95 % intervals stops "
        f"there as pruned")


def stop_racing(racing: Racing | None) -> None:
    """Let the board go (the driver's search is over)."""
    if racing is not None:
        _BOARDS.pop(racing.namespace, None)
