"""Alignment-vector geometry (merging.geometry) and its study outputs (search.studies.geometry).

Exact-number tests use dyadic base values and deltas (multiples of 1/8, small), so
base + delta is stored exactly in float32 and the deltas read back are exactly the ones
built; orthogonal deltas have disjoint supports, so their dot product is exactly zero.
"""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path

import pandas as pd
import pytest
import torch

import merging.geometry as geometry_module
from merging import IncompatibleModelsError, ModelFolder, alignment_geometry, geometry_from_tensors
from merging.geometry import Geometry, tensor_key
from search.studies import angles_frame, norms_frame, whole_model_summary, write_geometry
from tests.conftest import TINY_CONFIG, tiny_llama_state, write_folder

N_LAYERS = TINY_CONFIG["num_hidden_layers"]
GROUPS = ("attn", "mlp", "norm")
OUTSIDE = ("embed", "norm", "lm_head")


def _dyadic_base() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {n: torch.randint(-8, 9, t.shape, generator=g).float() / 4 for n, t in tiny_llama_state(0).items()}


def _signs_on(shape: torch.Size, parity: int, seed: int) -> torch.Tensor:
    """±0.5 on flat indices of one parity, 0 on the others: a known norm, and disjoint
    supports for the two parities (exactly orthogonal)."""
    g = torch.Generator().manual_seed(seed)
    flat = (torch.randint(0, 2, (math.prod(shape),), generator=g).float() * 2 - 1) * 0.5
    flat[torch.arange(flat.numel()) % 2 != parity] = 0.0
    return flat.reshape(shape)


@pytest.fixture
def exact_family(tmp_path: Path) -> dict[str, ModelFolder]:
    """base; a = base + d; twice = base + 2d; minus = base − d; ortho = base + e with e ⟂ d;
    same = base (zero alignment vector)."""
    base = _dyadic_base()
    d = {n: _signs_on(t.shape, 0, seed=k) for k, (n, t) in enumerate(sorted(base.items()))}
    e = {n: _signs_on(t.shape, 1, seed=1000 + k) for k, (n, t) in enumerate(sorted(base.items()))}
    states = {"base": base, "a": {n: base[n] + d[n] for n in base}, "twice": {n: base[n] + 2 * d[n] for n in base},
              "minus": {n: base[n] - d[n] for n in base}, "ortho": {n: base[n] + e[n] for n in base},
              "same": dict(base)}
    return {k: ModelFolder(write_folder(tmp_path / k, s), label=k) for k, s in states.items()}


def _sources(folders: dict[str, ModelFolder], keys: tuple[str, ...]) -> dict[str, ModelFolder]:
    return {k: folders[k] for k in keys}


def _angle(geo: Geometry, layer: int | None, group: str, a: str, b: str):
    [row] = [r for r in geo.angles if (r.layer, r.group, r.a, r.b) == (layer, group, a, b)]
    return row


def _norm(geo: Geometry, layer: int | None, group: str, model: str):
    [row] = [r for r in geo.norms if (r.layer, r.group, r.model) == (layer, group, model)]
    return row


# -- exact numbers ------------------------------------------------------------------------------
def test_known_angles_and_norm_ratio_in_every_group(exact_family):
    geo = alignment_geometry(exact_family["base"], _sources(exact_family, ("a", "twice", "minus", "ortho")))
    keys = {(r.layer, r.group) for r in geo.norms}
    assert len(keys) == N_LAYERS * len(GROUPS) + len(OUTSIDE) + 1
    for layer, group in keys:
        assert _angle(geo, layer, group, "a", "twice").degrees == pytest.approx(0.0, abs=1e-5)
        assert _angle(geo, layer, group, "a", "twice").cosine == pytest.approx(1.0, abs=1e-12)
        assert _angle(geo, layer, group, "a", "minus").degrees == pytest.approx(180.0, abs=1e-5)
        assert _angle(geo, layer, group, "a", "ortho").cosine == 0.0
        assert _angle(geo, layer, group, "a", "ortho").degrees == 90.0
        assert _angle(geo, layer, group, "twice", "ortho").degrees == 90.0
        assert _norm(geo, layer, group, "twice").l2 == pytest.approx(2 * _norm(geo, layer, group, "a").l2, rel=1e-15)
        assert _norm(geo, layer, group, "minus").l2 == _norm(geo, layer, group, "a").l2


def test_hand_computed_norms(exact_family):
    """d is ±0.5 on the even flat indices of each tensor: ||d||² = 0.25 · (number of even indices)."""
    geo = alignment_geometry(exact_family["base"], _sources(exact_family, ("a",)))
    h, i, kv = 16, 32, 8
    even = lambda n: (n + 1) // 2  # noqa: E731  (even flat indices of a tensor of n elements)
    attn = even(h * h) * 2 + even(kv * h) * 2
    mlp = even(i * h) * 3
    norm = even(h) * 2
    assert _norm(geo, 1, "attn", "a").l2 == math.sqrt(0.25 * attn)
    assert _norm(geo, 1, "attn", "a").n_params == 2 * h * h + 2 * kv * h
    assert _norm(geo, 0, "mlp", "a").l2 == math.sqrt(0.25 * mlp)
    assert _norm(geo, 2, "norm", "a").l2 == math.sqrt(0.25 * norm)
    assert _norm(geo, None, "embed", "a").l2 == math.sqrt(0.25 * even(40 * h))
    total = N_LAYERS * (attn + mlp + norm) + even(40 * h) * 2 + even(h)
    assert _norm(geo, None, "all", "a").l2 == pytest.approx(math.sqrt(0.25 * total), rel=1e-15)


def test_zero_alignment_vector_gives_nan_cosine_not_an_error(exact_family):
    geo = alignment_geometry(exact_family["base"], _sources(exact_family, ("a", "same")))
    for layer, group in {(r.layer, r.group) for r in geo.norms}:
        assert _norm(geo, layer, group, "same").l2 == 0.0
        row = _angle(geo, layer, group, "a", "same")
        assert math.isnan(row.cosine) and math.isnan(row.degrees)


# -- the concatenation rule, against torch directly -----------------------------------------------
def _direct(paths: dict[str, Path], names: list[str], a: str, b: str) -> tuple[float, float, float]:
    """(||d_a||, ||d_b||, cos) of the concatenated alignment vectors over `names`."""
    with ModelFolder(paths["base"]) as base, ModelFolder(paths[a]) as fa, ModelFolder(paths[b]) as fb:
        da = torch.cat([(fa.get(n).double() - base.get(n).double()).flatten() for n in names])
        db = torch.cat([(fb.get(n).double() - base.get(n).double()).flatten() for n in names])
    return da.norm().item(), db.norm().item(), (da @ db / (da.norm() * db.norm())).item()


def test_group_values_are_over_the_concatenation_of_the_groups_tensors(tiny_family):
    folders = {k: ModelFolder(p, label=k) for k, p in tiny_family.items()}
    geo = alignment_geometry(folders.pop("base"), folders)
    names = ModelFolder(tiny_family["base"]).tensor_names()
    per_tensor_mean_differs = False
    for layer, group in [(1, "attn"), (2, "mlp"), (0, "norm"), (None, "lm_head"), (None, "all")]:
        members = [n for n in names if group == "all" or tensor_key(n) == (layer, group)]
        for a, b in combinations(("dpo", "kto", "orpo"), 2):
            norm_a, norm_b, cos = _direct(tiny_family, members, a, b)
            row = _angle(geo, layer, group, a, b)
            assert row.cosine == pytest.approx(cos, rel=1e-12, abs=1e-14)
            assert row.degrees == pytest.approx(math.degrees(math.acos(cos)), rel=1e-10)
            assert _norm(geo, layer, group, a).l2 == pytest.approx(norm_a, rel=1e-12)
            assert _norm(geo, layer, group, b).l2 == pytest.approx(norm_b, rel=1e-12)
            if len(members) > 1:
                mean = sum(_direct(tiny_family, [n], a, b)[2] for n in members) / len(members)
                per_tensor_mean_differs |= abs(mean - cos) > 1e-6
    assert per_tensor_mean_differs  # the test tells concatenation from averaging per-tensor cosines


def test_chunked_accumulation_matches_one_chunk(monkeypatch):
    g = torch.Generator().manual_seed(3)
    base = {"model.layers.0.mlp.up_proj.weight": torch.randn(5, 11, generator=g),
            "model.layers.0.mlp.down_proj.weight": torch.randn(11, 5, generator=g)}
    tuned = {m: {n: t + torch.randn(t.shape, generator=g) for n, t in base.items()} for m in ("x", "y")}
    triples = lambda: [(n, t, [tuned["x"][n], tuned["y"][n]]) for n, t in base.items()]  # noqa: E731
    whole = geometry_from_tensors(["x", "y"], triples())
    monkeypatch.setattr(geometry_module, "CHUNK_ELEMENTS", 7)  # not a divisor of 55
    chunked = geometry_from_tensors(["x", "y"], triples())
    assert [r.l2 for r in chunked.norms] == pytest.approx([r.l2 for r in whole.norms], rel=1e-14)
    assert [r.cosine for r in chunked.angles] == pytest.approx([r.cosine for r in whole.angles], rel=1e-13)


# -- assignment of tensors to (layer, group) --------------------------------------------------------
def test_every_tensor_has_its_layer_and_group():
    expected_group = {"q_proj": "attn", "k_proj": "attn", "v_proj": "attn", "o_proj": "attn", "gate_proj": "mlp",
                      "up_proj": "mlp", "down_proj": "mlp", "input_layernorm": "norm",
                      "post_attention_layernorm": "norm"}
    for name in tiny_llama_state(0):
        parts = name.split(".")
        if parts[1] == "layers":
            assert tensor_key(name) == (int(parts[2]), expected_group[parts[-2]]), name
            assert tensor_key(name, "module")[0] == int(parts[2])
    assert tensor_key("model.embed_tokens.weight") == (None, "embed")
    assert tensor_key("model.norm.weight") == (None, "norm")
    assert tensor_key("lm_head.weight") == (None, "lm_head")
    assert tensor_key("model.layers.4.self_attn.k_proj.weight", "module") == (4, "k")
    assert tensor_key("model.layers.4.self_attn.q_norm.weight") == (4, "norm")  # Qwen3's q_norm is a norm
    with pytest.raises(ValueError, match="granularity"):
        tensor_key("lm_head.weight", "layer")  # type: ignore[arg-type]


def test_rows_cover_every_tensor_once(tiny_family):
    folders = {k: ModelFolder(p, label=k) for k, p in tiny_family.items()}
    base = folders.pop("base")
    state = tiny_llama_state(0)
    for granularity in ("group", "module"):
        geo = alignment_geometry(base, folders, granularity=granularity)
        expected: dict[tuple, int] = {}
        for name, t in state.items():
            key = tensor_key(name, granularity)
            expected[key] = expected.get(key, 0) + t.numel()
        for model in folders:
            got = {(r.layer, r.group): r.n_params for r in geo.norms if r.model == model and r.group != "all"}
            assert got == expected
            assert _norm(geo, None, "all", model).n_params == sum(t.numel() for t in state.values())
        assert len(geo.angles) == (len(expected) + 1) * 3
    module_groups = {r.group for r in alignment_geometry(base, folders, granularity="module").norms}
    assert module_groups == {"q", "k", "v", "o", "gate", "up", "down", "norm", "embed", "lm_head", "all"}


# -- tied heads and errors --------------------------------------------------------------------------
def test_tied_model_has_no_lm_head_rows(tmp_path):
    base = tiny_llama_state(0)
    tied_config = TINY_CONFIG | {"tie_word_embeddings": True}
    untied = {n: t + 0.01 for n, t in base.items()}
    tied = {n: t - 0.02 for n, t in base.items() if n != "lm_head.weight"}
    geo = alignment_geometry(ModelFolder(write_folder(tmp_path / "base", base), label="base"),
                             {"untied": ModelFolder(write_folder(tmp_path / "u", untied), label="untied"),
                              "tied": ModelFolder(write_folder(tmp_path / "t", tied, tied_config), label="tied")})
    assert [r.model for r in geo.norms if r.group == "lm_head"] == ["untied"]
    assert not [r for r in geo.angles if r.group == "lm_head"]
    head = base["lm_head.weight"].numel()
    assert _norm(geo, None, "all", "untied").n_params - _norm(geo, None, "all", "tied").n_params == head
    # The whole-model pair angle is over the tensors both store: d_tied = −2·d_untied there.
    assert _angle(geo, None, "all", "untied", "tied").degrees == pytest.approx(180.0, abs=1e-3)


def test_shape_mismatch_names_model_and_tensor(tmp_path):
    base = tiny_llama_state(0)
    bad = dict(base) | {"model.layers.1.mlp.up_proj.weight": torch.zeros(31, 16)}
    with pytest.raises(IncompatibleModelsError, match=r"broken: tensor model\.layers\.1\.mlp\.up_proj\.weight"):
        alignment_geometry(ModelFolder(write_folder(tmp_path / "base", base), label="base"),
                           {"broken": ModelFolder(write_folder(tmp_path / "bad", bad), label="broken")})


def test_needs_a_source(tiny_family):
    with pytest.raises(ValueError, match="at least one source"):
        alignment_geometry(ModelFolder(tiny_family["base"]), {})


# -- study outputs ------------------------------------------------------------------------------------
def test_write_geometry_outputs(tiny_family, tmp_path):
    paths = write_geometry({k: str(p) for k, p in tiny_family.items()}, "base", tmp_path / "out")
    assert set(paths) == {"norms_csv", "angles_csv", "html", "png"}
    assert all(p.is_file() and p.parent == tmp_path / "out" for p in paths.values())
    per_model = N_LAYERS * len(GROUPS) + len(OUTSIDE) + 1  # layer groups, non-layer tensors, "all"
    norms, angles = pd.read_csv(paths["norms_csv"]), pd.read_csv(paths["angles_csv"])
    assert len(norms) == per_model * 3 and len(angles) == per_model * 3  # 3 models, 3 pairs
    assert list(norms.columns) == ["layer", "group", "model", "l2", "n_params"]
    assert list(angles.columns) == ["layer", "group", "a", "b", "cosine", "degrees"]
    assert sorted(norms["layer"].dropna().unique()) == [0, 1, 2]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plotly" in paths["html"].read_text()[:20000].lower()


def test_summary_mentions_zero_vectors(exact_family):
    geo = alignment_geometry(exact_family["base"], _sources(exact_family, ("a", "ortho", "same")))
    text = whole_model_summary(norms_frame(geo), angles_frame(geo))
    assert "∠(a, ortho) = 90.00°" in text and "(zero vector)" in text and "||d_same|| = 0" in text
