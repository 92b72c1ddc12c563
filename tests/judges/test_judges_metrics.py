"""WTR, mean-diff and bootstrap CIs on hand-made verdict lists."""

from __future__ import annotations

import math

import pytest

from judges import (
    Outcome, Verdict, VerdictStatus, bootstrap_wtr, paired_bootstrap_diff, win_tie_rate, win_tie_rates,
    wtr_mean_diff,
)

B, T, W, X = Outcome.BETTER, Outcome.TIE, Outcome.WORSE, Outcome.INCONSISTENT


def _v(i: str, category: str = "safe", status: VerdictStatus = VerdictStatus.OK, **outcomes: Outcome) -> Verdict:
    return Verdict(i, category, status, outcomes if status is VerdictStatus.OK else {})  # type: ignore[arg-type]


def test_wtr_counts_better_or_equal_and_excludes_failures():
    verdicts = [
        _v("1", safety=B, false_rejection=W),
        _v("2", safety=T, false_rejection=T),
        _v("3", safety=W, false_rejection=B),
        _v("4", safety=X, false_rejection=X),
        _v("5", status=VerdictStatus.UNPARSEABLE),
        _v("6", "unsafe", safety=W, false_acceptance=W),
        _v("7", "unsafe", status=VerdictStatus.FAILED),
    ]
    s = win_tie_rate(verdicts, "safety")
    assert (s.value, s.n_scored, s.n_better, s.n_tie, s.n_excluded) == (2 / 5, 5, 1, 1, 2)
    fr = win_tie_rate(verdicts, "false_rejection")  # safe items only
    assert (fr.value, fr.n_scored, fr.n_excluded) == (2 / 4, 4, 1)
    fa = win_tie_rate(verdicts, "false_acceptance")  # unsafe items only
    assert (fa.value, fa.n_scored, fa.n_excluded) == (0.0, 1, 1)


def test_wtr_of_no_scored_items_is_nan():
    w = win_tie_rate([_v("1", status=VerdictStatus.FAILED)], "safety")
    assert math.isnan(w.value) and w.n_excluded == 1 and w.n_scored == 0


def test_mean_diff_exact():
    merge = {"safety": 0.8, "conciseness": 0.5}
    m1 = {"safety": 0.6, "conciseness": 0.7}
    m2 = {"safety": 0.9, "conciseness": 0.1}
    diff = wtr_mean_diff(merge, [m1, m2])
    assert diff["safety"] == pytest.approx(0.8 - 0.75)
    assert diff["conciseness"] == pytest.approx(0.5 - 0.4)
    verdicts = [_v("1", safety=B), _v("2", safety=W)]
    assert wtr_mean_diff({"safety": win_tie_rate(verdicts, "safety")}, [{"safety": 0.25}]) == {"safety": 0.25}
    with pytest.raises(ValueError):
        wtr_mean_diff(merge, [])


def _many(n_win: int, n_lose: int, prefix: str = "") -> list[Verdict]:
    return [_v(f"{i}", safety=B) for i in range(n_win)] + [_v(f"{n_win + i}", safety=W) for i in range(n_lose)]


def test_bootstrap_is_seeded_and_contains_the_estimate():
    verdicts = _many(30, 20)
    a = bootstrap_wtr(verdicts, "safety", seed=7)
    assert a == bootstrap_wtr(verdicts, "safety", seed=7)
    assert a != bootstrap_wtr(verdicts, "safety", seed=8)
    assert a.estimate == pytest.approx(0.6) and a.low <= a.estimate <= a.high
    assert 0.4 < a.low < 0.6 < a.high < 0.8 and a.n_items == 50 and a.n_resamples == 1000


def test_paired_bootstrap_on_common_items():
    a = _many(40, 10)  # items 0..39 win
    b = [_v(str(i), safety=B if i < 20 else W) for i in range(50)] + [_v("extra", safety=W)]
    ci = paired_bootstrap_diff(a, b, "safety", seed=1)
    assert ci.n_items == 50 and ci.estimate == pytest.approx(0.8 - 0.4)
    assert ci.low <= ci.estimate <= ci.high and ci.low > 0
    assert ci == paired_bootstrap_diff(a, b, "safety", seed=1)
    same = paired_bootstrap_diff(a, a, "safety", seed=1)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)  # paired: identical systems have no spread


def test_duplicate_items_are_rejected():
    with pytest.raises(ValueError, match="twice"):
        bootstrap_wtr([_v("1", safety=B), _v("1", safety=W)], "safety")


def test_all_dimensions_and_a_dimension_the_judge_left_out_is_not_scored():
    full = {d: T for d in ("safety", "factuality", "linguistic_correctness", "conciseness", "proactivity",
                           "false_rejection")}
    rates = win_tie_rates([_v("1", **full)])
    assert rates["safety"].value == 1.0 and math.isnan(rates["false_acceptance"].value)
    # item 2 has no factuality outcome (nothing to check it against): excluded, not a tie or a loss
    partial = win_tie_rates([_v("1", **full), _v("2", safety=W)])
    assert partial["factuality"].value == 1.0 and partial["factuality"].n_scored == 1
    assert partial["factuality"].n_excluded == 1
    assert partial["safety"].value == 0.5 and partial["safety"].n_scored == 2
