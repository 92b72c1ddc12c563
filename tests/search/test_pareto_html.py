"""pareto.html as a browser renders it: every trial and every reference model is a point, where
its scores say, on every pair of objectives, with named axes and unclobbered labels.

The page is drawn by plotly's JavaScript, so its HTML source holds only data; headless Chromium
runs the script and `--dump-dom` gives the SVG it drew (plotly draws each marker as a
`path.point` in its trace's `g.points`). Without Chromium the test skips, except in CI (`CI`
set), where `.ci/run` installs Debian's `chromium` and a missing browser is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from search.results import write_results

OBJECTIVES = ["safety", "factuality", "conciseness"]
SCORES = {  # trial -> (method, scores); 0, 1 and 2 are the front, 3 and 5 are dominated by 0, 4 failed
    0: ("linear", (0.9, 0.2, 0.5)), 1: ("ties", (0.5, 0.8, 0.5)), 2: ("task_arithmetic", (0.6, 0.3, 0.9)),
    3: ("dare_ties", (0.4, 0.1, 0.4)), 5: ("della", (0.45, 0.15, 0.45)),
}
# dpo and orpo share their safety and factuality: one label "dpo, orpo" on that subplot
REFERENCES = {"base": (0.3, 0.3, 0.3), "dpo": (0.7, 0.25, 1.0), "orpo": (0.7, 0.25, 0.6)}
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _browser() -> str:
    found = next((path for path in map(shutil.which, BROWSERS) if path), None)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed; .ci/run installs it (apt-get install -y chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list["Node"] = field(default_factory=list)
    text: str = ""

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    def all(self, *classes: str) -> list["Node"]:
        return [n for n in self.walk() if set(classes) <= n.classes]

    def all_text(self) -> str:
        return self.text + "".join(c.all_text() for c in self.children)


class _Tree(HTMLParser):
    """The dumped DOM as a tree (the serialized SVG closes every element it opens)."""

    VOID = {"meta", "link", "br", "img", "input", "hr", "area", "base", "col", "embed", "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.root = Node("document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag):
        if any(n.tag == tag for n in self.stack[1:]):
            while self.stack.pop().tag != tag:
                pass

    def handle_data(self, data):
        self.stack[-1].text += data


def rendered(page: Path, profile: Path) -> Node:
    """The page's DOM after its scripts ran, from headless Chromium."""
    done = subprocess.run(
        [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--window-size=1400,1000", "--virtual-time-budget=10000", "--dump-dom",
         page.as_uri()], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and "main-svg" in done.stdout, done.stderr[-2000:]
    tree = _Tree()
    tree.feed(done.stdout)
    return tree.root


def _translate(point: Node) -> tuple[float, float]:
    x, y = re.fullmatch(r"translate\(([-\d.e]+),\s*([-\d.e]+)\)", point.attrs["transform"]).groups()
    return float(x), float(y)


def _off_affine(values: list[float], pixels: list[float]) -> float:
    """How far (pixels) the points are from one linear axis through the lowest and highest value."""
    (v0, p0), (v1, p1) = min(zip(values, pixels)), max(zip(values, pixels))
    scale = (p1 - p0) / (v1 - v0)
    return max(abs(p0 + (v - v0) * scale - p) for v, p in zip(values, pixels))


def _rows() -> list[dict]:
    rows = []
    for number in range(6):
        if number not in SCORES:
            rows.append({"trial_number": number, "method": "breadcrumbs", "status": "failed", "error": "worker lost"})
            continue
        method, scores = SCORES[number]
        rows.append({"trial_number": number, "method": method, "status": "ok", **dict(zip(OBJECTIVES, scores))})
    return rows


def test_every_trial_and_every_reference_is_a_point_of_the_rendered_plot(tmp_path):
    rows = _rows()
    references = {name: dict(zip(OBJECTIVES, scores)) for name, scores in REFERENCES.items()}
    front = write_results(tmp_path / "run", rows, references, OBJECTIVES, [])
    assert sorted(rows[i]["trial_number"] for i in front) == [0, 1, 2]
    page = rendered(tmp_path / "run" / "pareto.html", tmp_path / "profile")

    legend = [n.all_text() for n in page.all("legendtext")]
    assert legend == ["reference models", "trials", "Pareto front"]
    subplots = page.all("subplot")
    pairs = [("safety", "factuality"), ("safety", "conciseness"), ("factuality", "conciseness")]
    assert len(subplots) == len(pairs)
    # what each trace must draw, in plotly's data order: references, trials off the front, front trials
    expected = [list(REFERENCES.values()), [SCORES[3][1], SCORES[5][1]], [SCORES[n][1] for n in (0, 1, 2)]]
    for subplot, (x, y) in zip(subplots, pairs):
        axes = re.search(r"\b(x\d*)(y\d*)\b", subplot.attrs["class"]).groups()
        assert [n.all_text() for a in axes for n in page.all(f"{a}title")] == [x, y]  # each axis is named
        traces = subplot.all("trace", "scatter")
        points = [[_translate(p) for p in trace.all("point") if p.tag == "path"] for trace in traces]
        assert [len(p) for p in points] == [3, 2, 3], (x, y)
        drawn = [xy for trace in points for xy in trace]
        data = [scores for trace in expected for scores in trace]
        xi, yi = OBJECTIVES.index(x), OBJECTIVES.index(y)
        # every point where its scores put it: pixels are one linear map of the data on each axis
        assert _off_affine([d[xi] for d in data], [p[0] for p in drawn]) < 0.5
        assert _off_affine([d[yi] for d in data], [p[1] for p in drawn]) < 0.5
        labels = sorted(t.all_text() for t in traces[0].all("textpoint") if t.all_text())
        assert labels == (["base", "dpo, orpo"] if (x, y) == ("safety", "factuality") else ["base", "dpo", "orpo"])
