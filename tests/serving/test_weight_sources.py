"""Where a worker keeps its sources (gpu | host | disk | auto) changes memory, never the merge."""

from __future__ import annotations

import pytest
import torch

from merging.memory import pick_sources, worker_memory
from serving.weights import WeightSource

PLAN = {"merge_method": "ties", "base_model": "base", "dtype": "float32",
        "models": [{"model": k, "parameters": {"weight": 0.5, "density": 0.5}} for k in ("dpo", "kto")]}


def test_every_place_gives_the_same_merge(tiny_family):
    models = {k: str(v) for k, v in tiny_family.items()}
    merged = {}
    for place in ("gpu", "host", "disk", "auto"):
        source = WeightSource(models, "base", "cpu", sources=place)
        try:
            tensors, _ = source.plan_tensors(PLAN, stage=True)
            merged[place] = dict(tensors)
            assert source.sources in ("gpu", "host", "disk")
            assert source.merger.resident == (source.sources != "disk")
        finally:
            source.close()
    for place in ("host", "disk", "auto"):
        assert all(torch.equal(merged[place][n], merged["gpu"][n]) for n in merged["gpu"])


def test_an_unknown_place_is_refused(tiny_family):
    with pytest.raises(ValueError, match="sources must be auto, gpu, host or disk"):
        WeightSource({k: str(v) for k, v in tiny_family.items()}, "base", "cpu", sources="ssd")


def test_auto_takes_the_fastest_place_that_fits():
    kw = dict(model_bytes=[100] * 4, largest_tensor_bytes=10, staged=True, on_gpu=True, engine_device_bytes=500)
    assert pick_sources(**kw, device_total=1060, host_available=10_000) == "gpu"  # 500 + 400 + 100 + 60
    assert pick_sources(**kw, device_total=1059, host_available=10_000) == "host"  # 500 + 120 on the GPU
    assert pick_sources(**kw, device_total=900, host_available=400) == "disk"     # host needs 400 + 100
    need = worker_memory(sources="disk", **kw)
    assert (need.device, need.host) == (620, 100)  # the staged merge waits on the host
