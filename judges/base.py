"""The judge interface and the registry of judge backends by name.

Like merging/registry.py for merge methods: each backend lives in its own module and
registers a factory with one `register_judge(...)` call, so the search can build a judge
from a config without knowing the backends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from judges.rubric import Rubric
from judges.verdicts import JudgeItem, Order, Verdict

if TYPE_CHECKING:
    from judges.config import JudgeConfig


@runtime_checkable
class Judge(Protocol):
    """Scores candidate answers against gold answers, one verdict per item, in input order.

    `judge` never raises for a bad item or an unreachable server: such items come back as
    verdicts with a non-OK status. `identity` (backend + model + order setting) goes into
    cache keys; it must change whenever the verdicts could.
    """

    rubric: Rubric
    identity: str

    def order_for(self, item: JudgeItem) -> Order: ...

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]: ...


JudgeFactory = Callable[["JudgeConfig", Rubric], Judge]
JUDGES: dict[str, JudgeFactory] = {}


def register_judge(backend: str, factory: JudgeFactory) -> JudgeFactory:
    if backend in JUDGES:
        raise ValueError(f"judge backend {backend!r} is registered twice")
    JUDGES[backend] = factory
    return factory


def judge_backends() -> list[str]:
    _load_builtin_backends()
    return sorted(JUDGES)


def get_judge_factory(backend: str) -> JudgeFactory:
    _load_builtin_backends()
    try:
        return JUDGES[backend]
    except KeyError:
        raise KeyError(f"unknown judge backend {backend!r}; known: {', '.join(sorted(JUDGES))}") from None


def _load_builtin_backends() -> None:
    import judges.heuristic  # noqa: F401  (importing registers the backend)
    import judges.openai_judge  # noqa: F401
    import judges.vllm_judge  # noqa: F401  (imports vLLM only when a judge is built)
