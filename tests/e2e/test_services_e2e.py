"""The service runtime as real processes on loopback (DESIGN §6): cloud + 2 edges + 4 device
agents + an embedded Redis-protocol server, MiniLM on BBC News.

* the services produce the same global adapter as the simulation runtime (fp32 cut tensors,
  count-sketched adapter exchanges, SS-OP on every device→edge tensor with reproducible noise);
* adapters change, accuracy rises, rounds and the bytes of every kind are recorded in SQL, and
  the adapter messages are sketch-sized;
* clusters and trust equal the simulation's, are visible in the operator API, live in Redis
  and snapshotted to SQL every round;
* a device killed mid-round does not stall the round past its deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from elsa.infra.live import LiveStore
from elsa.infra.sql import SqlStore
from elsa.model.adapters import max_abs_diff
from elsa.runtime.config import load_config
from elsa.runtime.launcher import Operator, plan_demo, running_cluster, start_services, wait_healthy
from elsa.runtime.simulation import Simulation
from elsa.wire import AdapterBroadcast, decode, from_payload

from .conftest import wait_for_run

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _wait_for_devices(operator: Operator, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        nodes = operator.get("/v1/nodes")
        if sum(1 for n in nodes if n["role"] == "device" and n["alive"]) >= count:
            return
        time.sleep(0.5)
    raise AssertionError(f"{count} devices did not join in {timeout_s}s")


def _global_adapter(operator: Operator, run_id: str, version: int) -> dict[str, torch.Tensor]:
    response = httpx.get(
        f"{operator.url}/v1/runs/{run_id}/adapters/{version}",
        headers={"authorization": f"Bearer {operator.admin_token}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    message = decode(response.content, AdapterBroadcast)
    return {k: from_payload(p, dtype=torch.float32) for k, p in message.tensors.items()}


async def _live_control(redis_url: str, run_id: str) -> dict[str, Any]:
    live = LiveStore.from_url(redis_url)
    try:
        return {
            "clusters": await live.get_clusters(run_id),
            "trust": await live.get_trust(run_id),
            "split_plans": await live.get_split_plans(run_id),
        }
    finally:
        await live.close()


async def _sql_snapshots(database_url: str, run_id: str) -> dict[str, list[int]]:
    store = await SqlStore.connect(database_url)
    try:
        rows = await store.list_snapshots(run_id)
    finally:
        await store.close()
    out: dict[str, list[int]] = {}
    for row in rows:
        out.setdefault(row.kind, []).append(row.round)
    return {k: sorted(v) for k, v in out.items()}


def test_service_runtime_matches_simulation_and_learns(tmp_path: Path) -> None:
    config = load_config(ROOT / "configs" / "e2e.yaml")
    # the services compute with one torch thread each; so does the reference simulation (with SS-OP
    # noise and tempered trust, thread-count float differences reach ~1e-3 in the adapters)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        simulated = Simulation.from_config(config, run_id="sim").run()
    finally:
        torch.set_num_threads(threads)

    plan = plan_demo(config, tmp_path, None, None)
    with running_cluster(tmp_path) as cluster:
        redis_url = start_services(cluster, plan, tmp_path)
        wait_healthy([c.url for c in cluster.children if c.url], 240)
        operator = Operator(plan.cloud_url, plan.admin_token)
        run_id = operator.create_run(config)["run_id"]
        view = wait_for_run(operator, cluster, run_id, 900)
        assert view["state"] == "completed"
        assert view["latest_version"] == config.train.cloud_rounds
        served = _global_adapter(operator, run_id, config.train.cloud_rounds)
        rounds = operator.get(f"/v1/runs/{run_id}/rounds")
        metrics = operator.get(f"/v1/runs/{run_id}/metrics")["rounds"]
        control = operator.get(f"/v1/runs/{run_id}/control")
        live = asyncio.run(_live_control(redis_url, run_id))
    snapshots = asyncio.run(_sql_snapshots(plan.database_url, run_id))

    # the control plane: same clusters and trust as the simulation, visible to operators,
    # live in Redis and snapshotted to SQL for every round
    expected = simulated.rounds[-1].control
    names = [f"device-{i:03d}" for i in range(config.num_devices)]
    assert control["round"] == config.train.cloud_rounds
    assert sorted(control["trust"]) == names
    assert control["clusters"] == expected["clusters"]  # clustering is off in e2e.yaml (see there)
    assert control["quarantined"] == expected["quarantined"]
    for name in names:
        # tempering (p ** 20) magnifies float-level differences of the runtimes' logits
        assert abs(control["trust"][name] - expected["trust"][name]) < 0.02, (control, expected)
        assert 0.0 <= control["trust"][name] <= 1.0
    assert sorted(control["assignment"]) == names
    assert set(control["assignment"].values()) == {"edge-0", "edge-1"}
    assert control["split_plans"] == {n: [1, 1] for n in names}
    assert live["clusters"] == control["clusters"] and live["trust"] == control["trust"]
    assert live["split_plans"] == {n: (1, 1) for n in names}
    for kind in ("clusters", "trust", "split_plan", "assignment"):
        assert snapshots[kind] == list(range(1, config.train.cloud_rounds + 1)), (kind, snapshots)

    # same config + seed => same adapters as the simulation runtime (fp32 transport)
    assert sorted(served) == sorted(simulated.global_state)
    assert max_abs_diff(served, simulated.global_state) < 1e-4
    # adapters changed
    assert any(float(v.abs().max()) > 1e-4 for k, v in served.items() if "lora_B" in k)
    # rounds recorded in SQL, with their versions
    assert [(r["round"], r["state"], r["version"]) for r in rounds] == [
        (1, "completed", 1),
        (2, "completed", 2),
    ]
    # accuracy rises (with sketches and SS-OP): device-mean local accuracy, measured through the
    # perturbed split path, of the start model vs after the last round
    first, last = metrics[0], metrics[-1]
    assert first["reports"] == last["reports"] == config.num_devices
    assert last["metrics"]["eval_accuracy"] >= first["metrics"]["start_accuracy"] + 0.1, metrics
    kinds = (
        "activations",
        "gradients",
        "inference_activations",
        "probe_reports",
        "adapters_device_to_edge",
        "adapters_edge_to_device",
        "adapters_edge_to_cloud",
        "adapters_cloud_to_device",
    )
    for kind in kinds:
        assert last["bytes"][kind] > 0, kind
    # sketched: an edge's upload is a fraction of the dense fp32 adapter
    dense = 4 * sum(v.numel() for v in simulated.global_state.values())
    per_edge = last["bytes"]["adapters_edge_to_cloud"] / 2
    assert per_edge < dense / 5, (per_edge, dense)


def test_killed_device_does_not_stall_the_round(tmp_path: Path) -> None:
    config = load_config(ROOT / "configs" / "e2e.yaml").model_copy(deep=True)
    edge_deadline_s = 20
    plan = plan_demo(config, tmp_path, None, None)
    overrides = {
        "cloud": {
            "ELSA_CLOUD_MIN_DEVICE_FRACTION": "0.5",
            "ELSA_CLOUD_HEARTBEAT_TTL_S": "8",
            "ELSA_CLOUD_ROUND_DEADLINE_S": "240",
            "ELSA_CLOUD_REPORT_WAIT_S": "15",
        },
        "edge": {"ELSA_EDGE_EDGE_ROUND_DEADLINE_S": str(edge_deadline_s)},
        "device": {"ELSA_CLIENT_EVALUATE": "false"},
    }
    with running_cluster(tmp_path) as cluster:
        start_services(cluster, plan, tmp_path, overrides)
        wait_healthy([c.url for c in cluster.children if c.url], 240)
        operator = Operator(plan.cloud_url, plan.admin_token)
        _wait_for_devices(operator, config.num_devices, 240)  # quorum is 0.5: start with all four
        run_id = operator.create_run(config)["run_id"]
        victim = next(c for c in cluster.children if c.name == "device-003")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # kill it while it trains round 1
            status = httpx.get(f"{victim.url}/status", timeout=10).json()
            if status["phase"].startswith("training edge round"):
                break
            time.sleep(0.3)
        else:
            pytest.fail("device-003 never started training")
        os.killpg(victim.process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        view = wait_for_run(operator, cluster, run_id, 600)
        rounds = operator.get(f"/v1/runs/{run_id}/rounds")
        metrics = operator.get(f"/v1/runs/{run_id}/metrics")["rounds"]
        nodes = operator.get("/v1/nodes")

    assert view["state"] == "completed"
    assert [r["state"] for r in rounds] == ["completed", "completed"]
    first = rounds[0]
    # the edge closed the edge round at its deadline with the devices present, and the round went on
    assert metrics[0]["reports"] == config.num_devices - 1
    assert time.monotonic() - killed_at < 600
    assert first["finished_at"] is not None
    victim_id = next(n["node_id"] for n in nodes if n["name"] == "device-003")
    assert not next(n for n in nodes if n["node_id"] == victim_id)["alive"]
