"""Cloud: joining, node authentication, resources, heartbeats, listings, task long-poll."""

from __future__ import annotations

import pytest

from .conftest import ADMIN_TOKEN, JOIN_SECRET, Cloud
from .support import assert_error, bearer

pytestmark = pytest.mark.anyio


async def test_health_and_ready(cloud: Cloud) -> None:
    health = await cloud.client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["service"] == "cloud"
    ready = await cloud.client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"sql": "ok", "redis": "ok"}


async def test_join_returns_a_working_token_and_a_stable_id(cloud: Cloud) -> None:
    node_id, auth = await cloud.join("device", "device-000")
    again, auth2 = await cloud.join("device", "device-000")
    assert again == node_id and auth2 != auth
    # a rejoin rotates the token: the old one stops working
    assert_error(await cloud.client.post("/v1/nodes/me/heartbeat", headers=auth), 401, "unauthorized")
    response = await cloud.client.post("/v1/nodes/me/heartbeat", headers=auth2)
    assert response.status_code == 200 and response.json()["ok"] is True


async def test_join_with_wrong_secret_is_401_and_registers_nothing(cloud: Cloud) -> None:
    response = await cloud.client.post(
        "/v1/nodes/join", json={"join_secret": "wrong", "role": "device", "name": "d"}
    )
    assert_error(response, 401, "unauthorized", mentions="join secret")
    assert (await cloud.client.get("/v1/nodes", headers=cloud.admin)).json() == []


async def test_edge_join_without_url_is_409(cloud: Cloud) -> None:
    response = await cloud.client.post(
        "/v1/nodes/join", json={"join_secret": JOIN_SECRET, "role": "edge", "name": "edge-0"}
    )
    assert_error(response, 409, "conflict", mentions="URL")
    assert (await cloud.client.get("/v1/nodes", headers=cloud.admin)).json() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"join_secret": JOIN_SECRET, "role": "cloud", "name": "x"}, "role"),
        ({"join_secret": JOIN_SECRET, "role": "device", "name": "bad name/1"}, "name"),
        ({"join_secret": JOIN_SECRET, "role": "device", "name": "d", "extra": 1}, "extra"),
        (
            {"join_secret": JOIN_SECRET, "role": "edge", "name": "e", "url": "http://e", "capacity": 0},
            "capacity",
        ),
        ({"role": "device", "name": "d"}, "join_secret"),
    ],
)
async def test_join_with_invalid_body_is_422_naming_the_field(
    cloud: Cloud, body: dict[str, object], field: str
) -> None:
    response = await cloud.client.post("/v1/nodes/join", json=body)
    assert_error(response, 422, "invalid_request", mentions=field)
    assert (await cloud.client.get("/v1/nodes", headers=cloud.admin)).json() == []


async def test_join_with_malformed_json_is_422(cloud: Cloud) -> None:
    response = await cloud.client.post(
        "/v1/nodes/join", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "invalid_request")
    assert await cloud.healthy()


NODE_ENDPOINTS = [
    ("POST", "/v1/nodes/me/heartbeat"),
    ("POST", "/v1/nodes/me/resources"),
    ("GET", "/v1/edges"),
    ("GET", "/v1/tasks/next?wait_s=0"),
]
OPERATOR_ENDPOINTS = [
    ("GET", "/v1/nodes"),
    ("GET", "/v1/runs"),
    ("POST", "/v1/runs"),
    ("GET", "/v1/runs/some-run"),
    ("POST", "/v1/runs/some-run/pause"),
    ("GET", "/v1/runs/some-run/rounds"),
    ("GET", "/v1/runs/some-run/metrics"),
    ("GET", "/v1/runs/some-run/assignments"),
    ("GET", "/v1/runs/some-run/events"),
    ("GET", "/v1/runs/some-run/adapters/1/peft/adapter_config.json"),
]


async def test_node_endpoints_need_a_node_token(cloud: Cloud) -> None:
    for method, path in NODE_ENDPOINTS:
        json = {"links": []} if path.endswith("resources") else None
        missing = await cloud.client.request(method, path, json=json)
        assert_error(missing, 401, "unauthorized", mentions="missing bearer token")
        not_bearer = await cloud.client.request(
            method, path, json=json, headers={"authorization": "Basic abc"}
        )
        assert_error(not_bearer, 401, "unauthorized")
        wrong = await cloud.client.request(method, path, json=json, headers=bearer("not-a-token"))
        assert_error(wrong, 401, "unauthorized", mentions="unknown token")
        # the admin token is not a node token
        admin = await cloud.client.request(method, path, json=json, headers=bearer(ADMIN_TOKEN))
        assert_error(admin, 401, "unauthorized")


async def test_operator_endpoints_need_the_admin_token(cloud: Cloud) -> None:
    _, node = await cloud.join("device", "device-000")
    for method, path in OPERATOR_ENDPOINTS:
        json = {"config": {}} if method == "POST" and path == "/v1/runs" else None
        missing = await cloud.client.request(method, path, json=json)
        assert_error(missing, 401, "unauthorized")
        node_token = await cloud.client.request(method, path, json=json, headers=node)
        assert_error(node_token, 403, "forbidden", mentions="admin token")
        wrong = await cloud.client.request(method, path, json=json, headers=bearer("not-the-admin-token"))
        assert_error(wrong, 403, "forbidden")
    assert (await cloud.client.get("/v1/runs", headers=cloud.admin)).json() == []


async def test_resources_are_accepted_and_validated(cloud: Cloud) -> None:
    edge_id, _ = await cloud.join("edge", "edge-0", url="http://edge-0:8100")
    _, device = await cloud.join("device", "device-000")
    good = {
        "memory_bytes": 1024,
        "block_step_s": 0.01,
        "links": [{"edge_id": edge_id, "rtt_s": 0.002, "throughput_bps": 1e6}],
    }
    response = await cloud.client.post("/v1/nodes/me/resources", json=good, headers=device)
    assert response.status_code == 200 and response.json() == {"ok": True, "detail": ""}
    bad = {"links": [{"edge_id": edge_id, "rtt_s": -1, "throughput_bps": 1e6}]}
    response = await cloud.client.post("/v1/nodes/me/resources", json=bad, headers=device)
    assert_error(response, 422, "invalid_request", mentions="rtt_s")
    bad = {"links": [{"edge_id": edge_id, "rtt_s": 0.1, "throughput_bps": 0}]}
    response = await cloud.client.post("/v1/nodes/me/resources", json=bad, headers=device)
    assert_error(response, 422, "invalid_request", mentions="throughput_bps")


async def test_edges_and_nodes_listings(cloud: Cloud) -> None:
    edge_id, _ = await cloud.join("edge", "edge-0", url="http://edge-0:8100")
    device_id, device = await cloud.join("device", "device-000")
    edges = await cloud.client.get("/v1/edges", headers=device)
    assert edges.status_code == 200
    assert edges.json() == [{"node_id": edge_id, "name": "edge-0", "url": "http://edge-0:8100"}]
    nodes = await cloud.client.get("/v1/nodes", headers=cloud.admin)
    assert nodes.status_code == 200
    by_id = {n["node_id"]: n for n in nodes.json()}
    assert set(by_id) == {edge_id, device_id}
    assert by_id[edge_id]["role"] == "edge" and by_id[device_id]["role"] == "device"
    assert all(n["alive"] for n in by_id.values())


async def test_task_long_poll_answers_idle_without_waiting(cloud: Cloud) -> None:
    _, device = await cloud.join("device", "device-000")
    response = await cloud.client.get("/v1/tasks/next", params={"after": 7, "wait_s": 0}, headers=device)
    assert response.status_code == 200
    assert response.json()["kind"] == "idle"
    assert response.headers["x-elsa-task-seq"] == "7"


@pytest.mark.parametrize("params", [{"wait_s": -1}, {"wait_s": 601}, {"after": -1}, {"after": "x"}])
async def test_task_long_poll_rejects_bad_parameters(cloud: Cloud, params: dict[str, object]) -> None:
    _, device = await cloud.join("device", "device-000")
    response = await cloud.client.get("/v1/tasks/next", params=params, headers=device)
    assert_error(response, 422, "invalid_request", mentions=next(iter(params)))
