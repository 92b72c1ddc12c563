"""Verdict cache (hit/miss, persistence, threads, keys) and judge config validation."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from judges import (
    CachedJudge, JudgeConfigError, JudgeItem, Order, Outcome, RubricJudgeConfig, Verdict, VerdictCache,
    VerdictStatus, build_judge, cache_key, judge_backends, parse_judge_config, parse_judging_config,
)
from judges.heuristic import RubricJudge


class CountingJudge:
    """The heuristic judge, counting how many items reach it."""

    def __init__(self) -> None:
        self.inner = RubricJudge()
        self.rubric, self.identity = self.inner.rubric, self.inner.identity
        self.seen = 0
        self.lock = threading.Lock()

    def order_for(self, item: JudgeItem) -> Order:
        return Order.NONE

    def judge(self, items):
        with self.lock:
            self.seen += len(items)
        return self.inner.judge(items)


def _items(n: int = 4) -> list[JudgeItem]:
    return [JudgeItem(f"q{i}", f"Question {i}?", f"Gold answer number {i}.", f"Answer {i}.", "safe")
            for i in range(n)]


def test_hit_miss_and_persistence_across_instances(tmp_path):
    path = tmp_path / "cache" / "verdicts.sqlite"
    inner = CountingJudge()
    judge = CachedJudge(inner, VerdictCache(path))
    first = judge.judge(_items())
    assert inner.seen == 4 and judge.cache.misses == 4 and judge.cache.hits == 0
    second = judge.judge(_items())
    assert inner.seen == 4 and judge.cache.hits == 4
    assert [v.outcomes for v in first] == [v.outcomes for v in second] and all(v.cached for v in second)
    judge.cache.close()

    inner2 = CountingJudge()
    again = CachedJudge(inner2, VerdictCache(path)).judge(_items(6))
    assert inner2.seen == 2  # only the two new items
    assert [v.item_id for v in again] == [f"q{i}" for i in range(6)]


def test_key_depends_on_everything_that_determines_a_verdict():
    item = _items(1)[0]
    base = cache_key("v1", "judge", item, Order.BOTH)
    variants = [
        cache_key("v2", "judge", item, Order.BOTH),
        cache_key("v1", "other-judge", item, Order.BOTH),
        cache_key("v1", "judge", item, Order.GOLD_FIRST),
        cache_key("v1", "judge", JudgeItem(item.item_id, item.prompt + "!", item.gold, item.answer, "safe"), Order.BOTH),
        cache_key("v1", "judge", JudgeItem(item.item_id, item.prompt, item.gold + "!", item.answer, "safe"), Order.BOTH),
        cache_key("v1", "judge", JudgeItem(item.item_id, item.prompt, item.gold, item.answer + "!", "safe"), Order.BOTH),
    ]
    assert len({base, *variants}) == 7
    assert cache_key("v1", "judge", JudgeItem("other-id", item.prompt, item.gold, item.answer, "safe"),
                     Order.BOTH) == base  # same content under another id is the same judgement


def test_facts_and_reference_answer_enter_the_key_only_when_given():
    import dataclasses
    import hashlib
    import json

    item = _items(1)[0]
    # An item without them keeps the key every cache written before them holds.
    old = json.dumps(["v1", "judge", item.prompt, item.gold, item.answer, item.category, Order.BOTH.value],
                     ensure_ascii=False)
    assert cache_key("v1", "judge", item, Order.BOTH) == hashlib.sha256(old.encode()).hexdigest()
    keys = {cache_key("v1", "judge", it, Order.BOTH) for it in (
        item, dataclasses.replace(item, facts=("Paris",)), dataclasses.replace(item, facts=("Paris|Lutetia",)),
        dataclasses.replace(item, reference_answer="Paris"))}
    assert len(keys) == 4


def test_only_ok_verdicts_are_stored(tmp_path):
    cache = VerdictCache(tmp_path / "v.sqlite")
    item = _items(1)[0]
    cache.put("k1", Verdict("q0", "safe", VerdictStatus.UNPARSEABLE, error="bad"))
    cache.put("k2", Verdict("q0", "safe", VerdictStatus.OK, {"safety": Outcome.TIE}, order=Order.BOTH, judge="j"))
    assert len(cache) == 1 and cache.get("k1", item) is None
    got = cache.get("k2", item)
    assert got is not None and got.outcomes == {"safety": Outcome.TIE} and got.order is Order.BOTH


def test_concurrent_use_from_threads(tmp_path):
    cache = VerdictCache(tmp_path / "v.sqlite")
    item = _items(1)[0]
    v = Verdict("q0", "safe", VerdictStatus.OK, {"safety": Outcome.BETTER}, judge="j")

    def work(i: int) -> bool:
        cache.put(f"k{i % 10}", v)
        return cache.get(f"k{i % 10}", item) is not None

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(work, range(80)))
    assert len(cache) == 10 and cache.hits == 80
    cache.close()


def test_build_judge_from_config_with_cache(tmp_path):
    assert judge_backends() == ["openai", "rubric", "vllm"]
    judge = build_judge(parse_judging_config({"judge": {"backend": "rubric"}, "cache_path": str(tmp_path / "c.db")}))
    assert isinstance(judge, CachedJudge)
    assert all(v.ok for v in judge.judge(_items(2)))
    assert isinstance(build_judge(RubricJudgeConfig()), RubricJudge)


@pytest.mark.parametrize("data, field", [
    ({"backend": "openai", "model": "m"}, "judge.base_url"),
    ({"backend": "openai", "base_url": "localhost:8000", "model": "m"}, "judge.base_url"),
    ({"backend": "openai", "base_url": "http://h/v1", "model": "m", "concurrency": 0}, "judge.concurrency"),
    ({"backend": "openai", "base_url": "http://h/v1", "model": "m", "timeout_s": 0}, "judge.timeout_s"),
    ({"backend": "openai", "base_url": "http://h/v1", "model": "m", "max_retries": 99}, "judge.max_retries"),
    ({"backend": "openai", "base_url": "http://h/v1", "model": "m", "api_key_env": "has space"}, "judge.api_key_env"),
    ({"backend": "openai", "base_url": "http://h/v1", "model": "m", "temprature": 1}, "judge.temprature"),
    ({"backend": "rubric", "factuality_min_recall": 2}, "judge.factuality_min_recall"),
    ({"backend": "rubric", "concise_better_ratio": 2, "concise_worse_ratio": 1}, "judge.concise_worse_ratio"),
    ({"backend": "vllm"}, "judge"),
])
def test_config_errors_name_the_field(data, field):
    with pytest.raises(JudgeConfigError) as e:
        parse_judge_config(data)
    assert str(e.value).startswith(field), str(e.value)


def test_valid_openai_config_defaults():
    cfg = parse_judge_config({"backend": "openai", "base_url": "http://h:8000/v1/", "model": "m"})
    assert cfg.base_url == "http://h:8000/v1" and cfg.api_key_env == "OPENAI_API_KEY" and cfg.both_orders
