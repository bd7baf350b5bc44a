"""The cloud's round coordinator (DESIGN §2): one asyncio task per running run.

For each cloud round: pick the live devices and edges, assign devices to edges, hand out
``serve``/``train`` tasks with fresh per-round session tokens, wait for the edges' models until
the deadline, aggregate them (example-weighted, in sorted edge order — the same function the
simulation uses), store the new global version (PEFT + checksum) and commit the round. A
restarted cloud resumes every running run at its last committed round; an interrupted round is
abandoned and redone. Redis flushed mid-run is restored from the SQL snapshots.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import UTC, datetime

from elsa.errors import ConflictError, ElsaError
from elsa.infra.records import NodeRecord
from elsa.infra.web import new_token, token_hash
from elsa.runtime.config import RunConfig, parse_config
from elsa.runtime.rounds import aggregate_edges
from elsa.wire.control import Task
from elsa_cloud.settings import CloudSettings
from elsa_cloud.state import CloudState
from elsa_cloud.workflows.vault import save_version

logger = logging.getLogger(__name__)


def now() -> datetime:
    """Timezone-aware UTC now (the store never reads the clock itself)."""
    return datetime.now(UTC)


def assign_devices(devices: list[str], edges: list[NodeRecord]) -> dict[str, str]:
    """Balanced contiguous assignment in the given device order (the simulation's topology).

    Device i goes to edge ``i // ceil(n_devices / n_edges)``, capped by each
    edge's capacity (overflow spills to the next edge with room).
    """
    if not edges or not devices:
        return {}
    ordered = sorted(edges, key=lambda e: e.name)
    per = math.ceil(len(devices) / len(ordered))
    load = {e.node_id: 0 for e in ordered}
    out: dict[str, str] = {}
    for i, device in enumerate(devices):
        preferred = min(i // per, len(ordered) - 1)
        for edge in ordered[preferred:] + ordered[:preferred]:
            if load[edge.node_id] < (edge.capacity or 10**6):
                out[device] = edge.node_id
                load[edge.node_id] += 1
                break
    return out


class Coordinator:
    """Drives one run's rounds."""

    def __init__(self, state: CloudState, settings: CloudSettings, run_id: str) -> None:
        self.state = state
        self.settings = settings
        self.run_id = run_id

    async def run(self) -> None:
        """Run rounds until the run completes, is stopped, or fails."""
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except ElsaError as exc:
            logger.error("run failed", extra={"run_id": self.run_id, "error": exc.code, "detail": exc.detail})
            await self.state.store.set_run_state(self.run_id, "failed", updated_at=now())
        except Exception:
            logger.exception("run failed unexpectedly", extra={"run_id": self.run_id})
            await self.state.store.set_run_state(self.run_id, "failed", updated_at=now())

    async def _run(self) -> None:
        store = self.state.store
        record = await store.get_run(self.run_id)
        if record is None:
            return
        config = parse_config(record.config, source=f"run {self.run_id}")
        await self._abandon_interrupted_rounds()
        attempts = 0
        while True:
            record = await store.get_run(self.run_id)
            if record is None or record.state in ("stopped", "completed", "failed"):
                break
            if record.state == "paused":
                await asyncio.sleep(0.5)
                continue
            round_index = await store.last_completed_round(self.run_id) + 1
            if round_index > config.train.cloud_rounds:
                await self._await_reports(config.train.cloud_rounds, self.settings.report_wait_s)
                await store.set_run_state(self.run_id, "completed", updated_at=now())
                await self._event({"kind": "run_completed"})
                break
            if await self._round(config, round_index):
                attempts = 0
                continue
            attempts += 1
            if attempts >= self.settings.max_round_attempts:
                raise ConflictError(f"round {round_index} abandoned {attempts} times")
            await asyncio.sleep(1.0)
        self._stop_tasks()

    async def _await_reports(self, round_index: int, timeout_s: float) -> None:
        """Give the devices of the last round time to evaluate and report before edges stop."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rows = await self.state.store.list_participation(self.run_id, round_index)
            assigned = {p.node_id for p in rows if p.status == "assigned"}
            reported = {p.node_id for p in rows if p.status == "reported"}
            if assigned <= reported:
                return
            await asyncio.sleep(0.5)

    async def _abandon_interrupted_rounds(self) -> None:
        for rnd in await self.state.store.list_rounds(self.run_id):
            if rnd.state in ("training", "aggregating"):
                await self.state.store.set_round_state(self.run_id, rnd.round, "abandoned", now())

    async def _event(self, event: dict[str, object]) -> None:
        try:
            await self.state.live.push_event(self.run_id, {"at": time.time(), **event})
        except ElsaError:
            logger.warning("could not record event", extra={"run_id": self.run_id})

    async def _live_nodes(self) -> tuple[list[NodeRecord], list[NodeRecord]]:
        nodes = await self.state.store.list_nodes()
        alive = await self.state.live.alive([n.node_id for n in nodes])
        edges = [n for n in nodes if n.role == "edge" and n.node_id in alive and n.url]
        devices = [n for n in nodes if n.role == "device" and n.node_id in alive]
        return edges, devices

    async def _wait_for_quorum(self, config: RunConfig) -> tuple[list[NodeRecord], list[NodeRecord]]:
        needed = max(1, math.ceil(config.num_devices * self.settings.min_device_fraction))
        deadline = time.monotonic() + self.settings.join_wait_s
        while True:
            edges, devices = await self._live_nodes()
            if edges and len(devices) >= needed:
                return edges, devices
            if time.monotonic() > deadline:
                raise ConflictError(
                    f"quorum not reached: {len(devices)}/{needed} devices and {len(edges)} edges are alive"
                )
            await asyncio.sleep(0.5)

    async def _round(self, config: RunConfig, round_index: int) -> bool:
        """One cloud round; True when committed, False when abandoned."""
        store, live = self.state.store, self.state.live
        if await live.is_empty(self.run_id):
            await self._restore_live_state()
        edges, devices = await self._wait_for_quorum(config)
        devices = sorted(devices, key=lambda d: d.name)[: config.num_devices]
        device_by_id = {d.node_id: d for d in devices}
        assignment = assign_devices([d.node_id for d in devices], edges)
        await live.set_assignment(self.run_id, assignment)
        await store.save_snapshot(self.run_id, round_index, "assignment", {"assignment": assignment}, now())
        await store.start_round(self.run_id, round_index, now())
        self.state.uploads[(self.run_id, round_index)] = {}  # collect before anyone hears of the round
        await store.set_run_state(self.run_id, "running", current_round=round_index, updated_at=now())
        latest = await store.latest_adapter_version(self.run_id)
        version = latest.version if latest is not None else 0
        edge_by_id = {e.node_id: e for e in edges}
        tokens = {d: new_token() for d in assignment}
        served: dict[str, list[str]] = {}
        for device_id, edge_id in assignment.items():
            served.setdefault(edge_id, []).append(device_id)
        for edge_id, members in served.items():
            names = sorted(device_by_id[d].name for d in members)
            self.state.board.post(
                edge_id,
                Task(
                    kind="serve",
                    run_id=self.run_id,
                    round=round_index,
                    version=version,
                    config=config.model_dump(mode="json"),
                    devices=names,
                    session_token_hashes={device_by_id[d].name: token_hash(tokens[d]) for d in members},
                    deadline_s=self.settings.round_deadline_s,
                ),
            )
            for device_id in members:
                await store.record_participation(
                    self.run_id, round_index, device_id, "device", "assigned", edge_id, now()
                )
        for device_id, edge_id in assignment.items():
            self.state.board.post(
                device_id,
                Task(
                    kind="train",
                    run_id=self.run_id,
                    round=round_index,
                    version=version,
                    config=config.model_dump(mode="json"),
                    edge_id=edge_id,
                    edge_url=edge_by_id[edge_id].url,
                    session_token=tokens[device_id],
                    deadline_s=self.settings.round_deadline_s,
                ),
            )
        await self._event(
            {"kind": "round_started", "round": round_index, "devices": len(assignment), "edges": len(served)}
        )
        logger.info(
            "round started", extra={"run_id": self.run_id, "round": round_index, "devices": len(assignment)}
        )

        key = (self.run_id, round_index)
        deadline = time.monotonic() + self.settings.round_deadline_s
        while time.monotonic() < deadline:
            record = await store.get_run(self.run_id)
            if record is None or record.state == "stopped":
                break
            if all(e in self.state.uploads[key] for e in served):
                break
            await asyncio.sleep(0.2)
        uploads = self.state.uploads.pop(key, {})
        if not uploads:
            await store.set_round_state(self.run_id, round_index, "abandoned", now())
            await self._event({"kind": "round_abandoned", "round": round_index})
            logger.warning(
                "round abandoned: no edge model arrived", extra={"run_id": self.run_id, "round": round_index}
            )
            return False
        await store.set_round_state(self.run_id, round_index, "aggregating", now())
        global_state = aggregate_edges(uploads)
        folder, digest, nbytes = await asyncio.to_thread(
            save_version, self.settings.adapter_dir, self.run_id, round_index, global_state, config
        )
        await store.add_adapter_version(
            self.run_id, round_index, round_index, str(folder), digest, nbytes, now()
        )
        self.state.adapter_cache[(self.run_id, round_index)] = global_state
        await store.set_round_state(self.run_id, round_index, "completed", now())
        for edge_id in served:
            if edge_id not in uploads:
                await store.record_participation(
                    self.run_id, round_index, edge_id, "edge", "timed_out", "", now()
                )
        await self._event({"kind": "round_completed", "round": round_index, "edges": sorted(uploads)})
        logger.info(
            "round committed", extra={"run_id": self.run_id, "round": round_index, "version": round_index}
        )
        return True

    async def _restore_live_state(self) -> None:
        snapshot = await self.state.store.latest_snapshot(self.run_id, "assignment")
        if snapshot is None:
            return  # a new run: nothing was lost
        assignment = dict(snapshot.payload.get("assignment", {}))
        await self.state.live.restore(
            self.run_id, assignment=assignment, clusters={}, trust={}, split_plans={}
        )
        logger.warning("live state restored from SQL", extra={"run_id": self.run_id})

    def _stop_tasks(self) -> None:
        for node_id, (_, task) in list(self.state.board.tasks.items()):
            if task.run_id == self.run_id and task.kind != "stop":
                self.state.board.post(node_id, Task(kind="stop", run_id=self.run_id))
