"""The CUDA merge path: every method on the GPU agrees with the CPU (skipped without a GPU).

CI has no GPU, so these run only where one is lent. DARE's
and DELLA's masks are counter-based hashes of the seed and position, the same on every
device, so they are compared like the deterministic methods; for them we also check what
a user relies on: the same seed gives the same merge, another seed another merge.
"""

from __future__ import annotations

import pytest
import torch

from merging import Merger, method_names, parse_plan
from search.example import example_plan

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
RANDOMIZED = {"dare_linear", "dare_ties", "della", "della_linear"}


def _merge(family, method: str, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    plan = example_plan(method, "base", ["dpo", "kto", "orpo"]) | {"seed": seed}
    merger = Merger({k: str(v) for k, v in family.items()}, base="base", device=device, resident=True)
    try:
        return {n: t.float().cpu() for n, t in merger.merge_to_dict(parse_plan(plan, method)).items()}
    finally:
        merger.close()


@pytest.mark.parametrize("method", sorted(method_names()))
def test_cuda_merge_matches_cpu(tiny_family, method):
    cpu, gpu = _merge(tiny_family, method, "cpu"), _merge(tiny_family, method, "cuda")
    assert cpu.keys() == gpu.keys()
    for name in cpu:  # float32 tiny models; SVD-based methods differ by solver round-off only
        torch.testing.assert_close(gpu[name], cpu[name], atol=2e-5, rtol=2e-4, msg=f"{method}: {name}")


@pytest.mark.parametrize("method", sorted(RANDOMIZED))
def test_cuda_seeded_merges_are_reproducible(tiny_family, method):
    first, again = _merge(tiny_family, method, "cuda", seed=3), _merge(tiny_family, method, "cuda", seed=3)
    other = _merge(tiny_family, method, "cuda", seed=4)
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert any(not torch.equal(first[n], other[n]) for n in first)


def test_resident_merger_keeps_sources_and_results_on_the_gpu(tiny_family):
    merger = Merger({k: str(v) for k, v in tiny_family.items()}, base="base", device="cuda", resident=True)
    try:
        assert merger.tensor("dpo", "model.norm.weight").device.type == "cuda"
        merged = dict(merger.merge(parse_plan(example_plan("ties", "base", ["dpo", "kto"]), "ties")))
        assert {t.device.type for t in merged.values()} == {"cuda"}
    finally:
        merger.close()
