"""The serving interface: one running engine, many merges, no restarts.

A search trial is "merge a plan → put the merged weights into the engine → answer the
eval prompts". Backends differ in where the engine lives (in this process, or in vLLM's
worker), but every one of them loads the base and source checkpoints once, replaces its
weights per plan in memory and answers with greedy decoding, so answers are a function
of (weights, prompts, settings) alone and comparable across trials and backends.

Adding a backend means one file: a subclass of `ServingBackend` decorated with
`@register_backend("name")`.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from merging import MergePlan
from runtime import vllm_available

Message = dict[str, str]  # {"role": "user" | "assistant" | "system", "content": "..."}
Conversation = list[Message]


class ServingError(RuntimeError):
    """The engine could not load, swap or generate; the message says which model and why."""


class GenerationSettings(BaseModel):
    """Decoding is greedy and seeded so two runs of the same weights give the same answers."""

    model_config = ConfigDict(extra="forbid")
    max_tokens: int = Field(128, ge=1, le=32768)
    seed: int = 0
    batch_size: int = Field(16, ge=1, description="conversations per generate call (transformers backend)")


class EngineSettings(BaseModel):
    """How the engine runs: device, dtype, threads and the vLLM memory knobs."""

    model_config = ConfigDict(extra="forbid")
    device: str = "auto"  # auto | cpu | cuda
    #: "auto": the checkpoint's dtype on GPUs; on CPUs without native bf16 (no AVX512-BF16 or
    #: AMX) float32, which was 1.5x (transformers) to 4x (vLLM-CPU) faster than bf16 here;
    #: float32 for vLLM on AMX CPUs too, whose bf16 path answered wrongly (runtime.resolve_dtype).
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    threads: int | None = Field(None, ge=1, description="CPU threads for generation and merges")
    max_model_len: int = Field(2048, ge=64)
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    cpu_kv_cache_gib: int = Field(2, ge=1, description="vLLM CPU KV cache (VLLM_CPU_KVCACHE_SPACE)")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one vLLM engine spans (models too big for one "
                                                          "GPU); the worker must hold as many (workers.gpus)")
    enforce_eager: bool = True  # torch.compile costs 40-60 s per engine start on CPU for ~25 % speed
    stage_merges: bool = Field(True, description="merge a whole plan before pushing it (a failed merge leaves the engine untouched)")


@dataclass
class SwapTiming:
    """Seconds spent producing merged tensors and loading them into the engine."""

    merge_s: float
    load_s: float
    tensors: int

    @property
    def total_s(self) -> float:
        return self.merge_s + self.load_s


@dataclass
class ModelSet:
    """The checkpoints a backend holds: names a plan uses → model folders, and the base."""

    models: dict[str, Path]
    base: str
    label: str = field(default="")
    #: Both off unless the experiment config opts in: a pickle checkpoint or a model's own
    #: Python code (`trust_remote_code`) can execute anything on the worker.
    allow_pickle: bool = False
    trust_remote_code: bool = False
    #: Where the worker keeps base and sources: auto | gpu | host | disk (merging.memory).
    sources: str = "auto"

    def __post_init__(self) -> None:
        self.models = {key: Path(path) for key, path in self.models.items()}
        if self.base not in self.models:
            raise ServingError(f"base {self.base!r} is not among the models {sorted(self.models)}")
        for key, path in self.models.items():
            if not (path / "config.json").exists():
                raise ServingError(f"model {key!r}: {path} is not a model folder (no config.json)")

    @property
    def base_dir(self) -> Path:
        return self.models[self.base]


#: `ServingBackend.current` of an engine whose weight reload stopped half-way: it must not
#: generate until a whole model is loaded again (`restore`).
BROKEN = "broken"


class ServingBackend(abc.ABC):
    """A running engine over a `ModelSet`; `apply_plan` / `use_model` swap its weights."""

    name: str = ""

    def __init__(self, model_set: ModelSet, engine: EngineSettings | None = None):
        self.model_set = model_set
        self.engine = engine or EngineSettings()
        self.current: str = model_set.base  # what the engine holds now: a model key or "plan:<hash>"

    @abc.abstractmethod
    def apply_plan(self, plan: MergePlan) -> SwapTiming:
        """Merge `plan` over the held models and make the engine serve the result."""

    @abc.abstractmethod
    def use_model(self, key: str) -> SwapTiming:
        """Serve one held model unchanged (the base or a source, as a reference point)."""

    @property
    def broken(self) -> bool:
        """True after a reload that failed half-way: the weights are a mix of two models."""
        return self.current == BROKEN

    def restore(self) -> SwapTiming:
        """Load the base again: a known model, whatever the failed reload left behind."""
        return self.use_model(self.model_set.base)

    @abc.abstractmethod
    def generate(self, conversations: Sequence[Conversation], settings: GenerationSettings | None = None) -> list[str]:
        """Greedy answers, one per conversation, in order; special tokens stripped."""

    def close(self) -> None:
        """Release the engine; the backend cannot be used afterwards."""

    def __enter__(self) -> "ServingBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


BACKENDS: dict[str, type[ServingBackend]] = {}


def register_backend(name: str) -> Callable[[type[ServingBackend]], type[ServingBackend]]:
    def add(cls: type[ServingBackend]) -> type[ServingBackend]:
        cls.name = name
        BACKENDS[name] = cls
        return cls
    return add


def create_backend(name: str, model_set: ModelSet, engine: EngineSettings | None = None) -> ServingBackend:
    """`name` is a registered backend or "auto" (vLLM when importable, else transformers)."""
    import serving.transformers_backend  # noqa: F401  (registers)
    import serving.vllm_backend  # noqa: F401  (registers)

    if name == "auto":
        name = "vllm" if vllm_available() else "transformers"
    if name not in BACKENDS:
        raise ServingError(f"unknown serving backend {name!r}; choose one of {sorted(BACKENDS)} or 'auto'")
    return BACKENDS[name](model_set, engine)


def check_answers(answers: Sequence[Any], expected: int) -> list[str]:
    """Engines must return one string per conversation; anything else is a serving bug."""
    if len(answers) != expected or not all(isinstance(a, str) for a in answers):
        raise ServingError(f"engine returned {len(answers)} answers for {expected} conversations")
    return list(answers)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def plan_label(plan: Mapping[str, Any] | MergePlan) -> str:
    import hashlib
    import json

    data = plan.model_dump(mode="json") if isinstance(plan, MergePlan) else dict(plan)
    return "plan:" + hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
