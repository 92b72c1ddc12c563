"""The configs we ship validate (a typo in them would greet every new user)."""

from pathlib import Path

import pytest

from search.config import load_search_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["default.yaml", "cluster-example.yaml"])
def test_shipped_search_configs_validate(name):
    config = load_search_config(CONFIGS / name)
    assert config.search.objectives == ["safety", "factuality", "conciseness", "proactivity"]


def test_default_runs_the_example_on_this_machine():
    config = load_search_config(CONFIGS / "default.yaml")
    assert config.models.example and config.workers.gpus == 0 and config.judging.judge.backend == "rubric"


def test_grafana_dashboard_queries_the_metrics_the_search_exports():
    """Ray exports custom metrics to Prometheus as `ray_<name>`; the dashboard must ask for those."""
    import json
    import re

    import search.metrics as metrics

    dashboard = json.loads((CONFIGS / "grafana" / "soupsearch-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queried = {m for e in exprs for m in re.findall(r"\b(ray_soupsearch_\w+)\{", e)}
    exported = {f"ray_{name}" for name in re.findall(r'Gauge\("(\w+)"', Path(metrics.__file__).read_text())}
    assert queried and queried <= exported, queried - exported
    assert any(panel["type"] == "xychart" for panel in dashboard["panels"])  # the Pareto scatter
    tags = set(re.findall(r'(\w+)=~?"', " ".join(exprs)))
    assert tags <= set(metrics.TAGS) | {"status", "step"}, tags
