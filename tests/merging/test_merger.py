"""The in-memory Merger on real safetensors folders: resident and lazy, seeds, NaN guard, errors."""

import pytest
import torch

from merging import IncompatibleModelsError, Merger, NonFiniteMergeError, PlanError, parse_plan
from merging import merger as merger_module
from merging.methods import dare  # noqa: F401  (a broken module fails this file, never skips it)
from merging.checkpoint import ModelFolder
from conftest import tiny_llama_state, write_folder


def plan(method="task_arithmetic", **extra):
    data = {"merge_method": method, "base_model": "base",
            "models": [{"model": "dpo", "parameters": {"weight": 0.7}}, {"model": "kto", "parameters": {"weight": 0.3}}]}
    return parse_plan({**data, **extra})


def test_resident_merge_equals_the_formula_on_every_tensor(tiny_family):
    merger = Merger({k: str(v) for k, v in tiny_family.items()}, base="base")
    merged = merger.merge_to_dict(plan(parameters={"lambda": 0.5}))
    b, d, k = (ModelFolder(tiny_family[x]) for x in ("base", "dpo", "kto"))
    assert sorted(merged) == b.tensor_names()
    for name, tensor in merged.items():
        expected = b.get(name) + 0.5 * (0.7 * (d.get(name) - b.get(name)) + 0.3 * (k.get(name) - b.get(name)))
        assert torch.allclose(tensor, expected, atol=1e-6), name


def test_lazy_and_resident_give_identical_results(tiny_family):
    models = {k: str(v) for k, v in tiny_family.items()}
    p = plan()
    resident = Merger(models, base="base", resident=True).merge_to_dict(p)
    lazy = Merger(models, base="base", resident=False).merge_to_dict(p)
    assert all(torch.equal(resident[n], lazy[n]) for n in resident)


def test_chunked_elementwise_path_matches_whole_tensor_path(tiny_family, monkeypatch):
    models = {k: str(v) for k, v in tiny_family.items()}
    whole = Merger(models, base="base").merge_to_dict(plan("linear", models=[
        {"model": "dpo", "parameters": {"weight": 0.7}}, {"model": "kto", "parameters": {"weight": 0.3}}]))
    monkeypatch.setattr(merger_module, "CHUNK_ELEMENTS", 7)  # forces many uneven chunks
    chunked = Merger(models, base="base").merge_to_dict(plan("linear", models=[
        {"model": "dpo", "parameters": {"weight": 0.7}}, {"model": "kto", "parameters": {"weight": 0.3}}]))
    assert all(torch.allclose(whole[n], chunked[n], atol=1e-7) for n in whole)


def test_output_dtype_follows_plan(tiny_family):
    merger = Merger({k: str(v) for k, v in tiny_family.items()}, base="base")
    merged = merger.merge_to_dict(plan(dtype="bfloat16"))
    assert {t.dtype for t in merged.values()} == {torch.bfloat16}


def test_randomized_method_reproducible_per_seed(tiny_family):
    merger = Merger({k: str(v) for k, v in tiny_family.items()}, base="base")
    p = lambda seed: parse_plan({"merge_method": "dare_linear", "base_model": "base", "seed": seed,
                                 "models": [{"model": "dpo", "parameters": {"weight": 1.0, "density": 0.3}}]})
    a, b, c = merger.merge_to_dict(p(1)), merger.merge_to_dict(p(1)), merger.merge_to_dict(p(2))
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(a[name], b[name]) and not torch.equal(a[name], c[name])


def test_nan_in_merge_is_reported_with_tensor(tiny_family):
    merger = Merger({k: str(v) for k, v in tiny_family.items()}, base="base")
    with pytest.raises(NonFiniteMergeError, match=r"task_arithmetic: merged tensor .* NaN or inf"):
        merger.merge_to_dict(plan(parameters={"lambda": 1e38}, dtype="float16"))


def test_nan_in_source_is_refused_at_load(tmp_path, tiny_family):
    state = tiny_llama_state(9)
    state["model.norm.weight"][3] = float("nan")
    bad = write_folder(tmp_path / "nan", state)
    with pytest.raises(ValueError, match=r"nanmodel: tensor model\.norm\.weight contains NaN"):
        Merger({"base": str(tiny_family["base"]), "nanmodel": str(bad)}, base="base")


def test_plan_referring_to_unloaded_model(tiny_family):
    merger = Merger({"base": str(tiny_family["base"]), "dpo": str(tiny_family["dpo"])}, base="base")
    with pytest.raises(PlanError, match="'kto' is not loaded"):
        merger.merge_to_dict(plan())


def test_incompatible_sources_fail_before_merging(tmp_path, tiny_family):
    state = tiny_llama_state(0)
    state["model.norm.weight"] = torch.ones(17)
    other = write_folder(tmp_path / "odd", state)
    with pytest.raises(IncompatibleModelsError, match=r"odd: tensor model\.norm\.weight has shape \[17\]"):
        Merger({"base": str(tiny_family["base"]), "odd": str(other)}, base="base")
