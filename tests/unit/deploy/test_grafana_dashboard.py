"""deploy/grafana/edge-service.json: well-formed, every query parses as PromQL, and every
metric and label it uses is one the server really exports on /metrics."""

from __future__ import annotations

import json
import re
from typing import Any

import promql_parser
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge_service.config import REPO_ROOT
from edge_service.server.telemetry import StateCollector, Telemetry

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "edge-service.json"
SCRAPE_LABELS = {"instance", "job", "le", "node"}  # added by Prometheus or histograms


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _exprs() -> list[str]:
    return [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]


def _as_prometheus_sees_it(expr: str) -> str:
    """Grafana's variables replaced the way Grafana does before it sends the query."""
    return expr.replace("$__rate_interval", "1m").replace("$instance", ".*")


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """Sample names the server's registry exposes, with their label names."""
    telemetry = Telemetry()
    telemetry.record("v1_infer", "base@fp32", "ok", 1.0, stream="cam1", engine_ms=0.5)
    telemetry.on_batch("base@fp32", 2, 0.5)
    state = {
        "queue_depth": 0,
        "ready": True,
        "swaps": 1,
        "last_swap_ms": 3.0,
        "active_variant": "base@fp32",
        "power_mode": {"id": 0, "name": "MAXN"},
        "power_mw": {"VDD_IN": 5000.0},
        "temps_c": {"cpu": 50.0},
        "cpu_load": 0.2,
        "mem_available_mb": 1000.0,
    }
    telemetry.registry.register(StateCollector(lambda: state))
    text = generate_latest(telemetry.registry).decode()
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def test_dashboard_is_importable_json_with_unique_panel_ids_and_a_datasource_variable():
    dash = _dashboard()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert dash["uid"] and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["includeAll"] is True
    for p in dash["panels"]:
        assert {"x", "y", "w", "h"} <= p["gridPos"].keys()
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}"


@pytest.mark.parametrize("expr", _exprs())
def test_every_query_parses_as_promql(expr):
    promql_parser.parse(_as_prometheus_sees_it(expr))


def test_promql_parse_catches_a_broken_query():
    with pytest.raises(ValueError, match="parenthesis"):
        promql_parser.parse("sum(rate(edge_requests_total[1m])")


def test_every_metric_the_dashboard_uses_is_exported_by_the_server(exported):
    used = {name for e in _exprs() for name in re.findall(r"\bedge_[a-z_]+\b", e)}
    assert used, "no edge_ metric found in the dashboard"
    assert used <= exported.keys(), used - exported.keys()


def test_every_label_the_dashboard_groups_by_exists(exported):
    labels = set().union(*exported.values()) | SCRAPE_LABELS
    for expr in _exprs():
        for clause in re.findall(r"\b(?:by|on|group_left)\s*\(([^)]*)\)", expr):
            grouped = {w.strip() for w in clause.split(",") if w.strip()}
            assert grouped <= labels, (expr, grouped - labels)


def test_dashboard_covers_adaptation_power_and_latency(exported):
    used = " ".join(_exprs())
    for metric in (
        "edge_active_variant",
        "edge_power_mode",
        "edge_swaps",
        "edge_request_seconds_bucket",
        "edge_engine_seconds_bucket",
        "edge_rail_power_mw",
        "edge_temperature_celsius",
        "edge_queue_depth",
        "edge_ready",
    ):
        assert metric in used, metric
