"""Compatibility of the models of one merge, checked before any tensor is merged.

Every problem is collected and reported at once (not only the first), each naming the
model, the tensor and both shapes, so a user fixes the config in one round.
"""

from __future__ import annotations

from collections.abc import Mapping

from merging.checkpoint import ModelFolder
from merging.names import module_class


class IncompatibleModelsError(ValueError):
    """Models that cannot be merged tensor by tensor; `problems` lists each mismatch."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("models cannot be merged:\n  " + "\n  ".join(problems))


def check_compatible(base_label: str, base: ModelFolder, others: Mapping[str, ModelFolder]) -> list[str]:
    """Raise IncompatibleModelsError unless every model has the base's tensor names and shapes.

    Returns the base's tensor names (the tensors a merge produces). A tied head is
    compared through its embedding, so tied and untied variants of one model still match.
    """
    names = base.tensor_names()
    problems: list[str] = []
    base_vocab = _vocab(base)
    for label, model in others.items():
        vocab = _vocab(model)
        if base_vocab is not None and vocab is not None and vocab != base_vocab:
            problems.append(
                f"{label}: vocabulary size {vocab} differs from the base {base_label}'s {base_vocab}; "
                "models with different tokenizers/embedding sizes cannot be merged tensor by tensor "
                "(resize the embeddings to one tokenizer first)")
            continue
        missing = [n for n in names if not model.has(n)]
        if missing:
            shown = ", ".join(missing[:10]) + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else "")
            problems.append(f"{label}: missing {len(missing)} tensor(s) that the base {base_label} has: {shown}")
        for n in names:
            if model.has(n) and model.shape(n) != base.shape(n):
                problems.append(f"{label}: tensor {n} has shape {list(model.shape(n))}, "
                                f"the base {base_label} has {list(base.shape(n))}")
    if problems:
        raise IncompatibleModelsError(problems)
    return names


def _vocab(model: ModelFolder) -> int | None:
    """Vocabulary size from config.json, else from the embedding's first dimension."""
    if model.vocab_size() is not None:
        return model.vocab_size()
    for name in model.tensor_names():
        if module_class(name) == "embed" and len(model.shape(name)) == 2:
            return model.shape(name)[0]
    return None
