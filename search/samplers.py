"""The Optuna sampler and the Ray Tune searcher of a search: sized to its budget, told its constraints.

- NSGA-II evolves a population; Optuna's default of 50 is above the default budget of
  24 trials, where the whole search would be its random first generation. The population
  follows `search.n_trials` (`nsga2_population`) unless `search.population` sets it.
- Constraints (`search.constraints`) reach the sampler, not only the front filter:
  Ray's OptunaSearch tells Optuna the objective values and nothing else, so the searcher
  here records each constraint's violation on the Optuna trial (`Trial.set_constraint`,
  ≤ 0 feasible) before that tell. TPE then models infeasible trials as bad ones and
  NSGA-II ranks by constrained domination, and both steer the budget to feasible merges.
  (Optuna 5 reads constraints from the trial; its `constraints_func` argument is
  deprecated, and would only compute the same values later from the same result.)
- A trial with NaN objectives (failed, nothing scored) is recorded as FAIL; one that racing
  on items stopped after its first round (`status: pruned`, search/racing.py) as PRUNED.
- Tune pickles the searcher with its sampler (when the Tuner starts, and in its
  checkpoints); Optuna 5.1's NSGA-II holds a thread lock that cannot be pickled, so it
  runs here as a subclass that leaves the lock out.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from search.console import console
from search.config import SearchConfig, SpaceConfig
from search.constraints import Constraint
from search.pareto import is_finite_number
from search.space import default_point, grid_points, suggest_plan
from search.study_labels import trial_attributes


#: NSGA-II's population when derived from the budget: about n_trials / GENERATIONS,
#: between MIN_POPULATION (below it crossover has too few parents to mix) and Optuna's 50.
GENERATIONS = 4
MIN_POPULATION = 4
MAX_POPULATION = 50
TPE_STARTUP = 10  # Optuna's default n_startup_trials


def tpe_startup_trials(n_trials: int) -> int:
    """Random trials before TPE models anything: Optuna's 10, or a third of a smaller budget
    (at least 3), so a 10-trial search is not random search from start to end."""
    return min(TPE_STARTUP, max(3, n_trials // 3))


def nsga2_population(n_trials: int, population: int | None = None) -> int:
    """The configured population, else one that gives `n_trials` about GENERATIONS
    generations (24 trials → 6 per generation)."""
    if population is not None:
        return population
    return min(MAX_POPULATION, max(MIN_POPULATION, n_trials // GENERATIONS))


class NSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II that survives pickling: its generation cache's thread lock is left
    out and made anew when unpickled (a lock means nothing in another process or after a
    restore). It keeps Optuna's class name, which keys the generation of every trial in the
    study's records (`NSGAIISampler:generation`)."""

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_thread_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()


def make_sampler(config: SearchConfig, sources: list[str]) -> optuna.samplers.BaseSampler:
    """The sampler `search.sampler` names, seeded with `search.seed`; says what it chose."""
    s = config.search
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's `group`
    if s.sampler == "tpe":
        startup = tpe_startup_trials(s.n_trials)
        console.print(f"sampler: TPE, {startup} random start-up trial(s) of {s.n_trials}")
        return optuna.samplers.TPESampler(seed=s.seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=startup)
    if s.sampler == "nsga2":
        population = nsga2_population(s.n_trials, s.population)
        how = "search.population" if s.population is not None else f"from n_trials = {s.n_trials}"
        console.print(f"sampler: NSGA-II, population {population} ({how}; "
                      f"{math.ceil(s.n_trials / population)} generation(s)){_evolved_note(config, sources)}")
        return NSGAIISampler(seed=s.seed, population_size=population)
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    points = grid_points(config.space, sources)
    grid = {k: sorted({p[k] for p in points}, key=str) for k in points[0]}
    return optuna.samplers.GridSampler(grid, seed=s.seed)


def evolved_parameters(space: SpaceConfig, sources: list[str]) -> tuple[list[str], int]:
    """The parameters every method in `space` suggests, and how many there are in all.
    NSGA-II evolves only the shared ones (Optuna's intersection search space) and draws
    the others at random; the methods' parameters differ, so over several methods it
    evolves little but the method, and that one alone it re-draws at random (mutation
    probability 1/number of evolved parameters): random search."""
    names = [set(default_point(m, space, sources, n_layers=64)) for m in space.methods]
    return sorted(set.intersection(*names)), len(set.union(*names))


def _evolved_note(config: SearchConfig, sources: list[str]) -> str:
    shared, every = evolved_parameters(config.space, sources)
    if len(shared) == every:
        return ""
    if len(shared) <= 1:
        return ("; the methods share no parameter but the method, so NSGA-II, which evolves only shared "
                "parameters, samples like random search: use tpe, or nsga2 over one method")
    return f"; it evolves the {len(shared)} parameters every method has and draws the other {every - len(shared)} at random"


def record_constraints(trial: Any, scores: Mapping[str, object], constraints: Sequence[Constraint],
                       references: Mapping[str, Mapping[str, float]]) -> list[float]:
    """Store each constraint's violation (≤ 0 feasible) on the Optuna `trial` before it is
    told, where TPE and NSGA-II read it; returns the values."""
    values = []
    for constraint in dict.fromkeys(constraints):
        values.append(constraint.violation(scores, references))
        trial.set_constraint(str(constraint), values[-1])
    return values


def make_searcher(base: type) -> type:
    """`base` (Ray's OptunaSearch) that records a trial with NaN objectives as FAIL and a trial
    stopped by racing on items as PRUNED, tells Optuna each finished trial's constraint
    violations and keeps its method, status and intervals as user attributes
    (`search.study_labels.trial_attributes`).

    Stock OptunaSearch tells Optuna COMPLETE with the NaN values, Optuna refuses them, and
    the trial stays RUNNING in the storage forever. Constraint bounds that name models
    (`best_source`, `base`, a source) are resolved from `references`, the base's and the
    sources' scores, known before the search starts."""

    class FailureAwareOptunaSearch(base):
        def __init__(self, *args: Any, constraints: Sequence[Constraint] = (),
                     references: Mapping[str, Mapping[str, float]] | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._constraints = list(constraints)
            self._references = dict(references or {})

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            metrics = self.metric if isinstance(self.metric, list) else [self.metric]
            done = trial_id in self._completed_trials or trial_id not in self._ot_trials
            if not done and (result is not None or error):
                for key, value in trial_attributes(result, metrics).items():
                    self._ot_trials[trial_id].set_user_attr(key, value)
            if result is not None and result.get("status") == "pruned":
                # stopped after a racing round (search/racing.py): no result, no error is Ray's PRUNED;
                # its round-1 scores are not final, so they are neither values nor constraints
                result, error = None, False
            elif result is not None and any(not is_finite_number(result.get(m)) for m in metrics):
                result, error = None, True
            if result is not None and self._constraints and not done:
                record_constraints(self._ot_trials[trial_id], result, self._constraints, self._references)
            super().on_trial_complete(trial_id, result=result, error=error)

    return FailureAwareOptunaSearch


@dataclass
class PlanSpace:
    """The define-by-run space as a picklable object (Tune checkpoints the searcher with it)."""

    space: Any
    sources: list[str]
    base: str
    n_layers: int
    pairwise: bool = False
    merge_seed: int = 0

    def __call__(self, trial: Any) -> dict[str, Any]:
        # The Optuna trial number names the trial everywhere (files, tables): it is unique
        # across resumed runs of one study, unlike Tune's per-run trial ids.
        return {"plan": suggest_plan(trial, self.space, self.sources, self.base, self.n_layers,
                                     pairwise=self.pairwise, merge_seed=self.merge_seed),
                "trial_number": trial.number}
