"""LLM judges: rubric, pairwise prompts, verdict parsing, win-tie rates, judge backends, verdict cache.

    from judges import JudgeItem, build_judge, parse_judging_config, win_tie_rates

    cfg = parse_judging_config({"judge": {"backend": "openai", "base_url": "http://localhost:8000/v1",
                                          "model": "judge-model", "api_key_env": "JUDGE_API_KEY"},
                                "cache_path": "outputs/verdicts.sqlite"})
    judge = build_judge(cfg)
    verdicts = judge.judge([JudgeItem("q1", prompt, gold, answer, "safe"), ...])
    rates = win_tie_rates(verdicts)          # per dimension; unparseable/failed items counted apart

Backends (registered by name): `rubric` (offline heuristic baseline), `openai` (any
OpenAI-compatible endpoint) and `vllm` (a judge model run by a vLLM engine in the cluster,
tensor-parallel when large).
"""

from __future__ import annotations

from judges.base import JUDGES, Judge, get_judge_factory, judge_backends, register_judge
from judges.cache import CachedJudge, VerdictCache, VerdictStore, cache_key
from judges.eval_set import EvalItem, EvalSet, EvalSetError, load_eval_set
from judges.config import (
    JudgeConfig, JudgeConfigError, JudgingConfig, OpenAIJudgeConfig, RubricJudgeConfig, VLLMJudgeConfig,
    parse_judge_config,
    parse_judging_config,
)
from judges.metrics import (
    WTR, ConfidenceInterval, bootstrap_wtr, paired_bootstrap, paired_bootstrap_diff, bootstrap_mean, win_tie_indicators, win_tie_rate, win_tie_rates,
    wtr_mean_diff,
)
from judges.pairwise import JudgeTransportError, combine_orders, judge_pairwise, label_to_outcome
from judges.parse import ParseError, parse_verdict
from judges.prompt import assign_order, build_messages, neutralise, system_prompt
from judges.rubric import CATEGORIES, DEFAULT_RUBRIC, Category, DimensionSpec, Rubric
from judges.verdicts import JudgeItem, Order, Outcome, Verdict, VerdictStatus


def build_judge(config: JudgingConfig | RubricJudgeConfig | OpenAIJudgeConfig | VLLMJudgeConfig, rubric: Rubric = DEFAULT_RUBRIC) -> Judge:
    """A judge for the config, wrapped in the verdict cache when a `JudgingConfig` names one."""
    judge_cfg = config.judge if isinstance(config, JudgingConfig) else config
    judge = get_judge_factory(judge_cfg.backend)(judge_cfg, rubric)
    if isinstance(config, JudgingConfig) and config.cache_path is not None:
        return CachedJudge(judge, VerdictCache(config.cache_path))
    return judge


__all__ = [
    "EvalItem", "EvalSet", "EvalSetError", "load_eval_set",
    "CATEGORIES", "DEFAULT_RUBRIC", "JUDGES", "WTR", "bootstrap_mean", "CachedJudge", "Category", "ConfidenceInterval", "DimensionSpec",
    "Judge", "JudgeConfig", "JudgeConfigError", "JudgeItem", "JudgeTransportError", "JudgingConfig",
    "OpenAIJudgeConfig", "Order", "Outcome", "ParseError", "Rubric", "RubricJudgeConfig", "VLLMJudgeConfig", "Verdict", "VerdictCache",
    "VerdictStore",
    "VerdictStatus", "assign_order", "bootstrap_wtr", "build_judge", "build_messages", "cache_key", "combine_orders",
    "get_judge_factory", "judge_backends", "judge_pairwise", "label_to_outcome", "neutralise",
    "paired_bootstrap", "paired_bootstrap_diff", "parse_judge_config", "parse_judging_config", "parse_verdict", "register_judge",
    "system_prompt", "win_tie_indicators", "win_tie_rate", "win_tie_rates", "wtr_mean_diff",
]
