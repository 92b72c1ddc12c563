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
from merging.memory import PLACES, model_sizes, pick_sources


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
    """The held models as streams of (checkpoint name, tensor), kept where `sources` says
    (merging.memory: "gpu" on the merge device, "host" in pinned host memory, "disk"
    memory-mapped; "auto" picks the fastest that fits next to the engine, which has already
    reserved its memory when this is built)."""

    def __init__(self, models: Mapping[str, str], base: str, device: str | torch.device = "cpu",
                 allow_pickle: bool = False, sources: str = "auto", stage: bool = True):
        device = torch.device(device)
        if sources == "auto":
            sources = _auto_sources(list(models.values()), base_path=models[base], device=device,
                                    allow_pickle=allow_pickle, stage=stage)
        if sources not in PLACES:
            raise ValueError(f"sources must be auto, gpu, host or disk; got {sources!r}")
        self.sources = sources
        self.merger = Merger(dict(models), base=base, device=device, resident=sources != "disk",
                             offload=sources == "host", allow_pickle=allow_pickle)

    def plan_tensors(self, plan: MergePlan | Mapping[str, Any], stage: bool) -> tuple[Iterator, float]:
        """The merged tensors of `plan` and the seconds already spent merging them."""
        if not isinstance(plan, MergePlan):
            plan = parse_plan(dict(plan), "plan sent to the serving worker")
        if not stage:
            return TimedIterator(self.merger.merge(plan)), 0.0
        started = time.perf_counter()
        if self.sources == "gpu" or self.merger.device.type != "cuda":
            merged = list(self.merger.merge(plan))
        else:  # the staged copy waits in host memory, next to the sources
            merged = [(name, tensor.to("cpu", non_blocking=True).pin_memory()) for name, tensor in self.merger.merge(plan)]
        return iter(merged), time.perf_counter() - started

    def model_tensors(self, key: str) -> Iterator[tuple[str, torch.Tensor]]:
        for name in self.merger.names:
            yield name, self.merger.tensor(key, name)

    def close(self) -> None:
        self.merger.close()


def _auto_sources(paths: list[str], *, base_path: str, device: torch.device, allow_pickle: bool, stage: bool) -> str:
    """`sources: auto` from what is free now: on a GPU, the free device memory (the engine
    has reserved its share already); everywhere, the available host memory."""
    import psutil

    ordered = [base_path] + [p for p in paths if p != base_path]
    sizes, largest = model_sizes(ordered, allow_pickle=allow_pickle)
    on_gpu = device.type == "cuda"
    free = torch.cuda.mem_get_info(device)[0] if on_gpu else None
    return pick_sources(model_bytes=sizes, largest_tensor_bytes=largest, staged=stage, on_gpu=on_gpu,
                        engine_device_bytes=0, device_total=free, host_available=psutil.virtual_memory().available)
