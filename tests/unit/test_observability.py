"""The Grafana dashboard and the Prometheus scrape config name only what the services export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from elsa.infra.metrics import ServiceMetrics
from elsa_client.metrics import DeviceMetrics
from elsa_cloud.metrics import CloudMetrics
from elsa_edge.metrics import EdgeMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "observability" / "grafana-dashboard.json"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported(metrics: ServiceMetrics) -> set[str]:
    """Every sample name a service's registry can export."""
    names = set()
    for family in metrics.registry.collect():
        for suffix in _SUFFIXES[family.type]:
            names.add(family.name + suffix)
    return names


def test_every_dashboard_expression_uses_exported_metrics() -> None:
    available = exported(CloudMetrics()) | exported(EdgeMetrics()) | exported(DeviceMetrics())
    dashboard = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= set(re.findall(r"\belsa_[a-z_]+\b", target["expr"]))
    assert used, "the dashboard queries no ELSA metric"
    assert used <= available, sorted(used - available)
    # the dashboard covers each tier
    assert any(n.startswith("elsa_cloud_") for n in used)
    assert any(n.startswith("elsa_edge_") for n in used)
    assert any(n.startswith("elsa_device_") for n in used)


def test_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and dashboard["title"]
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]


def test_metric_names_follow_prometheus_conventions() -> None:
    for metrics in (CloudMetrics(), EdgeMetrics(), DeviceMetrics()):
        for family in metrics.registry.collect():
            assert re.fullmatch(r"elsa_[a-z_]+", family.name), family.name
            if family.type == "histogram":
                assert family.name.endswith("_seconds"), family.name
            assert family.documentation, family.name


def test_scrape_config_targets_the_services_ports() -> None:
    config = yaml.safe_load((ROOT / "observability" / "prometheus.yml").read_text())
    ports = {"elsa-cloud": "8000", "elsa-edge": "8100", "elsa-device": "8200"}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(ports)
    for name, job in jobs.items():
        for target in job["static_configs"][0]["targets"]:
            assert target.endswith(f":{ports[name]}"), target


def test_operations_guide_lists_exactly_the_exported_metrics() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    rows = re.findall(r"^\| `(elsa_[a-z_]+)` \| (counter|gauge|histogram) \|", text, flags=re.M)
    documented = {(name.removesuffix("_total") if kind == "counter" else name, kind) for name, kind in rows}
    families = {
        (family.name, family.type)
        for metrics in (CloudMetrics(), EdgeMetrics(), DeviceMetrics())
        for family in metrics.registry.collect()
    }
    assert documented == families, (sorted(documented - families), sorted(families - documented))
