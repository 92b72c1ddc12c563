"""The Ray Tune + Optuna search over merge plans: config, space, samplers, trials on a worker
pool, results with intervals, held-out validation of the front, export, and the studies and
example family built on the same machinery (see docs/architecture.md).

What other code (the CLI, benches, tests) may import from `search`, by name from here:

- the config: `SearchConfig`, `SearchConfigError`, `load_search_config`, `parse_search_config`;
- running: `run_search` (a search, or the soups baselines), `run_optuna`, `open_experiment` and
  `Experiment`, `run_preflight` and `PreflightError`, `resolve_models`, `reference_items`,
  `FixedPlans` and `run_soups`, `evaluate_plan`, `recover_rows`, `close_pool`;
- the files of a run: `read_references`, `objective_health`;
- exporting one merge of the front: `ExportError` (`search.export.export` does it; the module
  `search.export` shares that name, so the function is not re-exported here);
- the subpackages `search.studies` and `search.example`, each with its own public `__init__`.

Modules are imported on first use of a name (a config check does not start Ray).
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "SearchConfig": "search.config", "SearchConfigError": "search.config",
    "load_search_config": "search.config", "parse_search_config": "search.config",
    "run_search": "search.driver", "run_optuna": "search.driver",
    "Experiment": "search.experiment", "open_experiment": "search.experiment",
    "run_preflight": "search.experiment", "reference_items": "search.experiment",
    "PreflightError": "search.preflight", "resolve_models": "search.models",
    "FixedPlans": "search.fixed_plans", "run_soups": "search.fixed_plans",
    "evaluate_plan": "search.trial", "recover_rows": "search.resume", "close_pool": "search.pool",
    "read_references": "search.results", "objective_health": "search.health",
    "ExportError": "search.export",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'search' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))
