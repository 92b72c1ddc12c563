"""Model-soup strategies: Wortsman et al.'s greedy recipe on closed-form scores, soup plans."""

from __future__ import annotations

import math

import pytest
import torch

from merging import Merger, parse_plan
from search.soups import greedy_soup, soup_plan, soup_score


def test_greedy_soup_adds_an_ingredient_only_when_the_soup_does_not_get_worse():
    sources = {"a": 0.5, "b": 0.7, "c": 0.6, "d": 0.2}
    # soup scores: b+c improves, b+c+a is worse, b+c+d ties (kept: ≥)
    table = {("b", "c"): 0.75, ("b", "c", "a"): 0.74, ("b", "c", "d"): 0.75}
    calls = []

    def evaluate(soup):
        calls.append(tuple(soup))
        return table[tuple(soup)]

    result = greedy_soup(sources, evaluate)
    assert calls == [("b", "c"), ("b", "c", "a"), ("b", "c", "d")]  # best-first order
    assert result.ingredients == ["b", "c", "d"]
    assert [kept for _, _, kept in result.tried] == [True, False, True]


def test_greedy_soup_never_keeps_a_failed_evaluation_and_skips_unscored_sources():
    result = greedy_soup({"a": 0.4, "b": 0.3, "x": math.nan}, lambda soup: math.nan)
    assert result.ingredients == ["a"] and result.tried == [(["a", "b"], result.tried[0][1], False)]
    with pytest.raises(ValueError, match="no source has a finite score"):
        greedy_soup({"x": math.nan}, lambda soup: 1.0)


def test_soup_score_is_the_mean_objective_wtr_and_nan_when_one_is_missing():
    assert soup_score({"safety": 0.5, "factuality": 1.0}, ["safety", "factuality"]) == 0.75
    assert soup_score({"wtr.safety": 0.25, "wtr.factuality": 0.75}, ["safety", "factuality"]) == 0.5
    assert math.isnan(soup_score({"safety": 0.5, "factuality": math.nan}, ["safety", "factuality"]))
    assert math.isnan(soup_score({"safety": 0.5}, ["safety", "factuality"]))


def test_soup_plan_is_the_uniform_average(tiny_family):
    merger = Merger({k: str(v) for k, v in tiny_family.items()}, base="base")
    merged = merger.merge_to_dict(parse_plan(soup_plan(["dpo", "kto", "orpo"], "base") | {"dtype": "float32"}))
    name = "model.layers.1.mlp.up_proj.weight"
    expected = sum(merger.tensor(m, name) for m in ("dpo", "kto", "orpo")) / 3
    assert torch.allclose(merged[name], expected, atol=1e-6)
