"""Fixtures of the API tests: the anyio backend and a running cloud app with helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI

from elsa_cloud.main import create_app
from elsa_cloud.settings import CloudSettings

from .support import bearer, serve

JOIN_SECRET = "test-join-secret"
ADMIN_TOKEN = "test-admin-token"
MAX_BODY = 512 * 1024


def run_config(**train: int) -> dict[str, Any]:
    """A small valid run configuration: one edge, one device, one cloud round."""
    return {
        "name": "api",
        "model": {"name": "minilm", "num_labels": 3},
        "topology": {"edges": 1, "devices_per_edge": 1},
        "train": {"cloud_rounds": 1, "edge_rounds": 1, "local_steps": 1, **train},
    }


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the services' loop)."""
    return "asyncio"


@dataclass
class Cloud:
    """A running cloud app, its client and settings, with shortcuts for common calls."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: CloudSettings
    admin: dict[str, str]

    async def join(self, role: str, name: str, url: str | None = None) -> tuple[str, dict[str, str]]:
        """Join a node; returns its id and its auth header."""
        body: dict[str, Any] = {"join_secret": JOIN_SECRET, "role": role, "name": name}
        if url is not None:
            body["url"] = url
        response = await self.client.post("/v1/nodes/join", json=body)
        assert response.status_code == 200, response.text
        joined = response.json()
        return joined["node_id"], bearer(joined["token"])

    async def create_run(self, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create a run as the operator (201 expected)."""
        response = await self.client.post(
            "/v1/runs", json={"config": config or run_config()}, headers=self.admin
        )
        assert response.status_code == 201, response.text
        run: dict[str, Any] = response.json()
        return run

    async def snapshot(self, run_id: str | None = None) -> dict[str, Any]:
        """What operators can see: runs, and one run's rounds and metrics."""
        out: dict[str, Any] = {"runs": (await self.client.get("/v1/runs", headers=self.admin)).json()}
        if run_id is not None:
            for part in ("rounds", "metrics"):
                response = await self.client.get(f"/v1/runs/{run_id}/{part}", headers=self.admin)
                assert response.status_code == 200, response.text
                out[part] = response.json()
        return out

    async def healthy(self) -> bool:
        """The service still answers liveness and readiness."""
        health = await self.client.get("/health")
        ready = await self.client.get("/ready")
        return health.status_code == 200 and ready.status_code == 200


def cloud_settings(tmp_path: Path, **overrides: Any) -> CloudSettings:
    """The API tests' cloud: a fresh SQLite file in ``tmp_path``, an embedded Redis, the test
    secrets, runs that wait long for their devices; ``overrides`` replace any field."""
    fields: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'elsa.db'}",
        "redis_url": None,
        "adapter_dir": tmp_path / "adapters",
        "join_secret": JOIN_SECRET,
        "admin_token": ADMIN_TOKEN,
        "join_wait_s": 120.0,
        "round_deadline_s": 120.0,
        "max_task_wait_s": 5.0,
        "max_body_bytes": MAX_BODY,
    }
    return CloudSettings(**{**fields, **overrides})


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    """A cloud on a fresh SQLite file and an embedded Redis; runs wait long for their devices."""
    settings = cloud_settings(tmp_path)
    app = create_app(settings)
    async with serve(app) as client:
        yield Cloud(app, client, settings, bearer(ADMIN_TOKEN))


@dataclass
class Collecting:
    """A run whose round 1 collects edge models; its joined edges and devices (id, auth header)."""

    cloud: Cloud
    run_id: str
    edges: list[tuple[str, dict[str, str]]]
    devices: list[tuple[str, dict[str, str]]]

    @property
    def edge_id(self) -> str:
        """Id of the first edge."""
        return self.edges[0][0]

    @property
    def edge(self) -> dict[str, str]:
        """Auth header of the first edge."""
        return self.edges[0][1]

    @property
    def device(self) -> dict[str, str]:
        """Auth header of the first device."""
        return self.devices[0][1]


async def start_collecting(cloud: Cloud, edges: int = 1) -> Collecting:
    """Join ``edges`` edges and as many devices, create the run and wait until round 1 collects."""
    joined_edges = [
        await cloud.join("edge", f"edge-{i}", url=f"http://edge-{i}.invalid:8100") for i in range(edges)
    ]
    joined_devices = [await cloud.join("device", f"device-{i:03d}") for i in range(edges)]
    config = run_config()
    config["topology"] = {"edges": edges, "devices_per_edge": 1}
    run_id = (await cloud.create_run(config))["run_id"]
    await wait_for_task(cloud, joined_devices[-1][1], "train", run_id, 1)
    return Collecting(cloud, run_id, joined_edges, joined_devices)


async def wait_for_task(
    cloud: Cloud, auth: dict[str, str], kind: str, run_id: str, round_index: int
) -> dict[str, Any]:
    """Long-poll a node's tasks until it is told ``kind`` for this run and round (devices hear
    of a round last: by then the round is set up and collects edge models)."""
    after = 0
    with anyio.fail_after(15):
        while True:
            response = await cloud.client.get(
                "/v1/tasks/next", params={"after": after, "wait_s": 5}, headers=auth
            )
            assert response.status_code == 200, response.text
            task: dict[str, Any] = response.json()
            if task["kind"] == kind and task["run_id"] == run_id and task["round"] == round_index:
                return task
            after = int(response.headers["x-elsa-task-seq"])


@pytest.fixture
async def collecting(cloud: Cloud) -> Collecting:
    """One edge and one device joined; round 1 of a 1x1 run collects edge models."""
    return await start_collecting(cloud)
