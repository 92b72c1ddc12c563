"""Merged tensors for an engine, produced where the engine's weights live.

Both backends hold a resident `Merger` next to their model (vLLM: inside its worker
process, because tensors cannot cross its RPC) and feed it plans. With staging on, the
whole plan is merged before the engine sees a tensor, so a plan that fails half-way
(NaN weights, a bad parameter) leaves the engine serving what it served before. With
staging off (memory-tight GPUs) tensors stream straight into the engine and a failure
leaves it half-loaded: the caller must reload a known model before generating again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from merging import Merger, MergePlan, parse_plan


class TimedIterator:
    """Yields from `source` and adds the time spent inside it to `seconds`."""

    def __init__(self, source: Iterator[tuple[str, torch.Tensor]]):
        self.source = source
        self.seconds = 0.0
        self.count = 0

    def __iter__(self) -> "TimedIterator":
        return self

    def __next__(self) -> tuple[str, torch.Tensor]:
        started = time.perf_counter()
        try:
            item = next(self.source)
        finally:
            self.seconds += time.perf_counter() - started
        self.count += 1
        return item


class WeightSource:
    """The held models, resident on `device`, as streams of (checkpoint name, tensor)."""

    def __init__(self, models: Mapping[str, str], base: str, device: str | torch.device = "cpu",
                 allow_pickle: bool = False):
        self.merger = Merger(dict(models), base=base, device=device, resident=True, allow_pickle=allow_pickle)

    def plan_tensors(self, plan: MergePlan | Mapping[str, Any], stage: bool) -> tuple[Iterator, float]:
        """The merged tensors of `plan` and the seconds already spent merging them."""
        if not isinstance(plan, MergePlan):
            plan = parse_plan(dict(plan), "plan sent to the serving worker")
        if not stage:
            return TimedIterator(self.merger.merge(plan)), 0.0
        started = time.perf_counter()
        merged = list(self.merger.merge(plan))
        return iter(merged), time.perf_counter() - started

    def model_tensors(self, key: str) -> Iterator[tuple[str, torch.Tensor]]:
        for name in self.merger.names:
            yield name, self.merger.tensor(key, name)

    def close(self) -> None:
        self.merger.close()
