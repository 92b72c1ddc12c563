"""`openai` backend: an LLM judge behind any OpenAI-compatible /v1/chat/completions endpoint.

Robustness is the point of this module: a judge server that is down, slow, rate-limited
or returns garbage must give counted, explained failures for the affected items — never
an exception that kills the batch (and the trial), and never a made-up score. Transport
retries (connection errors, timeouts, 429, 5xx) are bounded with exponential backoff;
the client's own retries are off so the count is ours. Other HTTP errors (400, 401, 404)
are not retried: they will not go away.

The API key is read from the environment variable NAMED in the config, kept only in the
client, and scrubbed from every error message; reprs, verdicts and logs never contain it.
Temperature is 0 so the same prompt gives the same verdict (and caching is sound).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Sequence

import openai

from judges.base import register_judge
from judges.config import JudgeConfigError, OpenAIJudgeConfig
from judges.pairwise import JudgeTransportError, item_order, judge_items
from judges.prompt import Message, verdict_schema
from judges.rubric import DEFAULT_RUBRIC, Rubric
from judges.verdicts import JudgeItem, Order, Verdict

log = logging.getLogger(__name__)

_RETRYABLE = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)  # timeouts included


class OpenAIJudge:
    """Pairwise LLM judge over an OpenAI-compatible endpoint (see the module docstring)."""

    def __init__(self, config: OpenAIJudgeConfig, rubric: Rubric = DEFAULT_RUBRIC) -> None:
        self.config = config
        self.rubric = rubric
        orders = "both" if config.both_orders else f"random(seed={config.seed})"
        self.identity = f"openai:{config.base_url}:{config.model}:orders={orders}" + (":schema" if config.json_schema else "")
        key: str | None = None
        if config.api_key_env is not None:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise JudgeConfigError(f"judge.api_key_env: environment variable {config.api_key_env} is not set")
        self._secret = key
        self._client = openai.OpenAI(base_url=config.base_url, api_key=key or "no-key", timeout=config.timeout_s,
                                     max_retries=0)

    def __repr__(self) -> str:
        c = self.config
        return f"OpenAIJudge(base_url={c.base_url!r}, model={c.model!r}, api_key_env={c.api_key_env!r})"

    def order_for(self, item: JudgeItem) -> Order:
        return item_order(item, both_orders=self.config.both_orders, seed=self.config.seed)

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _describe(self, e: BaseException) -> str:
        if isinstance(e, openai.APITimeoutError):
            what = f"timeout after {self.config.timeout_s}s"
        elif isinstance(e, openai.APIConnectionError):
            what = f"connection error ({type(e.__cause__).__name__ if e.__cause__ else 'no response'})"
        elif isinstance(e, openai.APIStatusError):
            what = f"HTTP {e.status_code}: {str(e.message)[:200]}"
        else:
            what = f"{type(e).__name__}: {str(e)[:200]}"
        return self._scrub(f"{what} from {self.config.base_url}")

    def _delay(self, attempt: int, e: BaseException) -> float:
        c = self.config
        delay = min(c.backoff_max_s, c.backoff_s * (2 ** attempt))
        if isinstance(e, openai.RateLimitError):
            try:
                delay = max(delay, min(c.backoff_max_s, float(e.response.headers.get("retry-after", 0))))
            except (TypeError, ValueError):
                pass
        return delay * random.uniform(0.5, 1.0)  # jitter spreads a thread pool's retries

    def complete(self, messages: list[Message], dimensions: tuple[str, ...] = ()) -> tuple[str | None, int]:
        """One chat completion with bounded retries; JudgeTransportError when none succeeded."""
        c = self.config
        extra = {}
        if c.json_schema and dimensions:
            extra["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "verdict", "strict": True, "schema": verdict_schema(dimensions)}}
        for attempt in range(c.max_retries + 1):
            try:
                resp = self._client.chat.completions.create(model=c.model, messages=messages,  # type: ignore[arg-type]
                                                            temperature=0.0, max_tokens=c.max_tokens, **extra)
            except _RETRYABLE as e:
                msg = self._describe(e)
                if attempt == c.max_retries:
                    raise JudgeTransportError(f"{msg}; gave up after {attempt + 1} attempts", attempt + 1) from None
                log.warning("judge request failed (%s); retry %d/%d", msg, attempt + 1, c.max_retries)
                time.sleep(self._delay(attempt, e))
                continue
            except Exception as e:  # noqa: BLE001  (non-retryable: 4xx, malformed response body, ...)
                raise JudgeTransportError(f"{self._describe(e)}; not retried", attempt + 1) from None
            try:
                content = resp.choices[0].message.content
            except (AttributeError, IndexError, TypeError):
                content = None  # an empty/odd completion is an unparseable reply, not a crash
            return content, attempt + 1
        raise AssertionError("unreachable")

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        c = self.config
        return judge_items(items, self.complete, self.rubric, judge_name=self.identity, both_orders=c.both_orders,
                           seed=c.seed, parse_retries=c.parse_retries, workers=self.config.concurrency,
                           thread_prefix="openai-judge", scrub=self._scrub)

    def close(self) -> None:
        self._client.close()


def _factory(config: object, rubric: Rubric) -> OpenAIJudge:
    if not isinstance(config, OpenAIJudgeConfig):
        raise TypeError(f"openai judge needs an OpenAIJudgeConfig, got {type(config).__name__}")
    return OpenAIJudge(config, rubric)


register_judge("openai", _factory)
