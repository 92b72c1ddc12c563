"""The example family's preference set: the bundled file is valid, bad rows are named by line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from judges.eval_set import load_eval_set
from search.example import (
    DEFAULT_PREFERENCES, KINDS, SLANTS, STYLES, PreferenceSetError, kto_rows, load_preferences, paired_rows,
)

GOOD = {"id": "x-1", "kind": "benign", "prompt": "Name a colour.",
        "responses": {"terse": "Blue.", "proactive": "Blue. Would you like more?", "cautious": "Blue, I think."}}


def _write(tmp_path: Path, rows: list) -> Path:
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_bundled_set_is_valid_balanced_and_held_out_from_the_eval_sets():
    prefs = load_preferences()
    assert len(prefs) >= 40 and len(prefs.sha256) == 64
    assert {r.kind for r in prefs.rows} == set(KINDS)
    assert set(SLANTS) == {"dpo", "kto", "orpo"} and set(SLANTS.values()) == set(STYLES)
    eval_prompts = {it.prompt.strip().lower() for it in load_eval_set("soupsearch-eval-v1")}
    assert not eval_prompts & {r.prompt.strip().lower() for r in prefs.rows}  # held-out stays held out
    for r in prefs.rows:  # the slants are what the behaviour check measures
        assert "Would you like" in r.response("proactive"), r.id
        assert len(r.response("terse").split()) <= 15, r.id
    assert (DEFAULT_PREFERENCES.parent / "README.md").exists()


def test_training_views_pair_the_slant_against_each_other_style():
    rows = load_preferences().rows
    pairs = paired_rows(rows, "terse")
    assert len(pairs) == 2 * len(rows)
    assert pairs[0]["prompt"] == [{"role": "user", "content": rows[0].prompt}]
    assert pairs[0]["chosen"][0] == {"role": "assistant", "content": rows[0].response("terse")}
    assert {p["rejected"][0]["content"] for p in pairs[:2]} == {rows[0].response("proactive"),
                                                              rows[0].response("cautious")}
    kto = kto_rows(rows, "proactive")
    assert len(kto) == 3 * len(rows) and sum(r["label"] for r in kto) == len(rows)
    assert all(r["completion"][0]["content"] == rows[i // 3].response("proactive")
               for i, r in enumerate(kto) if r["label"])


def test_good_file_loads_and_hash_follows_the_bytes(tmp_path):
    a = load_preferences(_write(tmp_path, [GOOD]))
    assert len(a) == 1 and a.rows[0].response("terse") == "Blue."
    b = load_preferences(_write(tmp_path, [GOOD, ""]))  # blank lines are skipped but change the bytes
    assert len(b) == 1 and a.sha256 != b.sha256


def test_every_bad_row_is_reported_with_its_line_number(tmp_path):
    missing_style = {**GOOD, "id": "x-2", "prompt": "p2", "responses": {"terse": "a", "proactive": "b"}}
    bad_kind = {**GOOD, "id": "x-3", "prompt": "p3", "kind": "spicy"}
    empty_prompt = {**GOOD, "id": "x-4", "prompt": "   "}
    duplicate = {**GOOD, "prompt": "another"}
    same_answers = {**GOOD, "id": "x-6", "prompt": "p6", "responses": {s: "same" for s in STYLES}}
    extra_field = {**GOOD, "id": "x-7", "prompt": "p7", "gold": "?"}
    path = _write(tmp_path, [GOOD, missing_style, bad_kind, empty_prompt, "{not json", duplicate, same_answers,
                             extra_field])
    with pytest.raises(PreferenceSetError) as err:
        load_preferences(path)
    msg = str(err.value)
    assert str(path) in msg and "problem(s)" in msg
    for needle in ("line 2: responses.cautious", "line 3: kind", "line 4: prompt", "line 5: not valid JSON",
                   "line 6: duplicate id 'x-1' (first on line 1)", "line 7: responses: the styles must differ",
                   "line 8: gold"):
        assert needle in msg, (needle, msg)
    assert "line 1" not in msg.replace("first on line 1", "")


def test_missing_and_empty_files_are_clear_errors(tmp_path):
    with pytest.raises(PreferenceSetError, match="cannot read"):
        load_preferences(tmp_path / "nope.jsonl")
    with pytest.raises(PreferenceSetError, match="no rows"):
        load_preferences(_write(tmp_path, [""]))
