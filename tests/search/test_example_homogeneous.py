"""A homogeneous variant (`dpo-s1`: DPO again with seed 1) trained for real, shortened.

The merge study compares two runs of one method with two different methods, so the
re-run must be a plain checkpoint of the base like the others, recorded as seed 1, and
actually different from `dpo` (the seed changes the data order). The family is the
session's `example_models` (conftest: 2-step runs, dpo-s1 included), so this module
trains nothing of its own.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from merging import ModelFolder
from search.example import FAMILY_FILE, METADATA_FILE, SLANTS, homogeneous_settings, prepare_example

pytestmark = pytest.mark.slow


def _meta(folder: Path) -> dict:
    return json.loads((folder / METADATA_FILE).read_text())


def _stamps(paths: dict[str, Path]) -> dict[str, int]:
    return {n: (p / "model.safetensors").stat().st_mtime_ns for n, p in paths.items()}


def test_homogeneous_variant_is_a_bf16_checkpoint_of_the_base_recorded_as_seed_1(example_models):
    family = example_models
    assert list(family) == ["base", "dpo", "kto", "orpo", "dpo-s1"]
    assert family["dpo-s1"] == family["base"].parent / "dpo-s1"
    with ModelFolder(family["base"]) as base:
        shapes = {n: base.shape(n) for n in base.tensor_names()}
    with ModelFolder(family["dpo-s1"]) as rerun:
        assert {n: rerun.shape(n) for n in rerun.tensor_names()} == shapes
        assert all(rerun.dtype(n) == torch.bfloat16 for n in shapes)
    assert (family["dpo-s1"] / "tokenizer.json").exists()
    meta, plain = _meta(family["dpo-s1"]), _meta(family["dpo"])
    assert meta["method"] == "dpo" and meta["slant"] == SLANTS["dpo"]
    assert meta["seed"] == 1 and meta["hyperparameters"]["seed"] == 1 and plain["seed"] == 0
    assert meta["hyperparameters"] == asdict(homogeneous_settings("dpo", steps=meta["steps"]))
    assert meta["hyperparameters"] == plain["hyperparameters"] | {"seed": 1}  # the seed is the only difference
    assert len(meta["losses"]) == meta["steps"] and meta["data"]["sha256"] == plain["data"]["sha256"]


def test_the_seed_changes_the_weights(example_models):
    with ModelFolder(example_models["dpo"]) as a, ModelFolder(example_models["dpo-s1"]) as b:
        names = a.tensor_names()
        differing = sum(not torch.equal(a.get(n), b.get(n)) for n in names)
    # other batches in the same steps: most tensors end up elsewhere
    assert differing > len(names) // 2, f"only {differing} of {len(names)} tensors differ between dpo and dpo-s1"


def test_behaviour_profile_includes_the_rerun(example_models):
    summary = json.loads((example_models["base"].parent / FAMILY_FILE).read_text())
    assert list(summary["behaviour"]) == ["base", "dpo", "kto", "orpo", "dpo-s1"]
    assert {"base~dpo-s1", "dpo~dpo-s1"} <= set(summary["answers_differing"])
    assert len(_meta(example_models["dpo-s1"])["answers"]) == summary["prompts"]


def test_second_prepare_retrains_nothing(example_models):
    family = example_models
    variants = {n: p for n, p in family.items() if n != "base"}
    stamps, meta = _stamps(variants), _meta(family["dpo-s1"])
    again = prepare_example(family["base"].parent, steps=meta["steps"], profile_tokens=meta["profile_max_tokens"],
                            homogeneous=("dpo",))
    assert again == family and _stamps(variants) == stamps
    # without the option the standard family comes back and the re-run is left alone
    plain = prepare_example(family["base"].parent, steps=meta["steps"], profile=False)
    assert list(plain) == ["base", "dpo", "kto", "orpo"] and _stamps(variants) == stamps


@pytest.mark.parametrize("method", ["kto", "dpo", "orpo"])
def test_every_method_sees_other_batches_with_the_homogeneous_seed(method, smollm_base, tmp_path):
    """TRL's KTO trainer reads its data in order, so without our shuffle kto-s1 was a bit-identical
    copy of kto; this guards every method against a seed that changes nothing."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from search.example import DEFAULT_SETTINGS, build_trainer, load_preferences

    tokenizer, prefs = AutoTokenizer.from_pretrained(smollm_base), load_preferences()
    model = AutoModelForCausalLM.from_pretrained(smollm_base, dtype=torch.float32)
    first = []
    for settings in (DEFAULT_SETTINGS[method], homogeneous_settings(method)):
        trainer, _ = build_trainer(model, tokenizer, settings, prefs, str(tmp_path / str(settings.seed)))
        batch = next(iter(trainer.get_train_dataloader()))
        first.append({k: v.tolist() for k, v in batch.items() if k.endswith("input_ids")})  # ORPO: chosen_/rejected_
    assert first[0] != first[1]
