"""Homogeneous variants of the example family without training: names, settings, CLI parsing.

The trained path (a real `dpo-s1` run) is `test_example_homogeneous.py` (slow)."""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace
from pathlib import Path

import pytest

import search.example as example
from run_search import main as soupsearch_main
from search.example import (
    DEFAULT_SETTINGS, HOMOGENEOUS_SEED, METHODS, homogeneous_arg, homogeneous_name, homogeneous_settings,
    variant_settings,
)


def test_homogeneous_name_marks_the_seed_and_refuses_the_standard_run_and_unknown_methods():
    assert HOMOGENEOUS_SEED == 1
    assert [homogeneous_name(m) for m in METHODS] == ["dpo-s1", "kto-s1", "orpo-s1"]
    assert homogeneous_name("kto", 7) == "kto-s7"
    with pytest.raises(ValueError, match="standard run"):
        homogeneous_name("dpo", DEFAULT_SETTINGS["dpo"].seed)  # would be the plain `dpo` run again
    with pytest.raises(ValueError, match="dpo, kto, orpo"):
        homogeneous_name("sft")


@pytest.mark.parametrize("method", METHODS)
def test_homogeneous_settings_differ_from_the_default_only_in_the_seed(method):
    settings = homogeneous_settings(method)
    assert settings.seed == HOMOGENEOUS_SEED != DEFAULT_SETTINGS[method].seed
    assert replace(settings, seed=DEFAULT_SETTINGS[method].seed) == DEFAULT_SETTINGS[method]
    short = homogeneous_settings(method, steps=2)
    assert short == replace(DEFAULT_SETTINGS[method].with_steps(2), seed=HOMOGENEOUS_SEED)


def test_variant_settings_append_the_reruns_in_the_given_order_once_each():
    assert variant_settings() == DEFAULT_SETTINGS  # the default family is unchanged
    settings = variant_settings(steps=3, homogeneous=("orpo", "dpo", "orpo"))
    assert list(settings) == ["dpo", "kto", "orpo", "orpo-s1", "dpo-s1"]
    assert settings["dpo-s1"] == homogeneous_settings("dpo", steps=3) and settings["dpo-s1"].steps == 3
    assert asdict(settings["orpo-s1"]) == asdict(settings["orpo"]) | {"seed": 1}
    with pytest.raises(ValueError, match="unknown"):
        variant_settings(homogeneous=("foo",))


def test_homogeneous_arg_parses_a_comma_list():
    assert homogeneous_arg("dpo, kto,") == ("dpo", "kto")
    for bad in ("foo", "dpo,foo", ",", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="choose from dpo, kto, orpo"):
            homogeneous_arg(bad)


def test_prepare_rejects_an_unknown_method_before_touching_the_data_dir(tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        example.prepare_example(tmp_path / "example", homogeneous=("foo",))
    assert not (tmp_path / "example").exists()


def test_cli_rejects_unknown_methods_and_passes_the_list_on(monkeypatch, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        soupsearch_main(["prepare-example", "--homogeneous", "dpo,foo"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--homogeneous" in err and "foo" in err and "dpo, kto, orpo" in err

    seen: dict[str, object] = {}

    def fake_prepare(data_dir: Path, **kwargs: object) -> dict[str, Path]:
        seen.update(kwargs)
        return {"base": data_dir / "base"}

    monkeypatch.setattr(example, "prepare_example", fake_prepare)  # the command imports it when it runs
    args = ["prepare-example", "--data-dir", str(tmp_path), "--threads", "0"]
    assert soupsearch_main([*args, "--homogeneous", "kto,dpo"]) == 0
    assert seen["homogeneous"] == ("kto", "dpo")
    assert soupsearch_main(args) == 0
    assert seen["homogeneous"] == ()


def test_kto_rows_are_shuffled_by_a_nonzero_seed_only():
    from search.example import SLANTS, kto_rows, load_preferences

    prefs = load_preferences().rows

    def rows(seed: int) -> list[dict]:
        return kto_rows(prefs, SLANTS["kto"], ["cautious"], seed=seed)

    in_file_order = kto_rows(prefs, SLANTS["kto"], ["cautious"])
    assert rows(0) == in_file_order  # the standard kto run keeps its order (and its cached checkpoint)
    assert rows(1) != in_file_order and sorted(map(str, rows(1))) == sorted(map(str, in_file_order))
    assert rows(1) == rows(1) != rows(2)
