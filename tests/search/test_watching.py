"""Watching a run: the Ray dashboard every local run starts (or the reason it has none), and the
trials, references and front as `name=value` lines that read in the dashboard's job log view,
which collapses runs of spaces."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from search.config import parse_search_config
from search.dashboard import dashboard_line
from search.log_lines import front_lines, front_summary, reference_line, trial_line
from search.pool import Context, start_ray
from search.recorder import ResultsCallback

OBJECTIVES = ["safety", "factuality"]


def _scores(prefix: str = "", **values: tuple[float, float, float]) -> dict[str, float]:
    out = {}
    for name, (value, low, high) in values.items():
        out |= {f"{prefix}{name}": value, f"{prefix}{name}_low": low, f"{prefix}{name}_high": high}
    return out


def test_a_finished_trial_is_one_line_of_names_and_values_with_intervals():
    row = {"trial_number": 7, "method": "task_arithmetic", "status": "ok", "trial_s": 17.26,
           **_scores(safety=(0.812, 0.7, 0.9), factuality=(0.296, 0.148, 0.481))}
    assert trial_line(row, OBJECTIVES) == \
        "trial 7 ok method=task_arithmetic safety=0.812 [0.70, 0.90] factuality=0.296 [0.15, 0.48] trial_s=17.3"


def test_a_failed_trial_line_ends_with_the_first_line_of_its_error():
    row = {"trial_number": 3, "method": "breadcrumbs_ties", "status": "failed", "trial_s": 2.0,
           "error": "worker lost: ActorDiedError\nTraceback (most recent call last): ..."}
    assert trial_line(row, OBJECTIVES) == \
        "trial 3 failed method=breadcrumbs_ties trial_s=2.0 error=worker lost: ActorDiedError"
    assert trial_line({"trial_number": 4, "method": "ties", "status": "failed"}, OBJECTIVES) == \
        "trial 4 failed method=ties"


def test_the_front_is_the_title_the_references_and_a_line_per_front_trial():
    references = {"base": _scores(safety=(0.778, 0.64, 0.92), factuality=(0.333, 0.19, 0.56))
                  | _scores("holdout.", safety=(0.75, 0.5, 1.0), factuality=(0.444, 0.11, 0.78)),
                  "orpo": _scores(safety=(0.972, 0.89, 1.0), factuality=(0.185, 0.04, 0.33))}
    rows = [{"trial_number": 0, "method": "task_arithmetic", **_scores(safety=(0.917, 0.81, 1.0),
                                                                       factuality=(0.296, 0.15, 0.48))
             | _scores("holdout.", safety=(0.917, 0.75, 1.0), factuality=(0.556, 0.22, 0.89))},
            {"trial_number": 1, "method": "ties", **_scores(safety=(0.5, 0.3, 0.7), factuality=(0.1, 0.0, 0.2))},
            {"trial_number": 5, "method": "alignment_slerp", **_scores(safety=(0.972, 0.89, 1.0),
                                                                       factuality=(0.111, 0.0, 0.22))}]
    lines = front_lines(rows, [2, 0], references, OBJECTIVES, "final Pareto front (2 of 3 trials)", {2: ["orpo"]})
    assert lines == [
        "final Pareto front (2 of 3 trials)",
        "reference base safety=0.778 [0.64, 0.92] factuality=0.333 [0.19, 0.56] "
        "holdout.safety=0.750 [0.50, 1.00] holdout.factuality=0.444 [0.11, 0.78]",
        "reference orpo safety=0.972 [0.89, 1.00] factuality=0.185 [0.04, 0.33]",
        "front trial 0 method=task_arithmetic safety=0.917 [0.81, 1.00] factuality=0.296 [0.15, 0.48] "
        "holdout.safety=0.917 [0.75, 1.00] holdout.factuality=0.556 [0.22, 0.89]",
        "front trial 5 method=alignment_slerp safety=0.972 [0.89, 1.00] factuality=0.111 [0.00, 0.22] "
        "dominated_by=orpo",
    ]
    # nothing in them is laid out by spaces: a viewer that collapses runs of spaces shows them unchanged
    assert all(" ".join(line.split()) == line for line in lines)
    assert reference_line("orpo", references["orpo"], OBJECTIVES) == lines[2]
    # between trials a log gets one line naming the front's members
    assert front_summary(rows, [2, 0], "Pareto front after 3 trials (search items)") == \
        "Pareto front after 3 trials (search items): trial 0 task_arithmetic, trial 5 alignment_slerp"
    assert front_summary(rows, [], "Pareto front after 3 trials (search items)").endswith(": empty")


@pytest.mark.parametrize("terminal", [True, False])
def test_the_front_is_a_table_on_a_terminal_and_lines_in_a_log(terminal, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TTY_COMPATIBLE", "1" if terminal else "0")  # rich's own switch for what a terminal is
    ctx = Context(prompts=[], items=[], objectives=["safety"], sources=["dpo"], generation={}, queue=None,
                  workers=[], judges=[], namespace="t", retries=0,
                  references={"base": _scores(safety=(0.5, 0.4, 0.6))})
    rows = [{"trial_number": 0, "method": "linear", "status": "ok", **_scores(safety=(0.7, 0.6, 0.8))}]
    table = ResultsCallback(tmp_path, ctx, [], rows).show([0], "front")
    assert table.splitlines()[1].split() == ["trial", "method", "items", "safety", "beaten", "by"]
    assert capsys.readouterr().out.splitlines() == (table.splitlines() if terminal else [
        "front", "reference base safety=0.500 [0.40, 0.60]", "front trial 0 method=linear safety=0.700 [0.60, 0.80]"])


def test_the_dashboard_line_says_where_it_is_or_why_there_is_none():
    assert dashboard_line("127.0.0.1:8265", joined=False, token_auth=True, missing="", logs="/l") == (
        "Ray dashboard: http://127.0.0.1:8265 (Jobs: the log of this run; Actors: the merge workers and judges; "
        "log in with the token that ray get-auth-token prints)")
    assert dashboard_line("http://10.0.0.5:8265", joined=True, token_auth=False, missing="", logs="/l") == (
        "Ray dashboard: http://10.0.0.5:8265 (Jobs: the log of this run; Actors: the merge workers and judges)")
    assert dashboard_line("", joined=False, token_auth=True, missing="No module named 'aiohttp'", logs="/l") == (
        "no Ray dashboard: ray[default] is not fully installed (No module named 'aiohttp'); the search runs "
        "without it (.venv/bin/pip install 'ray[default]' adds it)")
    assert dashboard_line(None, joined=False, token_auth=True, missing="", logs="/tmp/ray/s/logs") == (
        "no Ray dashboard: it did not start (see /tmp/ray/s/logs/dashboard.log); the search runs "
        "without it")
    assert dashboard_line("", joined=True, token_auth=True, missing="", logs="/l").startswith(
        "no Ray dashboard: the head of the cluster runs none")


def _config():
    return parse_search_config({"models": {"base": "b", "sources": {"x": "x", "y": "y"}},
                                "workers": {"count": 1, "cpus": 1}})


def test_a_local_run_starts_the_dashboard_and_prints_its_url(capsys, ray_cleanup):
    start_ray(_config())
    printed = capsys.readouterr().out
    match = re.search(r"^Ray dashboard: (http://127\.0\.0\.1:\d+) \(Jobs: the log of this run", printed, re.M)
    assert match, printed
    url = match.group(1)
    with urllib.request.urlopen(f"{url}/", timeout=30) as page:
        assert "<title>Ray Dashboard</title>" in page.read().decode()
    if "log in with the token" in printed:  # its API answers with the token the line points to, not without
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/api/version", timeout=30)
        assert refused.value.code == 401
        token = subprocess.run([str(Path(sys.executable).parent / "ray"), "get-auth-token"], capture_output=True,
                               text=True, check=True).stdout.strip()
        request = urllib.request.Request(f"{url}/api/version", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200


def test_without_ray_default_the_run_goes_on_and_says_why_there_is_no_dashboard(tmp_path):
    """One of `ray[default]`'s packages missing, as in a plain `pip install ray` (a module that
    is not found shadows aiohttp_cors): Ray starts without a dashboard, the reason is printed,
    and tasks run."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "aiohttp_cors.py").write_text("raise ModuleNotFoundError(\"No module named 'aiohttp_cors'\", "
                                         "name='aiohttp_cors')\n")
    script = textwrap.dedent("""
        import ray
        from search.config import parse_search_config
        from search.pool import start_ray

        start_ray(parse_search_config({"models": {"base": "b", "sources": {"x": "x", "y": "y"}},
                                       "workers": {"count": 1, "cpus": 1}}))
        print(ray.get(ray.remote(lambda: "a task ran").remote()))
        ray.shutdown()
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(hide), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert ("no Ray dashboard: ray[default] is not fully installed (No module named 'aiohttp_cors'); "
            "the search runs without it") in done.stdout
    assert "a task ran" in done.stdout
