"""``/metrics`` of every process after a real short run (cloud + 2 edges + 4 device agents on
loopback, one cloud round of τ2 = 2 edge rounds): what Prometheus would scrape agrees with the
run the operator API describes."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import FinishedRun

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def pick(samples: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """Samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return {k[1]: v for k, v in samples.items() if k[0] == name and want <= k[1]}


def one(samples: Samples, name: str, **labels: str) -> float:
    found = pick(samples, name, **labels)
    assert len(found) == 1, (name, labels, found)
    return next(iter(found.values()))


def test_cloud_metrics_describe_the_run(finished_run: FinishedRun) -> None:
    run_id = finished_run.run_id
    cloud = scrape(finished_run.operator.url)
    control = finished_run.operator.get(f"/v1/runs/{run_id}/control")
    rounds = finished_run.operator.get(f"/v1/runs/{run_id}/metrics")["rounds"]

    assert one(cloud, "elsa_cloud_rounds_total", outcome="completed") == 1.0
    assert one(cloud, "elsa_cloud_round_duration_seconds_count", outcome="completed") == 1.0
    assert one(cloud, "elsa_cloud_round_duration_seconds_sum", outcome="completed") > 0
    assert one(cloud, "elsa_cloud_runs", state="completed") == 1.0
    assert one(cloud, "elsa_cloud_nodes", role="edge", alive="true") == 2.0
    assert one(cloud, "elsa_cloud_nodes", role="device", alive="true") == 4.0
    assert one(cloud, "elsa_cloud_run_round", run_id=run_id) == 1.0
    trust = {dict(k)["device"]: v for k, v in pick(cloud, "elsa_cloud_device_trust", run_id=run_id).items()}
    assert trust == pytest.approx(control["trust"])
    assert one(cloud, "elsa_cloud_quarantined_devices", run_id=run_id) == len(control["quarantined"])
    assert one(cloud, "elsa_cloud_clusters", run_id=run_id) == len(set(control["clusters"].values()))
    accuracy = rounds[-1]["metrics"]["eval_accuracy"]
    assert one(cloud, "elsa_cloud_eval_accuracy", run_id=run_id) == pytest.approx(accuracy)
    run_bytes = {dict(k)["kind"]: v for k, v in pick(cloud, "elsa_cloud_run_bytes", run_id=run_id).items()}
    assert run_bytes == {k: float(v) for k, v in rounds[-1]["bytes"].items()}
    for kind in ("activations", "gradients", "adapters_device_to_edge", "adapters_edge_to_cloud"):
        assert run_bytes[kind] > 0, kind
    # the operator's own calls were counted by route template, with no 5xx anywhere
    assert one(cloud, "elsa_http_requests_total", method="GET", route="/v1/runs/{run_id}", status="200") > 0
    assert not any(dict(k)["status"].startswith("5") for k in pick(cloud, "elsa_http_requests_total"))


def test_edge_metrics_show_split_steps_sessions_and_rounds(finished_run: FinishedRun) -> None:
    edges = [scrape(url) for url in finished_run.urls("edge")]
    assert len(edges) == 2
    for samples in edges:
        # config e2e.yaml: 2 devices per edge, tau2 = 2 edge rounds of tau1 = 3 steps
        assert one(samples, "elsa_edge_sessions_opened_total") >= 2.0
        assert one(samples, "elsa_edge_split_step_seconds_count", phase="forward") >= 2 * 2 * 3
        assert one(samples, "elsa_edge_split_step_seconds_count", phase="backward") == 2 * 2 * 3
        assert one(samples, "elsa_edge_split_step_seconds_sum", phase="backward") > 0
        assert one(samples, "elsa_edge_rounds_total") == 2.0
        assert one(samples, "elsa_edge_uploads_total", outcome="sent") == 1.0
        for kind in ("activations", "gradients", "adapters"):
            assert one(samples, "elsa_edge_bytes_total", direction="in", kind=kind) > 0, kind
        assert one(samples, "elsa_edge_bytes_total", direction="out", kind="adapters_to_cloud") > 0
        assert not any(dict(k)["status"].startswith("5") for k in pick(samples, "elsa_http_requests_total"))


def test_device_metrics_show_steps_rounds_bytes_and_accuracy(finished_run: FinishedRun) -> None:
    devices = [scrape(url) for url in finished_run.urls("device")]
    assert len(devices) == 4
    for samples in devices:
        assert one(samples, "elsa_device_rounds_total", outcome="reported") == 1.0
        assert one(samples, "elsa_device_split_step_seconds_count") == 2.0  # one mean per edge round
        assert one(samples, "elsa_device_round_duration_seconds_count") == 1.0
        assert 0.0 <= one(samples, "elsa_device_eval", metric="accuracy") <= 1.0
        assert one(samples, "elsa_device_train_loss") > 0
        for kind in ("activations", "gradients", "adapters_device_to_edge"):
            assert one(samples, "elsa_device_bytes_total", kind=kind) > 0, kind
