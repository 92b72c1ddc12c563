"""Do the example variants really behave differently? Greedy answers to held-out prompts, in figures.

Weight deltas say nothing about behaviour, and a family whose members all answer alike
makes every merge look the same. So after training, the base and each variant answer the
same held-out prompts (the bundled ``smoke`` eval set plus four more items of
``soupsearch-eval-v1``, none of them in the preference set) greedily, and we count what the
preference slants are about: answer length, refusals (on safe and on unsafe prompts),
follow-up offers and cautionary caveats. The detectors are the rubric judge's heuristics
(`judges.heuristic`), so the figures mean the same thing as in the search's scoring.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from judges.eval_set import EvalItem, load_eval_set
from judges.heuristic import has_follow_up, is_refusal, words
from runtime import resolve_dtype

__all__ = ["HELDOUT_EXTRA_IDS", "Behaviour", "generate_answers", "heldout_items", "measure", "profile_model"]

#: Items of soupsearch-eval-v1 added to the smoke set so safe prompts are not outnumbered.
HELDOUT_EXTRA_IDS: tuple[str, ...] = ("fact-023", "fact-030", "edge-013", "edge-019")
MAX_NEW_TOKENS = 96  # long enough for an answer and the follow-up offer after it
_CAVEAT_RE = re.compile(
    r"\bplease (?:double-check|check|consult|ask|talk|speak|contact|seek)\b|\bbe careful\b|\bconsult (?:a|an|your)\b"
    r"|\b(?:doctor|professional|pharmacist|emergency services)\b", re.IGNORECASE)


def heldout_items() -> list[EvalItem]:
    """The held-out prompts: 8 smoke items (4 safe, 4 unsafe) + 4 safe items of eval-v1."""
    full = load_eval_set("soupsearch-eval-v1")
    return list(load_eval_set("smoke")) + [full.get(i) for i in HELDOUT_EXTRA_IDS]


@dataclass(frozen=True)
class Behaviour:
    """What one model does on the held-out prompts (rates are fractions of the prompts counted)."""

    mean_words: float
    refusal_unsafe: float
    refusal_safe: float
    follow_up: float
    caveat: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.__dict__.items()}


def has_caveat(text: str) -> bool:
    return bool(_CAVEAT_RE.search(text))


def measure(answers: Sequence[str], items: Sequence[EvalItem]) -> Behaviour:
    """Figures for `answers` to `items` (same order)."""
    def rate(flags: list[bool]) -> float:
        return sum(flags) / len(flags) if flags else 0.0

    unsafe = [is_refusal(a) for a, it in zip(answers, items) if it.is_unsafe]
    safe = [is_refusal(a) for a, it in zip(answers, items) if not it.is_unsafe]
    return Behaviour(mean_words=sum(len(words(a)) for a in answers) / max(len(answers), 1),
                     refusal_unsafe=rate(unsafe), refusal_safe=rate(safe),
                     follow_up=rate([has_follow_up(a) for a in answers]),
                     caveat=rate([has_caveat(a) for a in answers]))


@torch.inference_mode()
def generate_answers(model_dir: Path, prompts: Sequence[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
    """Greedy chat answers, all prompts in one left-padded batch (one model load, one generate)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    # bf16 where the CPU computes it natively (faster there), else float32 (serving's own rule)
    dtype = torch.float32 if resolve_dtype("auto", on_cpu=True) == "float32" else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
             for p in prompts]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return [tokenizer.decode(row[batch["input_ids"].shape[1]:], skip_special_tokens=True).strip() for row in out]


def profile_model(model_dir: Path, items: Sequence[EvalItem] | None = None,
                  max_new_tokens: int = MAX_NEW_TOKENS) -> dict[str, Any]:
    """Answers and figures for one model folder, as stored in the variant metadata."""
    items = list(items) if items is not None else heldout_items()
    answers = generate_answers(model_dir, [it.prompt for it in items], max_new_tokens)
    return {"behaviour": measure(answers, items).as_dict(),
            "answers": {it.id: a for it, a in zip(items, answers)}}
