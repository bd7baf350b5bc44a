"""Swagger UI and the OpenAPI document of every service."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI

from elsa_client.main import create_app as create_client
from elsa_client.settings import ClientSettings
from elsa_cloud.main import create_app as create_cloud
from elsa_cloud.settings import CloudSettings
from elsa_edge.main import create_app as create_edge
from elsa_edge.settings import EdgeSettings

from .support import assert_error, serve

pytestmark = pytest.mark.anyio

CLOUD_ROUTES = {
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("POST", "/v1/nodes/join"),
    ("POST", "/v1/nodes/introspect"),
    ("POST", "/v1/nodes/me/resources"),
    ("POST", "/v1/nodes/me/heartbeat"),
    ("GET", "/v1/edges"),
    ("GET", "/v1/nodes"),
    ("GET", "/v1/tasks/next"),
    ("POST", "/v1/runs"),
    ("GET", "/v1/runs"),
    ("GET", "/v1/runs/{run_id}"),
    ("POST", "/v1/runs/{run_id}/{action}"),
    ("GET", "/v1/runs/{run_id}/rounds"),
    ("GET", "/v1/runs/{run_id}/metrics"),
    ("GET", "/v1/runs/{run_id}/assignments"),
    ("GET", "/v1/runs/{run_id}/control"),
    ("GET", "/v1/runs/{run_id}/events"),
    ("GET", "/v1/runs/{run_id}/adapters/{version}"),
    ("GET", "/v1/runs/{run_id}/adapters/{version}/delta"),
    ("GET", "/v1/runs/{run_id}/adapters/{version}/peft/{filename}"),
    ("POST", "/v1/runs/{run_id}/rounds/{round_index}/edge-models"),
    ("POST", "/v1/runs/{run_id}/rounds/{round_index}/reports"),
    ("POST", "/v1/runs/{run_id}/rounds/{round_index}/probes"),
}
EDGE_ROUTES = {
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/v1/status"),
    ("GET", "/v1/ping"),
    ("POST", "/v1/ping"),
    ("POST", "/v1/sessions"),
    ("POST", "/v1/sessions/{session_id}/forward"),
    ("POST", "/v1/sessions/{session_id}/backward"),
    ("POST", "/v1/sessions/{session_id}/updates"),
    ("GET", "/v1/sessions/{session_id}/model"),
}
CLIENT_ROUTES = {("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics"), ("GET", "/status")}


def _apps(tmp_path: Path) -> dict[str, tuple[FastAPI, set[tuple[str, str]]]]:
    cloud = create_cloud(
        CloudSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'elsa.db'}", adapter_dir=tmp_path / "a")
    )
    edge = create_edge(EdgeSettings(autostart=False, cloud_url="http://127.0.0.1:9"))
    client = create_client(ClientSettings(autostart=False, cloud_url="http://127.0.0.1:9"))
    return {"cloud": (cloud, CLOUD_ROUTES), "edge": (edge, EDGE_ROUTES), "client": (client, CLIENT_ROUTES)}


@pytest.mark.parametrize("service", ["cloud", "edge", "client"])
async def test_openapi_lists_every_route_and_docs_answer(tmp_path: Path, service: str) -> None:
    app, expected = _apps(tmp_path)[service]
    async with serve(app) as client:
        spec = await client.get("/openapi.json")
        assert spec.status_code == 200
        paths = spec.json()["paths"]
        documented = {(method.upper(), path) for path, ops in paths.items() for method in ops}
        assert documented == expected
        for path, ops in paths.items():
            for method, op in ops.items():
                assert op.get("summary"), (method, path)
        docs = await client.get("/docs")
        assert docs.status_code == 200
        assert "swagger-ui" in docs.text
        # routing errors use the documented error body too
        assert_error(await client.get("/v1/no-such-route"), 404, "not_found")
        assert_error(await client.delete("/health"), 405, "method_not_allowed")
