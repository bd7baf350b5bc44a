"""The cloud against real stores (DESIGN §5): a round runs on PostgreSQL (and SQLite) + real Redis;
Redis is flushed mid-run and the cloud restores the live state from SQL; a restarted cloud
resumes the run at its last committed round with its adapter versions intact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from redis.asyncio import Redis

from elsa.model.loading import load_task_model
from elsa.model.packaged import minilm_dir
from elsa.model.split import SplitModel
from elsa.runtime.config import parse_config
from elsa.sketch import sketch_state, sketches_to_payloads
from elsa.wire import AdapterUpdate, encode
from elsa_cloud.main import create_app
from elsa_cloud.settings import CloudSettings

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CONFIG: dict[str, Any] = {
    "name": "restore",
    "topology": {"edges": 1, "devices_per_edge": 1},
    "train": {"cloud_rounds": 3, "edge_rounds": 1, "local_steps": 1},
}


@asynccontextmanager
async def cloud_app(settings: CloudSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cloud") as client:
            yield client


async def _join(client: httpx.AsyncClient, role: str, name: str) -> dict[str, str]:
    body: dict[str, Any] = {"join_secret": "s3cret", "role": role, "name": name}
    if role == "edge":
        body["url"] = "http://127.0.0.1:9"
    response = await client.post("/v1/nodes/join", json=body)
    assert response.status_code == 200, response.text
    return {"authorization": f"Bearer {response.json()['token']}", "node_id": response.json()["node_id"]}


async def _wait(predicate: Any, timeout_s: float = 30.0) -> None:
    for _ in range(int(timeout_s / 0.1)):
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached")


@pytest.fixture(scope="module")
def initial_state() -> dict[str, Any]:
    return SplitModel(load_task_model(minilm_dir(), "classification", num_labels=5, seed=0)).initial_state()


async def test_flushed_redis_is_restored_and_restart_resumes(
    sql_target: tuple[str, str | None], redis_url: str, tmp_path: Path, initial_state: dict[str, Any]
) -> None:
    url, schema = sql_target
    redis_db = redis_url.rsplit("/", 1)[0] + "/13"
    settings = CloudSettings(
        database_url=url,
        database_schema=schema,
        redis_url=redis_db,
        join_secret="s3cret",
        admin_token="admin",
        adapter_dir=tmp_path / "adapters",
        join_wait_s=30,
        report_wait_s=0.5,
    )
    admin = {"authorization": "Bearer admin"}
    raw = Redis.from_url(redis_db)
    await raw.flushdb()

    async def upload(client: httpx.AsyncClient, edge: dict[str, str], run_id: str, round_index: int) -> None:
        update = AdapterUpdate(
            node_id=edge["node_id"],
            run_id=run_id,
            round=round_index,
            num_examples=10,
            sketches=sketches_to_payloads(
                sketch_state(
                    {k: torch.full_like(v, 0.01) for k, v in initial_state.items()},
                    parse_config(CONFIG).sketch_params(),
                    round_index,
                    parse_config(CONFIG).seed,
                )
            ),
        )
        response = await client.post(
            f"/v1/runs/{run_id}/rounds/{round_index}/edge-models",
            content=encode(update),
            headers={"authorization": edge["authorization"], "content-type": "application/msgpack"},
        )
        assert response.status_code == 200, response.text

    async with cloud_app(settings) as client:
        edge = await _join(client, "edge", "edge-0")
        device = await _join(client, "device", "device-000")
        run = (await client.post("/v1/runs", json={"config": CONFIG}, headers=admin)).json()
        run_id = run["run_id"]

        async def assigned() -> bool:
            got = (await client.get(f"/v1/runs/{run_id}/assignments", headers=admin)).json()["assignment"]
            return got == {device["node_id"]: edge["node_id"]}

        await _wait(assigned)
        await upload(client, edge, run_id, 1)

        async def round_two_started() -> bool:
            rounds = (await client.get(f"/v1/runs/{run_id}/rounds", headers=admin)).json()
            return [r["state"] for r in rounds] == ["completed", "training"]

        await _wait(round_two_started)
        # Redis loses everything mid-run; the operator view falls back to SQL at once ...
        await raw.flushdb()
        assert await assigned()
        control = (await client.get(f"/v1/runs/{run_id}/control", headers=admin)).json()
        assert control["assignment"] == {"device-000": "edge-0"} and control["round"] == 1
        assert control["clusters"] == {} and control["split_plans"] == {"device-000": [1, 1]}
        for node in (edge, device):  # live nodes keep polling, which refreshes their liveness
            beat = await client.post(
                "/v1/nodes/me/heartbeat", headers={"authorization": node["authorization"]}
            )
            assert beat.status_code == 200
        await upload(client, edge, run_id, 2)

        async def round_three_started() -> bool:
            rounds = (await client.get(f"/v1/runs/{run_id}/rounds", headers=admin)).json()
            return [r["state"] for r in rounds][:3] == ["completed", "completed", "training"]

        await _wait(round_three_started)
        # ... and the coordinator restored the live assignment from SQL for the next round
        assert await raw.keys("*assignment*")
        versions = (await client.get(f"/v1/runs/{run_id}", headers=admin)).json()["latest_version"]
        assert versions == 2

    # the cloud restarts while round 3 is in flight: the run resumes, round 3 is redone
    async with cloud_app(settings) as client:
        edge = await _join(client, "edge", "edge-0")
        await _join(client, "device", "device-000")

        async def redoing_round_three() -> bool:
            rounds = (await client.get(f"/v1/runs/{run_id}/rounds", headers=admin)).json()
            return [r["state"] for r in rounds] == ["completed", "completed", "training"]

        await _wait(redoing_round_three)
        await upload(client, edge, run_id, 3)

        async def completed() -> bool:
            view = (await client.get(f"/v1/runs/{run_id}", headers=admin)).json()
            return bool(view["state"] == "completed")

        await _wait(completed, 60)
        rounds = (await client.get(f"/v1/runs/{run_id}/rounds", headers=admin)).json()
        assert [(r["round"], r["state"], r["version"]) for r in rounds] == [
            (1, "completed", 1),
            (2, "completed", 2),
            (3, "completed", 3),
        ]
        # every stored version still passes its checksum
        for version in (1, 2, 3):
            got = await client.get(f"/v1/runs/{run_id}/adapters/{version}", headers=admin)
            assert got.status_code == 200, got.text
    await raw.flushdb()
    await raw.aclose()
