"""Faults injected into the service runtime, as real processes on loopback (DESIGN §5, §6): one
run of ``configs/e2e.yaml`` (4 cloud rounds of one edge round) through which, in sequence,

1. a device is SIGKILLed while it trains round 1: the round completes with the other devices;
   the same device (same name and partition) is restarted, rejoins and trains in a later round;
2. the cloud is SIGKILLed while round 2 trains and restarted: the run resumes at its last
   committed round (round 2 is abandoned and redone, no round is lost or duplicated) and the
   stored versions are intact (served, sha256 in SQL = the files);
3. an edge is SIGKILLed while round 3 trains: the round closes once the edge is dead, its
   devices fail that round cleanly (the agents stay up and show the error), and the next round
   moves its devices to the surviving edge;
4. Redis is flushed (FLUSHALL) in the same round: the operator view falls back to SQL and the
   live state is rebuilt from it.

Every wait below is a generous bound on a condition, never a timing assertion.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import redis

from elsa.infra.live import LiveStore
from elsa.infra.records import ParticipationRecord, SnapshotKind
from elsa.infra.sql import SqlStore
from elsa.model.peft_format import ADAPTER_FILE, file_sha256
from elsa.runtime.config import load_config
from elsa.runtime.launcher import (
    Child,
    Cluster,
    DemoPlan,
    Operator,
    plan_demo,
    running_cluster,
    start_services,
    wait_healthy,
)

ROOT = Path(__file__).resolve().parents[2]
logger = logging.getLogger(__name__)
pytestmark = [pytest.mark.slow, pytest.mark.e2e]

T = TypeVar("T")

HEARTBEAT_TTL_S = 8  # a killed node is dead this long after its last heartbeat
OVERRIDES = {
    "cloud": {
        "ELSA_CLOUD_MIN_DEVICE_FRACTION": "0.5",  # 2 of the 4 devices make a round
        "ELSA_CLOUD_HEARTBEAT_TTL_S": str(HEARTBEAT_TTL_S),
        "ELSA_CLOUD_ROUND_DEADLINE_S": "240",  # a bound: rounds close when their edges upload or die
        "ELSA_CLOUD_REPORT_WAIT_S": "30",
        "ELSA_CLOUD_JOIN_WAIT_S": "240",
    },
    "edge": {
        "ELSA_EDGE_EDGE_ROUND_DEADLINE_S": "30",  # an edge round closes this long after its first update
        "ELSA_EDGE_CAPACITY": "4",  # one edge can take every device when the other dies
    },
    "device": {"ELSA_CLIENT_EVALUATE": "false"},
}


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float, interval_s: float = 0.3) -> T:
    """Poll ``probe`` until it returns something other than None/False; a peer that is down
    (connection refused, 5xx) counts as "not yet". AssertionError naming ``what`` after
    ``timeout_s`` (a generous bound)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            got = probe()
        except (httpx.HTTPError, OSError) as exc:
            got, last = None, exc
        else:
            last = got
        if got is not None and got is not False:
            logger.info("reached: %s", what)
            return got
        time.sleep(interval_s)
    raise AssertionError(f"{what}: not reached in {timeout_s:.0f}s (last: {last!r})")


class Chaos:
    """The cluster of the run and what the test needs to kill and restart its processes."""

    def __init__(self, cluster: Cluster, plan: DemoPlan, run_dir: Path, redis_url: str) -> None:
        self.cluster, self.plan, self.run_dir, self.redis_url = cluster, plan, run_dir, redis_url
        self.operator = Operator(plan.cloud_url, plan.admin_token)

    def child(self, name: str) -> Child:
        """The live child of that name (the latest one started)."""
        return [c for c in self.cluster.children if c.name == name][-1]

    def kill(self, name: str) -> Child:
        """SIGKILL a child's whole process group and reap it."""
        child = self.child(name)
        os.killpg(child.process.pid, signal.SIGKILL)
        child.process.wait(timeout=30)
        return child

    def restart_cloud(self) -> None:
        """The cloud again on its port, database, adapter folder, Redis and settings (it logs to
        ``cloud-again.log``)."""
        env = {
            "ELSA_CLOUD_DATABASE_URL": self.plan.database_url,
            "ELSA_CLOUD_REDIS_URL": self.redis_url,
            "ELSA_CLOUD_JOIN_SECRET": self.plan.join_secret,
            "ELSA_CLOUD_ADMIN_TOKEN": self.plan.admin_token,
            "ELSA_CLOUD_ADAPTER_DIR": str((self.run_dir / "adapters").resolve()),
            **OVERRIDES["cloud"],
        }
        self.cluster.uvicorn("cloud-again", "cloud", "elsa_cloud.main:create_app", self.plan.cloud_port, env)

    def restart_device(self, index: int) -> None:
        """The same device (name, partition, port) again; it logs to ``device-NNN-again.log``."""
        env = {
            "ELSA_CLIENT_PARTITION_INDEX": str(index),
            "ELSA_CLIENT_CLOUD_URL": self.plan.cloud_url,
            "ELSA_CLIENT_JOIN_SECRET": self.plan.join_secret,
            "ELSA_CLIENT_TORCH_THREADS": "1",
            **OVERRIDES["device"],
        }
        port = self.plan.device_ports[index]
        self.cluster.uvicorn(f"device-{index:03d}-again", "device", "elsa_client.main:create_app", port, env)

    def status(self, name: str) -> dict[str, Any]:
        """A device agent's /status."""
        child = self.child(name)
        response = httpx.get(f"{child.url}/status", timeout=10)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def training(self, name: str, round_index: int) -> bool:
        """Whether the device is in that round's edge round with its session open, before its
        update: training steps with its edge, or its probes through the split model."""
        status = self.status(name)
        phase = str(status["phase"])
        return status["round"] == round_index and phase.startswith(
            ("training edge round", "probing behaviour")
        )

    def failed(self, name: str, round_index: int, before: str | None) -> dict[str, Any] | None:
        """The device's status once it shows a new error from that round (None before)."""
        status = self.status(name)
        return status if status["round"] == round_index and status["last_error"] != before else None

    def ended(self, run_id: str) -> dict[str, Any] | None:
        """The run's view once it is over (None while it runs)."""
        view: dict[str, Any] = self.operator.get(f"/v1/runs/{run_id}")
        return view if view["state"] in ("completed", "failed", "stopped") else None

    def rounds(self, run_id: str) -> list[dict[str, Any]]:
        """The operator's view of the run's rounds."""
        got: list[dict[str, Any]] = self.operator.get(f"/v1/runs/{run_id}/rounds")
        return got

    def round_state(self, run_id: str, round_index: int) -> str | None:
        """The state of one round (None before it exists)."""
        return next((r["state"] for r in self.rounds(run_id) if r["round"] == round_index), None)

    def adapter_bytes(self, run_id: str, version: int) -> bytes:
        """``GET /v1/runs/{id}/adapters/{v}`` (the cloud checks the sha256 on a cold read)."""
        response = httpx.get(
            f"{self.plan.cloud_url}/v1/runs/{run_id}/adapters/{version}",
            headers={"authorization": f"Bearer {self.plan.admin_token}"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        return response.content


async def _stored(database_url: str, run_id: str, rounds: int) -> dict[str, Any]:
    """What SQL holds of the run: versions, participation per round, assignment snapshots."""
    store = await SqlStore.connect(database_url)
    try:
        return {
            "versions": await store.list_adapter_versions(run_id),
            "participation": {r: await store.list_participation(run_id, r) for r in range(1, rounds + 1)},
            "assignments": {
                s.round: s.payload["assignment"]
                for s in await store.list_snapshots(run_id)
                if s.kind == "assignment"
            },
            "live": {  # what the cloud's Redis should hold of the last round
                "assignment": (await _snapshot(store, run_id, "assignment"))["assignment_ids"],
                "trust": (await _snapshot(store, run_id, "trust"))["trust"],
            },
            "nodes": {n.node_id: n.name for n in await store.list_nodes()},
        }
    finally:
        await store.close()


async def _snapshot(store: SqlStore, run_id: str, kind: SnapshotKind) -> dict[str, Any]:
    snapshot = await store.latest_snapshot(run_id, kind)
    assert snapshot is not None, kind
    return snapshot.payload


async def _live(redis_url: str, run_id: str) -> dict[str, Any]:
    live = LiveStore.from_url(redis_url)
    try:
        return {"assignment": await live.get_assignment(run_id), "trust": await live.get_trust(run_id)}
    finally:
        await live.close()


def _who(rows: list[ParticipationRecord], names: dict[str, str], status: str) -> set[str]:
    return {names.get(p.node_id, p.node_id) for p in rows if p.status == status}


def test_the_run_survives_killed_devices_cloud_and_edge_and_a_flushed_redis(tmp_path: Path) -> None:
    base = load_config(ROOT / "configs" / "e2e.yaml")
    config = base.model_copy(
        update={
            "name": "chaos",
            "train": base.train.model_copy(update={"cloud_rounds": 4, "edge_rounds": 1}),
        }
    )
    plan = plan_demo(config, tmp_path, None, None)
    with running_cluster(tmp_path) as cluster:
        redis_url = start_services(cluster, plan, tmp_path, OVERRIDES)
        chaos = Chaos(cluster, plan, tmp_path, redis_url)
        operator = chaos.operator
        wait_healthy([c.url for c in cluster.children if c.url], 240)
        wait_for(
            "4 devices joined",
            lambda: sum(n["role"] == "device" and n["alive"] for n in operator.get("/v1/nodes")) == 4,
            240,
        )
        run_id = operator.create_run(config)["run_id"]

        # 1. a device dies mid-round; the round completes with the others; it comes back
        wait_for("device-003 trains round 1", lambda: chaos.training("device-003", 1), 300)
        chaos.kill("device-003")
        wait_for("round 1 committed", lambda: chaos.round_state(run_id, 1) == "completed", 300)
        metrics = operator.get(f"/v1/runs/{run_id}/metrics")["rounds"]
        assert metrics[0]["reports"] == 3, metrics
        nodes = {n["name"]: n for n in operator.get("/v1/nodes")}
        assert not nodes["device-003"]["alive"]
        chaos.restart_device(3)

        # 2. the cloud dies mid-round and is restarted
        wait_for("device-000 trains round 2", lambda: chaos.training("device-000", 2), 300)
        version_1 = chaos.adapter_bytes(run_id, 1)
        chaos.kill("cloud")
        for name in ("device-000", "device-001", "device-002"):  # the devices live on
            assert chaos.status(name)["node_id"] and chaos.child(name).process.poll() is None
        chaos.restart_cloud()
        wait_healthy([plan.cloud_url], 240)
        wait_for(
            "round 2 committed after the restart", lambda: chaos.round_state(run_id, 2) == "completed", 300
        )
        assert chaos.adapter_bytes(run_id, 1) == version_1  # a cold read: its checksum is verified
        events = operator.get(f"/v1/runs/{run_id}/events?n=1000")
        round_2 = [e for e in events if e.get("round") == 2 and e["kind"] != "control_updated"]
        assert [e["kind"] for e in round_2] == [
            "round_started",
            "round_abandoned",
            "round_started",
            "round_completed",
        ]
        assert round_2[1]["reason"] == "interrupted before its commit"

        # 3. device-000's edge dies while round 3 trains ...
        wait_for("device-000 trains round 3", lambda: chaos.training("device-000", 3), 300)
        round_3 = operator.get(f"/v1/runs/{run_id}/control")["assignment"]
        doomed = round_3["device-000"]  # edge name, also its process's
        victims = {d: chaos.status(d)["last_error"] for d, e in round_3.items() if e == doomed}
        chaos.kill(doomed)
        # 4. ... and Redis loses everything: the operator's view falls back to SQL
        control = operator.get(f"/v1/runs/{run_id}/control")
        client = redis.Redis.from_url(redis_url)
        try:
            assert client.flushall()
        finally:
            client.close()
        assert operator.get(f"/v1/runs/{run_id}/control") == control
        assert control["assignment"] == round_3 and control["round"] == 2 and control["trust"]
        for name, before in victims.items():  # the dead edge's devices fail the round cleanly, stay up
            status = wait_for(f"{name} reports the lost edge", partial(chaos.failed, name, 3, before), 120)
            assert chaos.child(name).process.poll() is None, status

        view = wait_for("the run ends", lambda: chaos.ended(run_id), 480)
        assert view["state"] == "completed" and view["latest_version"] == 4, view
        rounds = chaos.rounds(run_id)
        versions = {v: chaos.adapter_bytes(run_id, v) for v in range(1, 5)}
        live = asyncio.run(_live(redis_url, run_id))
        alive = {n["name"]: n["alive"] for n in operator.get("/v1/nodes")}
        for name in ("device-000", "device-001", "device-002", "device-003-again"):
            assert chaos.child(name).process.poll() is None, name
    stored = asyncio.run(_stored(plan.database_url, run_id, 4))

    # nothing lost, nothing duplicated: each round committed once, with its version
    assert [(r["round"], r["state"], r["version"]) for r in rounds] == [
        (i, "completed", i) for i in range(1, 5)
    ]
    assert [v.version for v in stored["versions"]] == [1, 2, 3, 4]
    for v in stored["versions"]:  # the checksums in SQL match the files served
        assert file_sha256(Path(v.path) / ADAPTER_FILE) == v.sha256
        assert len(versions[v.version]) > 0
    names, part = stored["nodes"], stored["participation"]
    # 1. device-003 trained round 1 until it was killed, and again after it rejoined
    assert "device-003" in _who(part[1], names, "assigned") - _who(part[1], names, "reported")
    later = [r for r in (2, 3, 4) if "device-003" in _who(part[r], names, "reported")]
    assert later, {r: sorted(_who(part[r], names, "reported")) for r in part}
    # 3. the dead edge's round closed without it; the next round put every device on the survivor
    assert doomed in _who(part[3], names, "timed_out")
    survivor = next(name for name in names.values() if name.startswith("edge-") and name != doomed)
    assert {names[e] for e in stored["assignments"][4].values()} == {survivor}, stored["assignments"][4]
    assert set(victims) <= _who(part[4], names, "reported")  # they took their next task
    assert not alive[doomed] and alive[survivor]
    # 4. the live state was rebuilt after the flush: Redis holds what SQL holds
    assert live == stored["live"] and live["assignment"] and live["trust"]
