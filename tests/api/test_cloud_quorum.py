"""Cloud: rounds under stragglers and faults. A round commits only when at least
``ceil(num_devices × min_device_fraction)`` devices sit behind the edge models that arrived by the
round deadline; otherwise it is abandoned — recorded as round state, event and participation —
and retried, up to ``max_round_attempts`` times before the run fails. A round stops waiting for
an edge that died (no heartbeat), and a commit interrupted after its version was stored stays
committed. Edges and devices are driven over HTTP without models (the edges upload sketched
deltas directly)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import torch

from elsa.errors import UnavailableError
from elsa.runtime.config import parse_config
from elsa.sketch import sketch_state, sketches_to_payloads
from elsa.wire import AdapterUpdate, encode
from elsa_cloud.main import create_app
from elsa_cloud.settings import CloudSettings

from .conftest import ADMIN_TOKEN, JOIN_SECRET, Cloud, Collecting, run_config, start_collecting
from .support import bearer, serve

pytestmark = pytest.mark.anyio

CONFIG = parse_config(run_config())
DEADLINE_S = 2.0  # the cloud round deadline: an edge that has not uploaded by then is a straggler

CloudFactory = Callable[..., Awaitable[Cloud]]


@pytest.fixture
async def make_cloud(tmp_path: Path) -> AsyncIterator[CloudFactory]:
    """Start a cloud with a short round deadline and the given settings (stopped after the test)."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**overrides: Any) -> Cloud:
            settings = CloudSettings(
                **{
                    "database_url": f"sqlite+aiosqlite:///{tmp_path / 'elsa.db'}",
                    "redis_url": None,
                    "adapter_dir": tmp_path / "adapters",
                    "join_secret": JOIN_SECRET,
                    "admin_token": ADMIN_TOKEN,
                    "join_wait_s": 60.0,
                    "round_deadline_s": DEADLINE_S,
                    "report_wait_s": 0.5,
                    "max_task_wait_s": 5.0,
                    **overrides,
                }
            )
            app = create_app(settings)
            client = await stack.enter_async_context(serve(app))
            return Cloud(app, client, settings, bearer(ADMIN_TOKEN))

        yield start


async def upload_edge_model(c: Collecting, edge_index: int, round_index: int = 1) -> None:
    """Edge ``edge_index`` uploads a small sketched delta for the round (200 expected)."""
    edge_id, auth = c.edges[edge_index]
    model, _ = c.cloud.app.state.cloud.models[c.run_id]
    delta = {k: torch.full_like(v, 0.01) for k, v in model.initial_state().items()}
    update = AdapterUpdate(
        node_id=edge_id,
        run_id=c.run_id,
        round=round_index,
        num_examples=10,
        sketches=sketches_to_payloads(sketch_state(delta, CONFIG.sketch_params(), round_index, CONFIG.seed)),
    )
    response = await c.cloud.client.post(
        f"/v1/runs/{c.run_id}/rounds/{round_index}/edge-models",
        content=encode(update),
        headers={"content-type": "application/msgpack", **auth},
    )
    assert response.status_code == 200, response.text


async def events_until(cloud: Cloud, run_id: str, done: Callable[[list[dict[str, Any]]], bool]) -> list[Any]:
    """Poll the run's events until ``done`` holds (a generous bound: several round deadlines)."""
    with anyio.fail_after(10 * DEADLINE_S + 20):
        while True:
            events: list[dict[str, Any]] = (
                await cloud.client.get(f"/v1/runs/{run_id}/events", headers=cloud.admin)
            ).json()
            if done(events):
                return events
            await anyio.sleep(0.05)


def kinds(events: list[dict[str, Any]]) -> list[str]:
    """The kinds of the round and run events, in order."""
    return [e["kind"] for e in events if e["kind"] != "control_updated"]


async def wait_for_attempt(cloud: Cloud, run_id: str, attempt: int) -> None:
    """Until the round's ``attempt``-th start has been announced (its tasks are out)."""
    await events_until(
        cloud, run_id, lambda es: any(e["kind"] == "round_started" and e["attempt"] == attempt for e in es)
    )


async def participation(cloud: Cloud, run_id: str, round_index: int) -> set[tuple[str, str, str]]:
    """(node id, role, status) of every participation row of the round."""
    rows = await cloud.app.state.cloud.store.list_participation(run_id, round_index)
    return {(p.node_id, p.role, p.status) for p in rows}


async def test_a_round_below_quorum_is_abandoned_recorded_and_retried(make_cloud: CloudFactory) -> None:
    cloud = await make_cloud(min_device_fraction=1.0, max_round_attempts=3)
    c = await start_collecting(cloud, edges=2)
    (edge0, _), (edge1, _) = c.edges
    (device0, _), (device1, _) = c.devices
    # attempt 1: edge-1 straggles past the deadline, so only 1 of the 2 needed devices counts
    await upload_edge_model(c, 0)
    events = await events_until(cloud, c.run_id, lambda es: "round_abandoned" in kinds(es))
    abandoned = next(e for e in events if e["kind"] == "round_abandoned")
    assert abandoned["round"] == 1 and abandoned["attempt"] == 1
    assert abandoned["devices"] == 1 and abandoned["needed"] == 2
    assert "quorum not met: 1 of 2" in abandoned["reason"]
    assert {
        (edge1, "edge", "timed_out"),
        (device0, "device", "abandoned"),
        (device1, "device", "abandoned"),
    } <= await participation(cloud, c.run_id, 1)
    assert (edge0, "edge", "submitted") in await participation(cloud, c.run_id, 1)
    # nothing was committed for the abandoned attempt
    assert (await cloud.client.get(f"/v1/runs/{c.run_id}", headers=cloud.admin)).json()[
        "latest_version"
    ] is None

    # attempt 2 of the same round: both edges upload in time, the round commits
    await wait_for_attempt(cloud, c.run_id, 2)
    await upload_edge_model(c, 0)
    await upload_edge_model(c, 1)
    events = await events_until(cloud, c.run_id, lambda es: "round_completed" in kinds(es))
    assert kinds(events)[:4] == ["round_started", "round_abandoned", "round_started", "round_completed"]
    assert events[-1]["kind"] in ("round_completed", "control_updated")
    completed = next(e for e in events if e["kind"] == "round_completed")
    assert completed["devices"] == 2 and completed["edges"] == sorted([edge0, edge1])
    rounds = (await cloud.client.get(f"/v1/runs/{c.run_id}/rounds", headers=cloud.admin)).json()
    assert [(r["round"], r["state"], r["version"]) for r in rounds] == [(1, "completed", 1)]


async def test_a_round_that_never_reaches_quorum_fails_the_run(make_cloud: CloudFactory) -> None:
    cloud = await make_cloud(min_device_fraction=1.0, max_round_attempts=2)
    c = await start_collecting(cloud, edges=2)
    await upload_edge_model(c, 0)
    await wait_for_attempt(cloud, c.run_id, 2)
    await upload_edge_model(c, 0)
    events = await events_until(cloud, c.run_id, lambda es: "run_failed" in kinds(es))
    assert kinds(events) == [
        "round_started",
        "round_abandoned",
        "round_started",
        "round_abandoned",
        "run_failed",
    ]
    assert [e["attempt"] for e in events if e["kind"] == "round_abandoned"] == [1, 2]
    assert "round 1 abandoned 2 times" in events[-1]["reason"]
    run = (await cloud.client.get(f"/v1/runs/{c.run_id}", headers=cloud.admin)).json()
    assert run["state"] == "failed" and run["latest_version"] is None
    rounds = (await cloud.client.get(f"/v1/runs/{c.run_id}/rounds", headers=cloud.admin)).json()
    assert [(r["round"], r["state"], r["version"]) for r in rounds] == [(1, "abandoned", None)]
    assert rounds[0]["finished_at"] is not None
    # the nodes are told the run is over
    tasks = cloud.app.state.cloud.board.tasks
    assert {tasks[n][1].kind for n, _ in c.edges + c.devices} == {"stop"}


async def test_a_straggling_edge_does_not_block_a_round_that_has_quorum(make_cloud: CloudFactory) -> None:
    cloud = await make_cloud(min_device_fraction=0.5)
    c = await start_collecting(cloud, edges=2)
    await upload_edge_model(c, 0)
    events = await events_until(cloud, c.run_id, lambda es: "round_completed" in kinds(es))
    assert "round_abandoned" not in kinds(events)
    completed = next(e for e in events if e["kind"] == "round_completed")
    assert completed["edges"] == [c.edges[0][0]] and completed["devices"] == 1
    assert (c.edges[1][0], "edge", "timed_out") in await participation(cloud, c.run_id, 1)
    rounds = (await cloud.client.get(f"/v1/runs/{c.run_id}/rounds", headers=cloud.admin)).json()
    assert [(r["round"], r["state"], r["version"]) for r in rounds] == [(1, "completed", 1)]


async def test_a_round_closes_once_its_missing_edge_is_dead(make_cloud: CloudFactory) -> None:
    # a long round deadline: the round must close because edge-1 died, not because time ran out
    cloud = await make_cloud(min_device_fraction=0.5, heartbeat_ttl_s=1.0, round_deadline_s=120.0)
    edges = [await cloud.join("edge", f"edge-{i}", url=f"http://edge-{i}.invalid:8100") for i in range(2)]
    devices = [await cloud.join("device", f"device-{i:03d}") for i in range(2)]
    beating = {node_id: auth for node_id, auth in edges + devices}

    async def heartbeats() -> None:  # what live nodes do; a dead one stops
        while True:
            for auth in list(beating.values()):
                await cloud.client.post("/v1/nodes/me/heartbeat", headers=auth)
            await anyio.sleep(0.2)

    async with anyio.create_task_group() as background:
        background.start_soon(heartbeats)
        config = run_config()
        config["topology"] = {"edges": 2, "devices_per_edge": 1}
        run_id = (await cloud.create_run(config))["run_id"]
        c = Collecting(cloud, run_id, edges, devices)
        await wait_for_attempt(cloud, run_id, 1)
        del beating[c.edges[1][0]]  # edge-1 dies
        await upload_edge_model(c, 0)
        with anyio.fail_after(60):  # a bound well inside the round deadline
            events = await events_until(cloud, run_id, lambda es: "round_completed" in kinds(es))
        background.cancel_scope.cancel()
    completed = next(e for e in events if e["kind"] == "round_completed")
    assert completed["edges"] == [c.edges[0][0]] and completed["devices"] == 1
    rows = await cloud.app.state.cloud.store.list_participation(run_id, 1)
    assert [(p.status, p.detail) for p in rows if p.node_id == c.edges[1][0]] == [
        ("timed_out", "dead: no heartbeat")
    ]


async def test_a_commit_interrupted_after_its_version_was_stored_is_kept(
    make_cloud: CloudFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stored version is the commit point: the store failing right after it (as if the
    cloud died there) leaves the round committed once, not redone over its own version."""
    cloud = await make_cloud()
    c = await start_collecting(cloud)
    store = cloud.app.state.cloud.store
    real = store.set_round_state
    failed: list[int] = []

    async def flaky(run_id: str, round_index: int, state: str, at: Any) -> Any:
        if state == "completed" and not failed:
            failed.append(round_index)
            raise UnavailableError("database unavailable (set_round_state): OSError")
        return await real(run_id, round_index, state, at)

    monkeypatch.setattr(store, "set_round_state", flaky)
    await upload_edge_model(c, 0)
    events = await events_until(cloud, c.run_id, lambda es: "run_completed" in kinds(es))
    assert failed == [1]
    assert kinds(events) == ["round_started", "round_recovered", "run_completed"]
    rounds = (await cloud.client.get(f"/v1/runs/{c.run_id}/rounds", headers=cloud.admin)).json()
    assert [(r["round"], r["state"], r["version"]) for r in rounds] == [(1, "completed", 1)]
    assert [v.version for v in await store.list_adapter_versions(c.run_id)] == [1]
