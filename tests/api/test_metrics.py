"""Prometheus ``/metrics`` on every service: request counts and errors by route, the service's
own metrics after real work, and the optional scrape token."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from elsa_client.main import create_app as create_client
from elsa_client.settings import ClientSettings
from elsa_cloud.main import create_app as create_cloud
from elsa_cloud.settings import CloudSettings

from .conftest import Cloud
from .support import assert_error, bearer, serve
from .test_edge import DEVICES, FRAMES, Edge, activations, edge, forward_request, frames  # noqa: F401

pytestmark = pytest.mark.anyio


async def scrape(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``/metrics`` parsed: (sample name, labels) -> value."""
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sample's value (KeyError naming what exists when it is missing)."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        names = sorted({str(dict(k[1])) for k in samples if k[0] == name})
        raise KeyError(f"{name}{labels} not exported; have {names}")
    return samples[key]


async def test_cloud_counts_requests_errors_runs_and_nodes(cloud: Cloud) -> None:
    before = await scrape(cloud.client)
    assert value(before, "elsa_service_info", service="cloud") == 1.0
    assert value(before, "elsa_cloud_runs", state="created") == 0.0

    assert_error(await cloud.client.get("/v1/runs"), 401, "unauthorized")
    assert_error(await cloud.client.get("/v1/runs/nope", headers=cloud.admin), 404, "not_found")
    node_id, _ = await cloud.join("device", "device-000")
    run = await cloud.create_run()

    after = await scrape(cloud.client)
    assert value(after, "elsa_http_requests_total", method="GET", route="/v1/runs", status="401") == 1.0
    assert (
        value(after, "elsa_http_requests_total", method="GET", route="/v1/runs/{run_id}", status="404") == 1.0
    )
    assert value(after, "elsa_errors_total", code="unauthorized") == 1.0
    assert value(after, "elsa_errors_total", code="not_found") == 1.0
    assert (
        value(after, "elsa_http_request_duration_seconds_count", method="POST", route="/v1/nodes/join") == 1.0
    )
    assert value(after, "elsa_cloud_nodes", role="device", alive="true") == 1.0
    assert value(after, "elsa_cloud_nodes", role="edge", alive="true") == 0.0
    active = sum(value(after, "elsa_cloud_runs", state=s) for s in ("created", "running"))
    assert active == 1.0
    assert value(after, "elsa_cloud_run_round", run_id=run["run_id"]) == 0.0
    assert node_id


async def test_unknown_paths_share_one_route_label(cloud: Cloud) -> None:
    for path in ("/a", "/b/c", "/d"):
        assert (await cloud.client.get(path)).status_code == 404
    samples = await scrape(cloud.client)
    assert value(samples, "elsa_http_requests_total", method="GET", route="unmatched", status="404") == 3.0
    assert not any("/b/c" in dict(labels).get("route", "") for _, labels in samples)


async def test_metrics_token_is_enforced_when_set(tmp_path: Path) -> None:
    settings = CloudSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'elsa.db'}",
        adapter_dir=tmp_path / "adapters",
        metrics_token="scrape-secret",
    )
    async with serve(create_cloud(settings)) as client:
        assert_error(await client.get("/metrics"), 401, "unauthorized")
        assert_error(await client.get("/metrics", headers=bearer("wrong")), 401, "unauthorized")
        samples = await scrape(client, bearer("scrape-secret"))
        assert value(samples, "elsa_service_info", service="cloud") == 1.0


async def test_edge_times_split_steps_and_counts_bytes(edge: Edge) -> None:  # noqa: F811
    sid = await edge.open()
    x = activations(batch=2, seq=4)
    response = await edge.post_frames(sid, "forward", frames(forward_request(sid, 0, x)))
    assert response.status_code == 200, response.text
    assert_error(await edge.post_frames(sid, "forward", b"\x00garbage"), 413, "payload_too_large")

    samples = await scrape(edge.client)
    assert value(samples, "elsa_service_info", service="edge") == 1.0
    assert value(samples, "elsa_edge_split_step_seconds_count", phase="forward") == 1.0
    assert value(samples, "elsa_edge_compute_wait_seconds_count", phase="forward") == 1.0
    assert value(samples, "elsa_edge_sessions_opened_total") == 1.0
    assert value(samples, "elsa_edge_sessions") == 1.0
    assert value(samples, "elsa_edge_rounds_served") == 1.0
    assert value(samples, "elsa_edge_bytes_total", direction="in", kind="activations") == edge.state.bytes_in
    assert value(samples, "elsa_edge_bytes_total", direction="out", kind="activations") == len(
        response.content
    )
    assert value(samples, "elsa_errors_total", code="payload_too_large") == 1.0


async def test_device_agent_exports_its_metrics() -> None:
    app = create_client(ClientSettings(autostart=False, cloud_url="http://127.0.0.1:9"))
    async with serve(app) as client:
        samples = await scrape(client)
    assert value(samples, "elsa_service_info", service="client") == 1.0
    assert value(samples, "elsa_device_split_step_seconds_count") == 0.0
    assert value(samples, "elsa_device_train_loss") == 0.0
