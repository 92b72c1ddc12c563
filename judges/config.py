"""Validated judge configuration (pydantic v2); errors name the offending field.

The OpenAI config holds the *name* of the environment variable with the API key, never
the key: configs are written into experiment directories and logs. A value that looks
like a key (not a valid variable name, or starting with "sk-") is rejected.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator


class JudgeConfigError(ValueError):
    """A judge config is invalid; the message names the field(s)."""


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RubricJudgeConfig(_Base):
    """Offline heuristic judge (see judges.heuristic); thresholds are tunable."""

    backend: Literal["rubric"] = "rubric"
    factuality_min_recall: float = Field(0.5, ge=0.0, le=1.0,
                                         description="share of gold content words the answer must contain to tie")
    concise_better_ratio: float = Field(0.8, gt=0.0, description="answer/gold word ratio at or below which it wins")
    concise_worse_ratio: float = Field(1.25, gt=0.0, description="answer/gold word ratio above which it loses")

    @field_validator("concise_worse_ratio")
    @classmethod
    def _ordered(cls, v: float, info: Any) -> float:
        better = info.data.get("concise_better_ratio")
        if better is not None and v < better:
            raise ValueError(f"must be ≥ concise_better_ratio ({better})")
        return v


class OpenAIJudgeConfig(_Base):
    """Any OpenAI-compatible /v1/chat/completions endpoint."""

    backend: Literal["openai"] = "openai"
    base_url: str = Field(..., min_length=1, description="e.g. http://localhost:8000/v1")
    model: str = Field(..., min_length=1)
    api_key_env: str | None = Field("OPENAI_API_KEY",
                                    description="NAME of the environment variable holding the key; None for no key")
    concurrency: int = Field(8, ge=1, le=256)
    timeout_s: float = Field(60.0, gt=0.0, description="per request")
    max_retries: int = Field(3, ge=0, le=10, description="transport retries per request (connection, 429, 5xx)")
    backoff_s: float = Field(1.0, ge=0.0, description="first retry delay; doubles each retry")
    backoff_max_s: float = Field(30.0, ge=0.0)
    parse_retries: int = Field(1, ge=0, le=5, description="re-asks after an unparseable reply")
    both_orders: bool = Field(True, description="judge each item in both orders (position-bias control)")
    seed: int = Field(0, description="seed of the per-item order when both_orders is false")
    max_tokens: int = Field(512, ge=16)
    json_schema: bool = Field(False, description="ask the server to constrain replies to the verdict JSON schema "
                                                 "(response_format json_schema; vLLM and OpenAI support it)")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"must be an http(s) URL, got {v!r}")
        return v.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v) or v.lower().startswith("sk_") or v.startswith("sk-"):
            # Do not echo the value: it may be a key pasted by mistake.
            raise ValueError("must be the NAME of an environment variable (letters, digits, _), not the key itself")
        return v


class VLLMJudgeConfig(_Base):
    """A judge model run by a vLLM engine in this process (or a Ray actor of the search)."""

    backend: Literal["vllm"] = "vllm"
    model: str = Field(..., min_length=1, description="model folder or hub id of the judge model")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per judge engine (70B-class judges need several)")
    distributed_executor_backend: Literal["mp", "ray"] | None = Field(
        None, description="how vLLM spreads tensor-parallel workers; 'ray' on a Ray cluster")
    dtype: str = "auto"
    max_model_len: int = Field(4096, ge=256)
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0)
    cpu_kv_cache_gib: int = Field(2, ge=1, description="KV cache on CPU-only machines (VLLM_CPU_KVCACHE_SPACE)")
    trust_remote_code: bool = False
    guided_json: bool = Field(True, description="constrain replies to the verdict JSON schema (structured outputs)")
    batch_size: int = Field(64, ge=1, le=4096, description="judgements generated together")
    both_orders: bool = True
    seed: int = 0
    parse_retries: int = Field(1, ge=0, le=5)
    max_tokens: int = Field(256, ge=16)


JudgeConfig = Annotated[RubricJudgeConfig | OpenAIJudgeConfig | VLLMJudgeConfig, Field(discriminator="backend")]
_ADAPTER: TypeAdapter[RubricJudgeConfig | OpenAIJudgeConfig | VLLMJudgeConfig] = TypeAdapter(JudgeConfig)


class JudgingConfig(_Base):
    """The `judge:` section of an experiment config: backend settings and the verdict cache."""

    judge: JudgeConfig = Field(default_factory=RubricJudgeConfig)
    cache_path: Path | None = Field(None, description="SQLite verdict cache; None disables caching")


def _format(e: ValidationError, prefix: str) -> str:
    parts = []
    for err in e.errors(include_input=False):
        loc = ".".join(str(p) for p in err["loc"] if p not in ("rubric", "openai", "vllm") or len(err["loc"]) == 1)
        parts.append(f"{prefix}{'.' + loc if loc else ''}: {err['msg']}")
    return "; ".join(parts)


def parse_judge_config(data: dict[str, Any], *,
                       prefix: str = "judge") -> RubricJudgeConfig | OpenAIJudgeConfig | VLLMJudgeConfig:
    """Validate one judge config dict; JudgeConfigError names the field."""
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as e:
        raise JudgeConfigError(_format(e, prefix)) from None


def parse_judging_config(data: dict[str, Any], *, prefix: str = "judging") -> JudgingConfig:
    try:
        return JudgingConfig.model_validate(data)
    except ValidationError as e:
        raise JudgeConfigError(_format(e, prefix)) from None
