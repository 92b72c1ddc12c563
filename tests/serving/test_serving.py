"""Serving backends on the real small model: weights swapped in place, answers follow them.

Every backend must give, after `apply_plan(linear [1, 0])`, exactly the answers of the
first source served as-is, change its answers for a different plan, return to the base's
answers when the base is loaded again, and keep serving its previous weights when a
plan fails half-way (staged merges).
"""

from __future__ import annotations

import pytest

from merging import NonFiniteMergeError, parse_plan
from runtime import vllm_available
from serving import EngineSettings, GenerationSettings, ModelSet, ServingError, create_backend

pytestmark = pytest.mark.slow

PROMPTS = ["What is the capital of France?", "Give me one tip for sleeping better.",
           "Name three primary colours.", "How do I boil an egg?"]
CONVERSATIONS = [[{"role": "user", "content": p}] for p in PROMPTS]
SETTINGS = GenerationSettings(max_tokens=24, batch_size=4)


@pytest.fixture(scope="module")
def model_set(smollm_family) -> ModelSet:
    return ModelSet(dict(smollm_family), base="base")


BACKEND_NAMES = ["transformers", pytest.param("vllm", marks=pytest.mark.skipif(
    not vllm_available(), reason="vLLM not installed (bash setup.sh --vllm)"))]


@pytest.fixture(scope="module", params=BACKEND_NAMES)
def engine(request, model_set):
    backend = create_backend(request.param, model_set, EngineSettings(threads=2, max_model_len=512))
    yield backend
    backend.close()


def linear(weights: dict[str, float]) -> dict:
    return {"merge_method": "linear", "dtype": "bfloat16",
            "models": [{"model": k, "parameters": {"weight": w}} for k, w in weights.items()]}


def test_plan_swaps_change_answers_and_reproduce_sources(engine):
    base_answers = engine.generate(CONVERSATIONS, SETTINGS)
    assert "Paris" in base_answers[0]

    timing = engine.use_model("a")
    assert timing.tensors == 272 and timing.merge_s == 0
    a_answers = engine.generate(CONVERSATIONS, SETTINGS)

    timing = engine.apply_plan(parse_plan(linear({"a": 1.0, "b": 0.0})))
    assert timing.tensors == 272 and timing.merge_s > 0
    assert engine.generate(CONVERSATIONS, SETTINGS) == a_answers  # bit-identical weights, greedy decoding

    engine.apply_plan(parse_plan(linear({"a": 0.0, "b": 1.0})))
    b_answers = engine.generate(CONVERSATIONS, SETTINGS)
    assert b_answers != a_answers

    engine.apply_plan(parse_plan({"merge_method": "ties", "base_model": "base", "dtype": "bfloat16",
                                  "models": [{"model": "a", "parameters": {"weight": 1.0, "density": 0.5}},
                                             {"model": "b", "parameters": {"weight": 1.0, "density": 0.5}}]}))
    assert all(isinstance(a, str) and a for a in engine.generate(CONVERSATIONS, SETTINGS))

    engine.use_model("base")
    assert engine.generate(CONVERSATIONS, SETTINGS) == base_answers  # nothing of the merges lingers


def test_swapped_engine_answers_like_an_engine_started_on_the_same_weights(engine, model_set):
    """The strongest check that a swap replaced *every* weight the forward pass uses
    (packed GEMM handles and tied heads included, not only the parameters)."""
    engine.use_model("b")
    swapped = engine.generate(CONVERSATIONS, SETTINGS)
    fresh = create_backend(engine.name, ModelSet(dict(model_set.models), base="b"),
                           EngineSettings(threads=2, max_model_len=512))
    try:
        assert fresh.generate(CONVERSATIONS, SETTINGS) == swapped
    finally:
        fresh.close()


def test_failed_plan_leaves_the_engine_serving_its_previous_weights(engine):
    engine.use_model("a")
    before = engine.generate(CONVERSATIONS[:2], SETTINGS)
    overflowing = parse_plan(linear({"a": 1e38, "b": 1e38}) | {"parameters": {"normalize": False}})  # inf at once
    with pytest.raises((NonFiniteMergeError, ServingError), match="NaN or inf"):
        engine.apply_plan(overflowing)
    assert engine.generate(CONVERSATIONS[:2], SETTINGS) == before


def test_unknown_model_key_is_a_clear_error(engine):
    with pytest.raises(ServingError, match="'dpo' is not held"):
        engine.use_model("dpo")


def test_model_set_rejects_a_folder_that_is_not_a_model(tmp_path, smollm_base):
    with pytest.raises(ServingError, match="model 'x'.*no config.json"):
        ModelSet({"base": smollm_base, "x": tmp_path}, base="base")
