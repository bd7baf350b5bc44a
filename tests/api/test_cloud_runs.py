"""Cloud: creating runs (config validation), control transitions, operator views."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Cloud, run_config
from .support import assert_error

pytestmark = pytest.mark.anyio


async def test_create_run_starts_it(cloud: Cloud) -> None:
    run = await cloud.create_run()
    assert run["run_id"].startswith("api-")
    assert run["state"] == "running"
    assert run["cloud_rounds"] == 1 and run["latest_version"] is None
    assert run["config"]["train"]["local_steps"] == 1
    listed = (await cloud.client.get("/v1/runs", headers=cloud.admin)).json()
    assert [r["run_id"] for r in listed] == [run["run_id"]]
    one = await cloud.client.get(f"/v1/runs/{run['run_id']}", headers=cloud.admin)
    assert one.status_code == 200 and one.json()["run_id"] == run["run_id"]
    for part, empty in (("rounds", []), ("assignments", {})):
        response = await cloud.client.get(f"/v1/runs/{run['run_id']}/{part}", headers=cloud.admin)
        assert response.status_code == 200
        body = response.json()
        assert (body if part == "rounds" else body["assignment"]) == empty


def _with(path: str, value: object) -> dict[str, Any]:
    config = run_config()
    section, _, key = path.partition(".")
    if key:
        config[section] = {**config.get(section, {}), key: value}
    else:
        config[section] = value
    return config


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (_with("train.local_steps", 0), "train.local_steps"),
        (_with("train.edge_rounds", -1), "train.edge_rounds"),
        (_with("train.learning_rate", 0), "train.learning_rate"),
        (_with("model.task", "regression"), "model.task"),
        (_with("transport.dtype", "fp8"), "transport.dtype"),
        (_with("topology.edges", 0), "topology.edges"),
        (_with("train.local_stepz", 3), "train.local_stepz"),
        (_with("unknown_section", {}), "unknown_section"),
        ({"model": {"num_labels": None}, "data": {"dataset": "my.csv"}}, "model.num_labels"),
    ],
)
async def test_invalid_config_is_422_naming_the_field(
    cloud: Cloud, config: dict[str, Any], field: str
) -> None:
    response = await cloud.client.post("/v1/runs", json={"config": config}, headers=cloud.admin)
    assert_error(response, 422, "invalid_config", mentions=field)
    assert (await cloud.client.get("/v1/runs", headers=cloud.admin)).json() == []
    assert await cloud.healthy()


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (_with("faults.dropout", 0.2), "faults.dropout"),
        ({**run_config(), "strategy": {"split": False}, "sketch": {"enabled": False}}, "strategy.split"),
    ],
)
async def test_simulation_only_strategies_are_422(cloud: Cloud, config: dict[str, Any], field: str) -> None:
    response = await cloud.client.post("/v1/runs", json={"config": config}, headers=cloud.admin)
    assert_error(response, 422, "invalid_config", mentions=field)
    assert (await cloud.client.get("/v1/runs", headers=cloud.admin)).json() == []
    assert await cloud.healthy()


@pytest.mark.parametrize("body", [{}, {"config": [1, 2]}, {"config": {}, "extra": True}])
async def test_malformed_run_request_is_422(cloud: Cloud, body: dict[str, Any]) -> None:
    response = await cloud.client.post("/v1/runs", json=body, headers=cloud.admin)
    assert_error(response, 422, "invalid_request")
    assert (await cloud.client.get("/v1/runs", headers=cloud.admin)).json() == []


@pytest.mark.parametrize("name", ["has space", "a/b", "x" * 300, ""])
async def test_run_name_that_cannot_be_an_id_is_422(cloud: Cloud, name: str) -> None:
    config = {**run_config(), "name": name}
    response = await cloud.client.post("/v1/runs", json={"config": config}, headers=cloud.admin)
    assert_error(response, 422, "invalid_config", mentions="name")
    assert (await cloud.client.get("/v1/runs", headers=cloud.admin)).json() == []


async def test_unknown_run_is_404(cloud: Cloud) -> None:
    for method, suffix in [
        ("GET", ""),
        ("POST", "/pause"),
        ("POST", "/resume"),
        ("POST", "/stop"),
        ("GET", "/rounds"),
        ("GET", "/metrics"),
        ("GET", "/assignments"),
        ("GET", "/events"),
    ]:
        response = await cloud.client.request(method, f"/v1/runs/no-such-run{suffix}", headers=cloud.admin)
        assert response.status_code == 404, (method, suffix)
        assert_error(response, 404, "not_found", mentions="no-such-run")


async def test_unknown_action_is_422(cloud: Cloud) -> None:
    run = await cloud.create_run()
    response = await cloud.client.post(f"/v1/runs/{run['run_id']}/explode", headers=cloud.admin)
    assert_error(response, 422, "invalid_request", mentions="action")
    assert (await cloud.snapshot())["runs"][0]["state"] == "running"


async def test_pause_resume_stop_and_illegal_transitions(cloud: Cloud) -> None:
    run_id = (await cloud.create_run())["run_id"]

    async def act(action: str) -> Any:
        return await cloud.client.post(f"/v1/runs/{run_id}/{action}", headers=cloud.admin)

    async def state() -> str:
        response = await cloud.client.get(f"/v1/runs/{run_id}", headers=cloud.admin)
        return str(response.json()["state"])

    assert_error(await act("resume"), 409, "conflict", mentions="running")
    assert await state() == "running"

    paused = await act("pause")
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    assert_error(await act("pause"), 409, "conflict", mentions="paused")
    assert await state() == "paused"

    resumed = await act("resume")
    assert resumed.status_code == 200 and resumed.json()["state"] == "running"

    stopped = await act("stop")
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    for action in ("pause", "resume", "stop"):
        assert_error(await act(action), 409, "conflict", mentions="stopped")
        assert await state() == "stopped"
    assert await cloud.healthy()


async def test_stop_a_paused_run(cloud: Cloud) -> None:
    run_id = (await cloud.create_run())["run_id"]
    assert (await cloud.client.post(f"/v1/runs/{run_id}/pause", headers=cloud.admin)).status_code == 200
    stopped = await cloud.client.post(f"/v1/runs/{run_id}/stop", headers=cloud.admin)
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"


async def test_events_limit_is_clamped(cloud: Cloud) -> None:
    run_id = (await cloud.create_run())["run_id"]
    for n in (0, -5, 10**6):
        response = await cloud.client.get(f"/v1/runs/{run_id}/events", params={"n": n}, headers=cloud.admin)
        assert response.status_code == 200 and isinstance(response.json(), list)
