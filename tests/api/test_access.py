"""Who may call what: the edge identifies probing nodes through the cloud, status endpoints need a
token (or a loopback caller), and every service limits request rates and locks out addresses
that keep failing authentication."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from elsa_client.main import create_app as create_client
from elsa_client.settings import ClientSettings
from elsa_cloud.main import create_app as create_cloud
from elsa_cloud.settings import CloudSettings
from elsa_edge.main import create_app as create_edge
from elsa_edge.settings import EdgeSettings

from .conftest import JOIN_SECRET, Cloud, run_config
from .support import assert_error, bearer, serve

pytestmark = pytest.mark.anyio

REMOTE = ("10.1.2.3", 40000)


def remote_client(app: object) -> httpx.AsyncClient:
    """An in-process client that looks like it calls from another machine."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=REMOTE), base_url="http://test")  # type: ignore[arg-type]


async def test_cloud_identifies_tokens_for_edges_only(cloud: Cloud) -> None:
    device_id, device = await cloud.join("device", "device-000")
    _, edge = await cloud.join("edge", "edge-0", url="http://edge-0.invalid:8100")
    token = device["authorization"].removeprefix("Bearer ")

    answer = await cloud.client.post("/v1/nodes/introspect", json={"token": token}, headers=edge)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"node_id": device_id, "role": "device", "name": "device-000"}
    missing = await cloud.client.post("/v1/nodes/introspect", json={"token": "nobody"}, headers=edge)
    assert_error(missing, 404, "not_found")
    # devices and anonymous callers may not ask who holds a token
    as_device = await cloud.client.post("/v1/nodes/introspect", json={"token": token}, headers=device)
    assert_error(as_device, 403, "forbidden")
    assert_error(await cloud.client.post("/v1/nodes/introspect", json={"token": token}), 401, "unauthorized")
    assert_error(
        await cloud.client.post("/v1/nodes/introspect", json={"token": ""}, headers=edge),
        422,
        "invalid_request",
    )


async def test_status_endpoints_need_a_token_or_a_loopback_caller() -> None:
    edge_app = create_edge(EdgeSettings(autostart=False, cloud_url="http://127.0.0.1:9"))
    client_app = create_client(ClientSettings(autostart=False, cloud_url="http://127.0.0.1:9"))
    async with serve(edge_app) as local_edge, serve(client_app) as local_device:
        assert (await local_edge.get("/v1/status")).status_code == 200
        assert (await local_device.get("/status")).status_code == 200
        async with remote_client(edge_app) as edge, remote_client(client_app) as device:
            assert_error(await edge.get("/v1/status"), 401, "unauthorized", mentions="loopback")
            assert_error(await device.get("/status"), 401, "unauthorized", mentions="loopback")
            assert (await edge.get("/health")).status_code == 200  # health stays open

    tokened = create_client(
        ClientSettings(autostart=False, cloud_url="http://127.0.0.1:9", status_token="status-secret")
    )
    async with serve(tokened) as local, remote_client(tokened) as remote:
        assert_error(await local.get("/status"), 401, "unauthorized")  # a token, once set, is needed
        assert_error(await remote.get("/status", headers=bearer("wrong")), 401, "unauthorized")
        assert (await remote.get("/status", headers=bearer("status-secret"))).status_code == 200


async def test_request_rate_is_limited_per_caller(tmp_path: Path) -> None:
    settings = CloudSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'elsa.db'}",
        adapter_dir=tmp_path / "adapters",
        admin_token="admin",
        rate_limit_per_s=0.001,  # no refill within the test
        rate_limit_burst=3,
    )
    async with serve(create_cloud(settings)) as client:
        for _ in range(3):
            assert (await client.get("/v1/runs", headers=bearer("admin"))).status_code == 200
        limited = await client.get("/v1/runs", headers=bearer("admin"))
        assert_error(limited, 429, "rate_limited", mentions="rate limit")
        assert int(limited.headers["retry-after"]) >= 1
        # another caller (another token) has its own bucket; health and metrics are never limited
        assert (await client.get("/v1/runs", headers=bearer("other"))).status_code == 403
        for _ in range(5):
            assert (await client.get("/health")).status_code == 200
        metrics = await client.get("/metrics")
        assert 'elsa_errors_total{code="rate_limited"} 1.0' in metrics.text


async def test_addresses_failing_authentication_are_locked_out(tmp_path: Path) -> None:
    settings = CloudSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'elsa.db'}",
        adapter_dir=tmp_path / "adapters",
        join_secret=JOIN_SECRET,
        auth_failures_per_min=5,
    )
    app = create_cloud(settings)
    async with serve(app) as client:
        guess = {"join_secret": "guess", "role": "device", "name": "d"}
        for _ in range(5):
            assert_error(await client.post("/v1/nodes/join", json=guess), 401, "unauthorized")
        # locked out now, even with the right secret; other addresses are not
        right = {**guess, "join_secret": JOIN_SECRET}
        locked = await client.post("/v1/nodes/join", json=right)
        assert_error(locked, 429, "rate_limited", mentions="failed authentications")
        async with remote_client(app) as other:
            assert (await other.post("/v1/nodes/join", json=right)).status_code == 200
        assert (await client.get("/ready")).status_code == 200


async def test_tokens_are_stored_hashed(cloud: Cloud) -> None:
    _, device = await cloud.join("device", "device-000")
    token = device["authorization"].removeprefix("Bearer ")
    database = Path(cloud.settings.database_url.removeprefix("sqlite+aiosqlite:///"))
    stored = database.read_bytes() + b"".join(p.read_bytes() for p in database.parent.glob("elsa.db-*"))
    assert token.encode() not in stored
    assert hashlib.sha256(token.encode()).hexdigest().encode() in stored
    # a rejoin rotates the token: the old one stops working
    _, again = await cloud.join("device", "device-000")
    assert again != device
    assert_error(await cloud.client.get("/v1/edges", headers=device), 401, "unauthorized")
    assert (await cloud.client.get("/v1/edges", headers=again)).status_code == 200


async def test_run_ids_cannot_name_a_parent_folder(cloud: Cloud) -> None:
    # a file the adapter URLs must never reach: <adapter_dir>/../v0/adapter_config.json
    outside = cloud.settings.adapter_dir.parent / "v0"
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "adapter_config.json").write_text("{}")
    for run_id in ("%2E%2E", ".hidden", "-x"):
        response = await cloud.client.get(
            f"/v1/runs/{run_id}/adapters/0/peft/adapter_config.json", headers=cloud.admin
        )
        assert response.status_code == 422, (run_id, response.status_code, response.text)
    bad = run_config()
    bad["name"] = ".."
    response = await cloud.client.post("/v1/runs", json={"config": bad}, headers=cloud.admin)
    assert_error(response, 422, "invalid_config", mentions="name")
