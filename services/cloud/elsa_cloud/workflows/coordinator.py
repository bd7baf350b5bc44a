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

from elsa.errors import ConfigError, ConflictError, ElsaError
from elsa.infra.records import NodeRecord
from elsa.infra.web import new_token, token_hash
from elsa.runtime.config import RunConfig, parse_config
from elsa.runtime.control import ControlPlane, DeviceProfile
from elsa.runtime.exchange import broadcast_message
from elsa.runtime.rounds import aggregate_edges
from elsa.wire import encode
from elsa.wire.control import Task
from elsa_cloud.settings import CloudSettings
from elsa_cloud.state import CloudState
from elsa_cloud.workflows.control import device_profile, load_plane, log_observation, model_footprint, persist
from elsa_cloud.workflows.vault import run_model, save_delta, save_version, start_model

logger = logging.getLogger(__name__)


def now() -> datetime:
    """Timezone-aware UTC now (the store never reads the clock itself)."""
    return datetime.now(UTC)


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
        started = time.monotonic()
        if await live.is_empty(self.run_id):
            await self._restore_live_state()
        edges, devices = await self._wait_for_quorum(config)
        devices = sorted(devices, key=lambda d: d.name)[: config.num_devices]
        plane = await load_plane(self.state, self.run_id, config)
        assignment, plans = self._plan(config, plane, edges, devices)
        device_by_id = {d.node_id: d for d in devices}
        self.state.uploads[(self.run_id, round_index)] = {}  # collect before anyone hears of the round
        self.state.probes[(self.run_id, round_index)] = {}  # (the assignment is public)
        await live.set_assignment(self.run_id, assignment)
        await persist(self.state, self.run_id, round_index, plane, assignment)
        await store.start_round(self.run_id, round_index, now())
        fingerprint = plane.fingerprint_round(round_index)
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
                    clusters={n: plane.cluster_of(n) for n in names},
                    trust={n: plane.weight(n, 1) for n in names},
                    splits={n: plans[n] for n in names},
                ),
            )
            for device_id in members:
                await store.record_participation(
                    self.run_id, round_index, device_id, "device", "assigned", edge_id, now()
                )
        _, privacy = await run_model(self.state, self.run_id, config)
        cuts = {h for h, _ in plans.values()}
        digests = await asyncio.to_thread(lambda: {h: privacy.digest(h) for h in cuts})
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
                    split=plans[device_by_id[device_id].name],
                    fingerprint=fingerprint,
                    subspace_digest=digests[plans[device_by_id[device_id].name][0]],
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
            self.state.probes.pop(key, None)
            await store.set_round_state(self.run_id, round_index, "abandoned", now())
            await self._event({"kind": "round_abandoned", "round": round_index})
            self.state.metrics.round_ended("abandoned", time.monotonic() - started)
            logger.warning(
                "round abandoned: no edge model arrived", extra={"run_id": self.run_id, "round": round_index}
            )
            return False
        await store.set_round_state(self.run_id, round_index, "aggregating", now())
        start = await start_model(self.state, self.settings.adapter_dir, self.run_id, config, version)
        aggregated, merged = aggregate_edges(uploads, start, config.sketch_params())
        folder, digest, nbytes = await asyncio.to_thread(
            save_version, self.settings.adapter_dir, self.run_id, round_index, aggregated, config
        )
        delta = encode(
            broadcast_message(
                dtype=config.sketch_params().table_dtype,
                run_id=self.run_id,
                round_index=round_index,
                version=round_index,
                sketches=merged,
                base_version=version,
            )
        )
        await asyncio.to_thread(save_delta, self.settings.adapter_dir, self.run_id, round_index, delta)
        await store.add_adapter_version(
            self.run_id, round_index, round_index, str(folder), digest, nbytes, now()
        )
        self.state.adapter_cache[(self.run_id, round_index)] = aggregated
        await store.set_round_state(self.run_id, round_index, "completed", now())
        expected = {device_by_id[d].name for d, e in assignment.items() if e in uploads}
        await self._observe(plane, round_index, expected)
        for edge_id in served:
            if edge_id not in uploads:
                await store.record_participation(
                    self.run_id, round_index, edge_id, "edge", "timed_out", "", now()
                )
        await self._event({"kind": "round_completed", "round": round_index, "edges": sorted(uploads)})
        self.state.metrics.round_ended("completed", time.monotonic() - started)
        logger.info(
            "round committed", extra={"run_id": self.run_id, "round": round_index, "version": round_index}
        )
        return True

    def _plan(
        self, config: RunConfig, plane: ControlPlane, edges: list[NodeRecord], devices: list[NodeRecord]
    ) -> tuple[dict[str, str], dict[str, tuple[int, int]]]:
        """This round's assignment (device id -> edge id) and cuts (device name -> (h, t)).

        The same order as the simulation: assign, then plan each device's cut for its edge's
        link. A device whose memory budget fits no cut is left out of the round (logged).
        """
        by_name = {d.name: d for d in devices}
        profiles = {d.name: p for d in devices if (p := device_profile(d)) is not None}
        model = model_footprint(self.run_id, devices)
        capacity = {e.node_id: e.capacity for e in edges}
        assignment = plane.assign(sorted(by_name), capacity, profiles, model)
        edge_step = {e.node_id: (device_profile(e) or DeviceProfile()).block_step_s for e in edges}
        plans: dict[str, tuple[int, int]] = {}
        for name in sorted(assignment):
            try:
                split = plane.plan(name, profiles.get(name), model, edge_step.get(assignment[name]))
            except ConfigError as exc:
                logger.error(
                    "device left out of the round: no feasible cut",
                    extra={"run_id": self.run_id, "device": name, "detail": exc.detail},
                )
                continue
            plans[name] = (split.head_blocks, split.tail_blocks)
        return {by_name[n].node_id: assignment[n] for n in plans}, plans

    async def _observe(self, plane: ControlPlane, round_index: int, expected: set[str]) -> None:
        """Update clusters and trust from the round's probe reports (DESIGN §2.4-§2.5).

        A device posts its probe report before its first edge-round update, so every report of
        a device whose edge uploaded is already here; a device that sent none keeps its trust.
        """
        reports = self.state.probes.pop((self.run_id, round_index), {})
        missing = sorted(expected - set(reports))
        if missing:
            logger.warning(
                "no probe report", extra={"run_id": self.run_id, "round": round_index, "devices": missing}
            )
        seen = plane.observe(reports)
        await persist(
            self.state, self.run_id, round_index, plane, await self.state.live.get_assignment(self.run_id)
        )
        await self._event(log_observation(self.run_id, round_index, seen))

    async def _restore_live_state(self) -> None:
        snapshot = await self.state.store.latest_snapshot(self.run_id, "assignment")
        if snapshot is None:
            return  # a new run: nothing was lost
        payload = snapshot.payload
        assignment = dict(payload.get("assignment_ids", payload.get("assignment", {})))
        plane = self.state.controls.get(self.run_id)
        await self.state.live.restore(
            self.run_id,
            assignment=assignment,
            clusters=dict(plane.clusters) if plane else {},
            trust=dict(plane.trust) if plane else {},
            split_plans={d: (p.head_blocks, p.tail_blocks) for d, p in plane.plans.items()} if plane else {},
        )
        logger.warning("live state restored from SQL", extra={"run_id": self.run_id})

    def _stop_tasks(self) -> None:
        for node_id, (_, task) in list(self.state.board.tasks.items()):
            if task.run_id == self.run_id and task.kind != "stop":
                self.state.board.post(node_id, Task(kind="stop", run_id=self.run_id))
