"""Eval sets: the bundled set's content, loading from JSONL/CSV/Parquet, and every validation error."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from judges.eval_set import (
    BUNDLED_EVAL_SETS,
    MAX_REPORTED_ERRORS,
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
