"""End to end on the real small model: GGUF -> safetensors, a shortened DPO/KTO/ORPO run with TRL,
merges via the CLI and in memory, load and answer.

The variants are trained for `STEPS` steps only (the real example trains tens of steps per
method); that is enough to check the whole path — TRL trainers, the written folders, the
metadata and the behaviour check — in CI time, not to get variants that behave differently.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from conftest import EXAMPLE_PROFILE_TOKENS as PROFILE_TOKENS
from conftest import EXAMPLE_HOMOGENEOUS as HOMOGENEOUS
from conftest import EXAMPLE_STEPS as STEPS

from merging import Merger, ModelFolder, parse_plan
from run_search import main as soupsearch_main
from search.example import (
    FAMILY_FILE, METADATA_FILE, SLANTS, VARIANTS, answer, load_preferences, prepare_example, variant_settings,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def family(example_models) -> dict[str, Path]:
    """The shared short-trained family (conftest), without its homogeneous re-run."""
    return {k: example_models[k] for k in ("base", *VARIANTS)}


def test_prepared_base_is_smollm2_and_answers(family):
    with ModelFolder(family["base"]) as base:
        assert base.n_layers() == 30 and base.vocab_size() == 49152
        assert len(base.tensor_names()) == 272  # tied head: no lm_head.weight stored
        assert base.dtype("model.embed_tokens.weight") == torch.bfloat16
    assert "Paris" in answer(family["base"], ("What is the capital of France?",), max_new_tokens=16)[0]


def test_variants_are_trained_bf16_checkpoints_of_the_base_with_metadata(family):
    assert list(family) == ["base", "dpo", "kto", "orpo"]
    prefs = load_preferences()
    with ModelFolder(family["base"]) as base:
        shapes = {n: base.shape(n) for n in base.tensor_names()}
        for method in VARIANTS:
            folder = family[method]
            assert (folder / "tokenizer.json").exists() and (folder / "generation_config.json").exists()
            with ModelFolder(folder) as variant:
                assert {n: variant.shape(n) for n in variant.tensor_names()} == shapes
                assert all(variant.dtype(n) == torch.bfloat16 for n in shapes)
                changed = sum(not torch.equal(variant.get(n), base.get(n)) for n in shapes)
            assert changed > len(shapes) // 2, f"{method}: only {changed} tensors moved"
            meta = json.loads((folder / METADATA_FILE).read_text())
            assert meta["method"] == method and meta["slant"] == SLANTS[method]
            assert meta["steps"] == STEPS and len(meta["losses"]) == STEPS
            assert meta["hyperparameters"] == asdict(variant_settings(STEPS)[method])
            assert meta["data"]["sha256"] == prefs.sha256 and meta["data"]["rows"] == len(prefs)
            assert meta["seed"] == 0 and meta["wall_seconds"] > 0 and meta["final_loss"] > 0
            assert set(meta["behaviour"]) == {"mean_words", "refusal_unsafe", "refusal_safe", "follow_up", "caveat"}
            assert len(meta["answers"]) == 12
    summary = json.loads((family["base"].parent / FAMILY_FILE).read_text())
    assert {"base", *VARIANTS} <= set(summary["behaviour"]) and "dpo~kto" in summary["answers_differing"]
    # the variants load with transformers as plain checkpoints
    assert answer(family["dpo"], ("What is the capital of France?",), max_new_tokens=8)[0]


def test_second_prepare_reuses_the_cache(family):
    stamps = {m: (family[m] / "model.safetensors").stat().st_mtime_ns for m in VARIANTS}
    prepare_example(family["base"].parent, steps=STEPS, profile_tokens=PROFILE_TOKENS, homogeneous=HOMOGENEOUS)
    assert stamps == {m: (family[m] / "model.safetensors").stat().st_mtime_ns for m in VARIANTS}


def test_cli_merge_writes_a_loadable_model_that_still_answers(family, tmp_path):
    config = tmp_path / "merge.yaml"
    config.write_text(
        f"merge_method: alignment_slerp\nbase_model: {family['base']}\n"
        f"models:\n  - model: {family['dpo']}\n  - model: {family['kto']}\n"
        "parameters:\n  t: [0.3, 0.7]\ndtype: bfloat16\n")
    out = tmp_path / "merged"
    assert soupsearch_main(["merge", str(config), str(out), "--max-shard-size", "100MB"]) == 0
    assert (out / "model.safetensors.index.json").exists() and (out / "tokenizer.json").exists()
    assert (out / "soupsearch_merge.yaml").read_text() == config.read_text()
    # 2-step variants do not answer reliably (Adam's first steps move every weight by ±lr),
    # so this checks that the merged folder loads and generates text, not what it says.
    assert len(answer(out, ("What is the capital of France?",), max_new_tokens=16)[0].split()) >= 3
    assert soupsearch_main(["merge", str(config), str(out)]) == 2  # exists, no --force


def test_in_memory_merge_of_real_model_matches_the_source_at_the_endpoint(family):
    merger = Merger({k: str(v) for k, v in family.items()}, base="base")
    plan = parse_plan({"merge_method": "linear", "models": [{"model": "orpo", "parameters": {"weight": 1.0}},
                                                            {"model": "kto", "parameters": {"weight": 0.0}}]})
    merged = merger.merge_to_dict(plan)
    with ModelFolder(family["orpo"]) as a:
        assert all(torch.equal(merged[n], a.get(n)) for n in merger.names)  # linear [1, 0] gives model 1 exactly


def test_demo_command_merges_the_example_with_every_method(family, tmp_path, capsys):
    args = ["demo", "--data-dir", str(family["base"].parent), "--out-dir", str(tmp_path), "--train-steps", str(STEPS)]
    # every method on the real model is `run_search.py demo`'s job (minutes); three show the path
    assert soupsearch_main([*args, "--methods", "linear,ties,no_such_method"]) == 2
    assert soupsearch_main([*args, "--methods", "linear,ties,alignment_slerp"]) == 0
    printed = capsys.readouterr().out
    assert "no_such_method" in printed and "alignment_slerp" in printed and "orpo" in printed
    timings = (tmp_path / "merge_timings.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in timings] == ["method", "linear", "ties", "alignment_slerp"]
    assert (tmp_path / "merged-alignment_slerp" / "model.safetensors").exists()
