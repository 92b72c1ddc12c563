"""Where a merge worker keeps its sources, and whether that fits: the estimate behind
`workers.sources` and the search's memory preflight.

A worker holds the base and every source so that a trial costs one pass over memory, next
to a serving engine that has already reserved its share of the device. Three places:

- "gpu": on the merge device (GPU memory; host memory on a CPU worker): fastest, and on a
  GPU it competes with the engine's reservation;
- "host": in host memory (pinned when a GPU consumes it), copied to the device tensor by
  tensor, bounded by host-to-device bandwidth;
- "disk": memory-mapped safetensors, read tensor by tensor; co-located workers and
  tensor-parallel ranks share the page cache instead of holding copies each.

The staged full copy of a merge (`serving.engine.stage_merges`: a failed merge leaves the
engine untouched) lives on the device with "gpu" sources and in host memory otherwise;
merging a tensor needs its inputs, a float32 result and a float32 temporary on the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Sources = Literal["gpu", "host", "disk"]
PLACES: tuple[Sources, ...] = ("gpu", "host", "disk")
GIB = 1 << 30


@dataclass(frozen=True)
class WorkerMemory:
    """Bytes one merge worker needs on its device and in host memory, and what they are."""

    device: int
    host: int
    device_parts: tuple[tuple[str, int], ...]
    host_parts: tuple[tuple[str, int], ...]

    def describe(self, where: Literal["device", "host"]) -> str:
        parts = self.device_parts if where == "device" else self.host_parts
        return " + ".join(f"{label} {gib(n)}" for label, n in parts if n) or "nothing"


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def worker_memory(*, model_bytes: list[int], largest_tensor_bytes: int, sources: Sources, staged: bool,
                  on_gpu: bool, engine_device_bytes: int, engine_host_bytes: int = 0) -> WorkerMemory:
    """The estimate for one worker. `model_bytes`: base and each source as stored (the
    merged model is the base's size); `engine_*_bytes`: what the serving engine reserves
    (vLLM: gpu_memory_utilization of the GPU; on CPU its weights and KV cache)."""
    if sources not in PLACES:
        raise ValueError(f"sources must be one of {', '.join(PLACES)}; got {sources!r}")
    held = sum(model_bytes)
    merged = model_bytes[0]
    working = (len(model_bytes) + 2) * largest_tensor_bytes * (1 if sources == "gpu" else 2)
    resident = {"gpu": held if on_gpu else 0, "host": 0, "disk": 0}[sources]
    staged_on_device = merged if staged and sources == "gpu" and on_gpu else 0
    device_parts = (("engine", engine_device_bytes), ("sources", resident), ("staged merge", staged_on_device),
                    ("per-tensor working set", working if on_gpu else 0))
    host_resident = held if sources == "host" or (sources == "gpu" and not on_gpu) else 0
    staged_on_host = merged if staged and not staged_on_device else 0
    host_parts = (("engine", engine_host_bytes), ("sources", host_resident), ("staged merge", staged_on_host))
    return WorkerMemory(sum(n for _, n in device_parts), sum(n for _, n in host_parts), device_parts, host_parts)


def pick_sources(*, model_bytes: list[int], largest_tensor_bytes: int, staged: bool, on_gpu: bool,
                 engine_device_bytes: int, device_total: int | None, host_available: int | None,
                 engine_host_bytes: int = 0, workers_sharing_host: int = 1) -> Sources:
    """The fastest place whose estimate fits (`workers.sources: auto`): gpu, then host, then
    disk. Unknown totals count as fitting."""
    for place in PLACES[:2]:
        need = worker_memory(model_bytes=model_bytes, largest_tensor_bytes=largest_tensor_bytes, sources=place,
                             staged=staged, on_gpu=on_gpu, engine_device_bytes=engine_device_bytes,
                             engine_host_bytes=engine_host_bytes)
        fits_device = device_total is None or not on_gpu or need.device <= device_total
        fits_host = host_available is None or need.host * workers_sharing_host <= host_available
        if fits_device and fits_host:
            return place
    return "disk"


def model_sizes(paths: list[str], *, allow_pickle: bool = False) -> tuple[list[int], int]:
    """Bytes of each model as stored (from the safetensors headers), and of the largest tensor."""
    from merging.checkpoint import ModelFolder

    sizes, largest = [], 0
    for path in paths:
        with ModelFolder(path, allow_pickle=allow_pickle) as folder:
            total = 0
            for name in folder.tensor_names():
                n = folder.dtype(name).itemsize
                for d in folder.shape(name):
                    n *= d
                total += n
                largest = max(largest, n)
            sizes.append(total)
    return sizes, largest
