"""User objective functions for the tests (`search.objectives: ["tests.objective_fns:mentions_prompt_word"]`).

Not a test module: imported by name, as a user's own module would be.
"""

from __future__ import annotations

from collections.abc import Sequence

IMPORTED = True


def mentions_prompt_word(items: Sequence, answers: Sequence[str]) -> list[float | None]:
    """1.0 when the answer repeats the prompt's longest word (a stand-in for a task metric);
    unsafe items are not scored."""
    out: list[float | None] = []
    for item, answer in zip(items, answers):
        if item.category == "unsafe":
            out.append(None)
            continue
        word = max(item.prompt.lower().split(), key=len).strip("?.!,")
        out.append(float(word in answer.lower()))
    return out


def raises(items: Sequence, answers: Sequence[str]) -> list[float]:
    raise RuntimeError("the metric's service is down")


def wrong_length(items: Sequence, answers: Sequence[str]) -> list[float]:
    return [1.0]


def not_finite(items: Sequence, answers: Sequence[str]) -> list[float]:
    return [float("nan")] * len(answers)


def not_a_number(items: Sequence, answers: Sequence[str]) -> list[str]:
    return ["high"] * len(answers)


def one_argument(items: Sequence) -> list[float]:
    return [1.0] * len(items)


def keyword_only(items: Sequence, *, answers: Sequence[str]) -> list[float]:
    return [1.0] * len(items)


NOT_CALLABLE = 3
