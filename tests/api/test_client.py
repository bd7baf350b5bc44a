"""Device agent: liveness, readiness and status (its work is driven by the cloud, not by API)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from elsa_client.main import create_app
from elsa_client.settings import ClientSettings

from .support import assert_error, serve

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ClientSettings(autostart=False, cloud_url="http://127.0.0.1:9", partition_index=3))
    async with serve(app) as http:
        yield http


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "client", "node_id": None, "checks": {}}


async def test_ready_is_degraded_before_joining(client: httpx.AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded" and body["service"] == "client"
    assert body["node_id"] is None and body["checks"] == {"cloud": "not joined"}


async def test_ready_once_joined() -> None:
    app = create_app(ClientSettings(autostart=False, cloud_url="http://127.0.0.1:9"))
    app.state.agent.status.node_id = "device-device-000-abc"
    async with serve(app) as http:
        body = (await http.get("/ready")).json()
        assert body["status"] == "ok" and body["checks"] == {"cloud": "joined"}
        assert body["node_id"] == "device-device-000-abc"


async def test_status(client: httpx.AsyncClient) -> None:
    response = await client.get("/status")
    assert response.status_code == 200
    assert response.json() == {
        "node_id": None,
        "phase": "starting",
        "run_id": None,
        "round": None,
        "edge_url": None,
        "examples": None,
        "last_metrics": {},
        "links": [],
        "last_error": None,
    }


async def test_unknown_route_is_404_and_wrong_method_405(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/nothing"), 404, "not_found")
    wrong_method = await client.post("/status")
    assert_error(wrong_method, 405, "method_not_allowed")
    assert wrong_method.headers["allow"] == "GET"
