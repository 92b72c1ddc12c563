"""Eval sets: the bundled set's content, loading from JSONL/CSV/Parquet, and every validation error."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from judges.eval_set import (
    BUNDLED_EVAL_SETS,
    MAX_REPORTED_ERRORS,
    MIN_PER_CATEGORY,
    EvalItem,
    EvalSet,
    EvalSetError,
    load_eval_set,
)

REFUSAL = re.compile(r"\bI (can't|cannot|won't|will not|am unable to|am not able to)\b|\bI'm (unable|not able) to\b",
                     re.IGNORECASE)
ID_RE = re.compile(r"^(fact|civic|harm|edge)-\d{3}$")


def _norm(text: str) -> str:
    return text.replace("\u2019", "'")


def _write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _row(i: int, **kw: object) -> dict:
    return {"id": f"q{i}", "prompt": f"question {i}?", "gold": f"answer {i}.", "category": "safe", **kw}


def _errors(excinfo: pytest.ExceptionInfo[EvalSetError]) -> tuple[str, ...]:
    return excinfo.value.errors


# ---------------------------------------------------------------------------------------------
# The bundled sets


@pytest.fixture(scope="module")
def bundled() -> EvalSet:
    return load_eval_set("soupsearch-eval-v1")


def test_bundled_set_shape(bundled: EvalSet) -> None:
    assert bundled.name == "soupsearch-eval-v1"
    assert len(bundled) >= 80
    assert len(set(bundled.ids)) == len(bundled)
    assert all(ID_RE.match(i) for i in bundled.ids), [i for i in bundled.ids if not ID_RE.match(i)]
    counts = bundled.counts_by_category()
    assert counts["safe"] >= 15 and counts["unsafe"] >= 15
    groups = {g: sum(1 for i in bundled.ids if i.startswith(g + "-")) for g in ("fact", "civic", "harm", "edge")}
    assert groups["fact"] >= 25 and groups["civic"] >= 12 and groups["harm"] >= 18 and groups["edge"] >= 18
    for it in bundled:
        assert it.prompt.strip() and it.gold.strip() and it.topic.strip()
        # Golds are short references a 135M model's answer can be compared with.
        assert len(it.gold) <= 600, it.id
        assert (it.category == "unsafe") == it.id.startswith("harm-"), it.id


def test_unsafe_golds_refuse_and_safe_golds_do_not(bundled: EvalSet) -> None:
    for it in bundled:
        refuses = bool(REFUSAL.search(_norm(it.gold)))
        if it.is_unsafe:
            assert refuses, f"{it.id}: unsafe gold should refuse: {it.gold!r}"
            assert len(it.gold.split(". ")) >= 2 or "," in it.gold, f"{it.id}: refusal without a redirect"
        else:
            assert not refuses, f"{it.id}: safe gold reads like a refusal: {it.gold!r}"


def test_smoke_is_a_balanced_sample_of_the_main_set(bundled: EvalSet) -> None:
    smoke = load_eval_set("smoke")
    assert len(smoke) == 8
    assert smoke.counts_by_category() == {"safe": 4, "unsafe": 4}
    for it in smoke:
        assert bundled.get(it.id) == it


def test_bundled_load_is_cached_and_immutable(bundled: EvalSet) -> None:
    assert load_eval_set("soupsearch-eval-v1") is bundled
    with pytest.raises(dataclasses.FrozenInstanceError):
        bundled.name = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        bundled[0].gold = "x"  # type: ignore[misc]
    assert isinstance(bundled.items, tuple)
    assert len(bundled.content_hash) == 64
    assert set(BUNDLED_EVAL_SETS) == {"soupsearch-eval-v1", "smoke"}


def test_counts_and_where(bundled: EvalSet) -> None:
    assert sum(bundled.counts_by_topic().values()) == len(bundled)
    unsafe = bundled.where(category="UNSAFE")
    assert len(unsafe) == bundled.counts_by_category()["unsafe"]
    assert all(it.is_unsafe for it in unsafe)
    assert bundled.counts_by_topic()["self-harm"] == len(bundled.where(topic="self-harm"))


# ---------------------------------------------------------------------------------------------
# Round trips and hashes


def test_round_trip_csv_and_parquet(tmp_path: Path, bundled: EvalSet) -> None:
    df = pd.DataFrame(bundled.to_records())
    df.to_csv(tmp_path / "set.csv", index=False)
    df.to_parquet(tmp_path / "set.parquet", index=False)
    for path in (tmp_path / "set.csv", tmp_path / "set.parquet"):
        loaded = load_eval_set(path)
        assert loaded.name == "set"
        assert loaded.items == bundled.items
        assert loaded.content_hash == bundled.content_hash  # the name is not part of the hash


def test_jsonl_round_trip_and_hash_sensitivity(tmp_path: Path, bundled: EvalSet) -> None:
    rows = bundled.to_records()
    same = load_eval_set(_write_jsonl(tmp_path / "a.jsonl", rows))
    assert same.content_hash == bundled.content_hash
    rows[3]["gold"] += " Extra."
    changed = load_eval_set(_write_jsonl(tmp_path / "b.jsonl", rows))
    assert changed.content_hash != bundled.content_hash


def test_normalization_defaults_and_metadata(tmp_path: Path) -> None:
    df = pd.DataFrame([
        {"id": "a", "prompt": "  p?  ", "gold": "g.", "category": " SAFE ", "topic": "", "difficulty": "easy"},
        {"id": "b", "prompt": "p2?", "gold": "g2.", "category": "Unsafe", "topic": "fraud", "difficulty": "hard"},
    ])
    df.to_csv(tmp_path / "s.csv", index=False)
    with pytest.warns(UserWarning, match="'difficulty' kept as EvalItem.metadata"):
        s = load_eval_set(tmp_path / "s.csv", name="mine")
    assert s.name == "mine"
    assert [it.category for it in s] == ["safe", "unsafe"]
    assert s[0].prompt == "p?" and s[0].topic == "general" and s[1].topic == "fraud"
    assert dict(s[1].metadata) == {"difficulty": "hard"}
    with pytest.raises(TypeError):
        s[1].metadata["difficulty"] = "x"  # type: ignore[index]
    no_topic = load_eval_set(_write_jsonl(tmp_path / "t.jsonl", [_row(1)]))
    assert no_topic[0].topic == "general"


def test_parquet_integer_ids_and_nulls(tmp_path: Path) -> None:
    pd.DataFrame({"id": [1, 2], "prompt": ["a?", "b?"], "gold": ["x.", "y."], "category": ["safe", "unsafe"],
                  "topic": ["t", None]}).to_parquet(tmp_path / "ints.parquet")
    s = load_eval_set(tmp_path / "ints.parquet")
    assert s.ids == ("1", "2") and s[1].topic == "general"
    pd.DataFrame({"id": ["a", "b"], "prompt": ["a?", None], "gold": ["x.", "y."],
                  "category": ["safe", "safe"]}).to_parquet(tmp_path / "null.parquet")
    with pytest.raises(EvalSetError) as ei:
        load_eval_set(tmp_path / "null.parquet")
    assert _errors(ei) == ("row 2: field 'prompt': missing value",)


# ---------------------------------------------------------------------------------------------
# Validation errors: exact rows, lines and fields, all reported together


def test_missing_column_csv_and_parquet(tmp_path: Path) -> None:
    df = pd.DataFrame([_row(1)]).drop(columns=["gold"])
    df.to_csv(tmp_path / "m.csv", index=False)
    df.to_parquet(tmp_path / "m.parquet")
    for path in (tmp_path / "m.csv", tmp_path / "m.parquet"):
        with pytest.raises(EvalSetError) as ei:
            load_eval_set(path)
        assert len(_errors(ei)) == 1
        assert _errors(ei)[0].startswith("missing required column(s) 'gold'")
        assert str(path) in str(ei.value)


def test_missing_field_jsonl(tmp_path: Path) -> None:
    rows = [_row(1), {k: v for k, v in _row(2).items() if k != "category"}]
    with pytest.raises(EvalSetError) as ei:
        load_eval_set(_write_jsonl(tmp_path / "m.jsonl", rows))
    assert _errors(ei) == ("row 2 (line 2): field 'category': missing value",)


def test_bad_category(tmp_path: Path) -> None:
    pd.DataFrame([_row(1), _row(2, category="maybe")]).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(EvalSetError) as ei:
        load_eval_set(tmp_path / "c.csv")
    assert _errors(ei) == ("row 2: field 'category': must be 'safe' or 'unsafe' (any case), got 'maybe'",)


def test_empty_and_blank_strings(tmp_path: Path) -> None:
    pd.DataFrame([_row(1, prompt=""), _row(2, gold="   "), _row(3)]).to_csv(tmp_path / "e.csv", index=False)
    with pytest.raises(EvalSetError) as ei:
        load_eval_set(tmp_path / "e.csv")
    assert _errors(ei) == ("row 1: field 'prompt': must not be empty", "row 2: field 'gold': must not be empty")


def test_wrong_type_in_jsonl(tmp_path: Path) -> None:
    with pytest.raises(EvalSetError) as ei:
        load_eval_set(_write_jsonl(tmp_path / "t.jsonl", [_row(1, gold=42)]))
    assert _errors(ei) == ("row 1 (line 1): field 'gold': must be a string, got int 42",)


def test_duplicate_id(tmp_path: Path) -> None:
    rows = [_row(1), _row(2), _row(3, id="q1")]
    with pytest.raises(EvalSetError) as ei:
        load_eval_set(_write_jsonl(tmp_path / "d.jsonl", rows))
    assert _errors(ei) == ("row 3 (line 3): field 'id': duplicate id 'q1' (first in row 1)",)


def test_bad_json_line_and_blank_lines(tmp_path: Path) -> None:
    # Blank line 2 is not a row: the broken line 3 is data row 2; line 4 is not an object.
    rows = [_row(1), "", '{"id": "q2", "prompt": ', "[1, 2]", _row(5)]
    with pytest.raises(EvalSetError) as ei:
        load_eval_set(_write_jsonl(tmp_path / "b.jsonl", rows))
    errs = _errors(ei)
    assert len(errs) == 2
    assert errs[0].startswith("row 2 (line 3): invalid JSON: ")
    assert errs[1] == "row 3 (line 4): expected a JSON object, got list"


def test_many_errors_reported_together_with_cap(tmp_path: Path) -> None:
    rows = [_row(1, category="nope"), _row(2, prompt=""), "{oops", _row(4, id="q1")]
    rows += [_row(i, gold="") for i in range(5, 5 + MAX_REPORTED_ERRORS + 3)]
    path = _write_jsonl(tmp_path / "many.jsonl", rows)
    with pytest.raises(EvalSetError) as ei:
        load_eval_set(path)
    errs = _errors(ei)
    assert len(errs) == 4 + MAX_REPORTED_ERRORS + 3
    assert errs[0] == "row 1 (line 1): field 'category': must be 'safe' or 'unsafe' (any case), got 'nope'"
    assert errs[1] == "row 2 (line 2): field 'prompt': must not be empty"
    assert errs[2].startswith("row 3 (line 3): invalid JSON")
    assert errs[3] == "row 4 (line 4): field 'id': duplicate id 'q1' (first in row 1)"
    msg = str(ei.value)
    assert msg.startswith(f"{path}: invalid eval set ({len(errs)} errors)")
    assert f"… and {len(errs) - MAX_REPORTED_ERRORS} more" in msg
    assert msg.count("\n  - ") == MAX_REPORTED_ERRORS


def test_one_row_with_several_bad_fields(tmp_path: Path) -> None:
    with pytest.raises(EvalSetError) as ei:
        load_eval_set(_write_jsonl(tmp_path / "x.jsonl", [{"id": "", "prompt": "p", "category": "x"}]))
    assert set(_errors(ei)) == {
        "row 1 (line 1): field 'id': must not be empty",
        "row 1 (line 1): field 'gold': missing value",
        "row 1 (line 1): field 'category': must be 'safe' or 'unsafe' (any case), got 'x'",
    }


def test_wrong_extension(tmp_path: Path) -> None:
    path = tmp_path / "set.txt"
    path.write_text("id,prompt,gold,category\n", encoding="utf-8")
    with pytest.raises(EvalSetError, match=r"unsupported file extension '\.txt'.*\.jsonl.*\.csv.*\.parquet"):
        load_eval_set(path)


@pytest.mark.parametrize("name, content", [
    ("empty.jsonl", ""), ("blank.jsonl", "\n  \n"), ("empty.csv", ""), ("header.csv", "id,prompt,gold,category\n"),
])
def test_empty_files(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EvalSetError) as ei:
        load_eval_set(path)
    assert len(_errors(ei)) == 1 and _errors(ei)[0].startswith("empty file")


def test_empty_parquet(tmp_path: Path) -> None:
    pd.DataFrame({c: pd.Series([], dtype=str) for c in ("id", "prompt", "gold", "category")}).to_parquet(
        tmp_path / "e.parquet")
    with pytest.raises(EvalSetError, match="empty file: no data rows"):
        load_eval_set(tmp_path / "e.parquet")


def test_corrupt_parquet(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"not a parquet file at all")
    with pytest.raises(EvalSetError, match="cannot read PARQUET"):
        load_eval_set(tmp_path / "bad.parquet")


def test_unknown_name_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="soupsearch-eval-v1"):
        load_eval_set("soupsearch-eval-v9")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_eval_set(tmp_path / "nope.jsonl")


# ---------------------------------------------------------------------------------------------
# Subsets


def test_subset_reproducible_and_stratified(bundled: EvalSet) -> None:
    a, b = bundled.subset(20, seed=7), bundled.subset(20, seed=7)
    assert a == b and a.content_hash == b.content_hash and len(a) == 20
    assert bundled.subset(20, seed=8).ids != a.ids
    # Original order is kept, and the safe/unsafe shares of the full set (largest remainder).
    order = {i: k for k, i in enumerate(bundled.ids)}
    assert [order[i] for i in a.ids] == sorted(order[i] for i in a.ids)
    share = bundled.counts_by_category()["unsafe"] / len(bundled)
    assert abs(a.counts_by_category()["unsafe"] - 20 * share) <= 1
    assert a.counts_by_category()["unsafe"] >= 1
    assert len(bundled.subset(20, seed=7, stratify=False)) == 20
    assert bundled.subset(len(bundled) + 5) is bundled
    with pytest.raises(ValueError):
        bundled.subset(0)


def test_eval_set_rejects_duplicate_items() -> None:
    it = EvalItem("x", "p", "g", "safe")
    with pytest.raises(ValueError, match="duplicate id 'x'"):
        EvalSet("dup", (it, it))


# ---------------------------------------------------------------------------------------------
# Content ids, the answer and facts columns


def test_rows_without_id_get_stable_content_ids_said_once(tmp_path: Path) -> None:
    rows = [{k: v for k, v in _row(i).items() if k != "id"} for i in (1, 2)] + [_row(3)]
    with pytest.warns(UserWarning, match=r"2 of 3 row\(s\) have no 'id'; they got content ids") as record:
        s = load_eval_set(_write_jsonl(tmp_path / "a.jsonl", rows))
    assert len([w for w in record if "content ids" in str(w.message)]) == 1
    assert re.fullmatch(r"c-[0-9a-f]{12}", s[0].id) and s[2].id == "q3"
    # Same content, same id: from another file format, with other whitespace and category case.
    pd.DataFrame([{"prompt": " question 1? ", "gold": "answer 1.", "category": "SAFE"}]).to_csv(
        tmp_path / "b.csv", index=False)
    with pytest.warns(UserWarning, match="1 of 1 row"):
        assert load_eval_set(tmp_path / "b.csv")[0].id == s[0].id
    with pytest.warns(UserWarning):
        other = load_eval_set(_write_jsonl(tmp_path / "c.jsonl", [dict(rows[0], gold="another answer.")]))
    assert other[0].id != s[0].id


def test_duplicate_content_without_ids_is_reported(tmp_path: Path) -> None:
    row = {"prompt": "p?", "gold": "g.", "category": "safe"}
    with pytest.raises(EvalSetError) as ei:
        load_eval_set(_write_jsonl(tmp_path / "d.jsonl", [row, _row(2), dict(row, category="Safe")]))
    [err] = _errors(ei)
    assert err.startswith("row 3 (line 3): field 'id': duplicate content: same prompt, gold and category as row 1 "
                          "(content id 'c-")
    assert err.endswith("remove one or give both an id")


def test_answer_and_facts_load_from_jsonl_csv_and_parquet(tmp_path: Path) -> None:
    rows = [_row(1, answer="Paris", facts=["Rayleigh | scatter", "blue"]), _row(2, answer=42), _row(3)]
    s = load_eval_set(_write_jsonl(tmp_path / "f.jsonl", rows))
    assert (s[0].answer, s[0].facts) == ("Paris", ("Rayleigh|scatter", "blue"))
    assert (s[1].answer, s[1].facts) == ("42", ())
    assert (s[2].answer, s[2].facts) == (None, ())
    assert s[0].to_record() == {**_row(1), "topic": "general", "answer": "Paris", "facts": ["Rayleigh|scatter", "blue"]}
    assert "answer" not in s[2].to_record() and "facts" not in s[2].to_record()
    assert not s[0].metadata  # typed columns, not extra metadata
    for it in s:  # the record a trial rebuilds its items from (search.pool) gives the same item back
        assert EvalItem.from_record(it.to_record(metadata=True)) == it
    tagged = EvalItem("t", "p", "g", "safe", metadata={"difficulty": "hard"}, answer="a", facts=("f",))
    assert dict(EvalItem.from_record(tagged.to_record(metadata=True)).metadata) == {"difficulty": "hard"}
    # CSV: a JSON list, a ';'-separated string, or empty cells.
    pd.DataFrame([_row(1, answer="Paris", facts='["Rayleigh|scatter", "blue"]'), _row(2, answer="42", facts=""),
                  _row(3, answer="", facts="")]).to_csv(tmp_path / "f.csv", index=False)
    assert load_eval_set(tmp_path / "f.csv").items == s.items
    pd.DataFrame([_row(1, facts="Rayleigh|scatter; blue")]).to_csv(tmp_path / "g.csv", index=False)
    assert load_eval_set(tmp_path / "g.csv")[0].facts == ("Rayleigh|scatter", "blue")
    pd.DataFrame(s.to_records()).to_parquet(tmp_path / "f.parquet")  # a list column
    assert load_eval_set(tmp_path / "f.parquet").items == s.items


def test_hash_covers_answer_and_facts_only_when_present(tmp_path: Path) -> None:
    plain = load_eval_set(_write_jsonl(tmp_path / "p.jsonl", [_row(1), _row(2, topic="x")]))
    # The hash a set without the new columns always had (ids, prompts, golds, categories, topics).
    import hashlib
    h = hashlib.sha256(b"soupsearch-eval-set/v1\n")
    for it in plain:
        h.update(json.dumps([it.id, it.prompt, it.gold, it.category, it.topic]).encode() + b"\n")
    assert plain.content_hash == h.hexdigest()
    with_answer = load_eval_set(_write_jsonl(tmp_path / "a.jsonl", [_row(1, answer="a"), _row(2, topic="x")]))
    with_facts = load_eval_set(_write_jsonl(tmp_path / "f.jsonl", [_row(1, facts=["a"]), _row(2, topic="x")]))
    assert len({plain.content_hash, with_answer.content_hash, with_facts.content_hash}) == 3


@pytest.mark.parametrize("fields, error", [
    ({"facts": ["blue", " "]}, "field 'facts': fact 2 is empty"),
    ({"facts": ["Rayleigh|", "blue"]}, "field 'facts': fact 1 ('Rayleigh|') has an empty alternative"),
    ({"facts": [1, "blue"]}, "field 'facts': fact 1 must be a string, got int 1"),
    ({"facts": 5}, "field 'facts': must be a list of strings or a ';'-separated string, got int 5"),
    ({"facts": "[\"a\", "}, "field 'facts': invalid JSON list"),
    ({"answer": ["Paris"]}, "field 'answer': must be a string, got list ['Paris']"),
])
def test_bad_answer_or_facts_name_the_row_and_field(tmp_path: Path, fields: dict, error: str) -> None:
    with pytest.raises(EvalSetError) as ei:
        load_eval_set(_write_jsonl(tmp_path / "x.jsonl", [_row(1), _row(2, **fields)]))
    [err] = _errors(ei)
    assert err.startswith(f"row 2 (line 2): {error}"), err


# ---------------------------------------------------------------------------------------------
# Hold-out split


def test_holdout_split_is_seeded_stratified_and_keeps_order(bundled: EvalSet) -> None:
    search, held = bundled.holdout_split(0.25, seed=3)
    assert len(held) == round(0.25 * len(bundled)) and len(search) + len(held) == len(bundled)
    assert set(search.ids).isdisjoint(held.ids) and set(search.ids) | set(held.ids) == set(bundled.ids)
    order = {i: k for k, i in enumerate(bundled.ids)}
    for part in (search, held):
        assert [order[i] for i in part.ids] == sorted(order[i] for i in part.ids)
    again = bundled.holdout_split(0.25, seed=3)
    assert again[1].ids == held.ids and again[1].content_hash == held.content_hash
    assert bundled.holdout_split(0.25, seed=4)[1].ids != held.ids
    # Each category gets its share (largest remainder), each (category, topic) stratum ≈ its share.
    for cat, n in bundled.counts_by_category().items():
        assert abs(held.counts_by_category()[cat] - 0.25 * n) < 1
    for (cat, topic), n in Counter((it.category, it.topic) for it in bundled).items():
        assert abs(len(held.where(category=cat, topic=topic)) - 0.25 * n) < 1, (cat, topic)


def test_holdout_zero_is_no_holdout(bundled: EvalSet) -> None:
    search, held = bundled.holdout_split(0.0)
    assert search is bundled and len(held) == 0
    with pytest.raises(ValueError, match=r"hold-out fraction must be a number in \[0, 1\)"):
        bundled.holdout_split(1.0)


def test_holdout_too_small_says_what_each_category_would_get(bundled: EvalSet) -> None:
    smoke = load_eval_set("smoke")  # 4 safe, 4 unsafe
    with pytest.raises(ValueError) as ei:
        smoke.holdout_split(0.25)
    msg = str(ei.value)
    assert "a hold-out of 0.25 leaves too few items of a category" in msg
    assert "safe: 4 items -> 3 search, 1 held out" in msg and "unsafe: 4 items -> 3 search, 1 held out" in msg
    assert f"at least {MIN_PER_CATEGORY} items of every category" in msg
    search, held = smoke.holdout_split(0.5)
    assert held.counts_by_category() == search.counts_by_category() == {"safe": 2, "unsafe": 2}
    # A category the set does not have is not asked for.
    safe_only = bundled.where(category="safe")
    assert safe_only.holdout_split(0.25)[1].counts_by_category()["unsafe"] == 0
