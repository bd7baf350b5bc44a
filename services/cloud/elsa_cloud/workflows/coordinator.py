"""The cloud's round coordinator (DESIGN §2): one asyncio task per running run.

For each cloud round: pick the live devices and edges, assign devices to edges, hand out
``serve``/``train`` tasks with fresh per-round session tokens, wait for the edges' models until
every serving edge uploaded or died or the round deadline passed, aggregate them
(example-weighted, in sorted edge order — the same function the simulation uses), store the new
global version (PEFT + checksum) and commit the round (:mod:`.commit`).

Quorum: a round starts once ``ceil(num_devices × min_device_fraction)`` devices are alive and
commits only if at least that many devices were assigned to edges whose models arrived; otherwise
it is abandoned (round state ``abandoned``, a ``round_abandoned`` event with the reason, the
missing edges and the discarded devices in its participation) and redone, up to
``max_round_attempts`` times before the run fails (``run_failed``).

Faults: the stored global version is a round's commit point, so a restarted cloud completes a
round killed after its version was stored, abandons and redoes any other interrupted round, and
resumes every running run at its last committed round. A store outage (SQL or Redis
unavailable) never fails a run: the coordinator waits for the store and resumes the same way.
Redis flushed mid-run is restored from the SQL snapshots.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from elsa.errors import ConfigError, ConflictError, ElsaError, UnavailableError
from elsa.infra.records import NodeRecord
from elsa.infra.web import new_token, token_hash
from elsa.runtime.config import RunConfig, parse_config
from elsa.runtime.control import ControlPlane, DeviceProfile
from elsa.wire.control import Task
from elsa_cloud.settings import CloudSettings
from elsa_cloud.state import CloudState
from elsa_cloud.workflows.commit import close_interrupted_rounds, collect, commit, now, start_version
from elsa_cloud.workflows.control import device_profile, load_plane, log_observation, model_footprint, persist
from elsa_cloud.workflows.vault import run_model

__all__ = ["Coordinator", "now"]  # now: the routers' clock, shared with the commit

logger = logging.getLogger(__name__)

OUTAGE_BACKOFF_S = 0.5
"""First wait before resuming a run after a store outage (doubled per failure)."""
OUTAGE_BACKOFF_MAX_S = 10.0
"""Longest wait between tries while a store stays unavailable."""


class Coordinator:
    """Drives one run's rounds."""

    def __init__(self, state: CloudState, settings: CloudSettings, run_id: str) -> None:
        self.state = state
        self.settings = settings
        self.run_id = run_id

    async def run(self) -> None:
        """Run rounds until the run completes, is stopped, or fails.

        A store outage is not a failure: the coordinator waits (backing off up to
        :data:`OUTAGE_BACKOFF_MAX_S`) and resumes at the last committed round, as a restarted
        cloud would.
        """
        backoff_s = OUTAGE_BACKOFF_S
        while True:
            try:
                await self._run()
                return
            except asyncio.CancelledError:
                raise
            except UnavailableError as exc:
                logger.warning(
                    "store unavailable: the run resumes at its last committed round once it answers",
                    extra={"run_id": self.run_id, "detail": exc.detail},
                )
            except ElsaError as exc:
                logger.error(
                    "run failed", extra={"run_id": self.run_id, "error": exc.code, "detail": exc.detail}
                )
                await self._fail(f"{exc.code}: {exc.detail}")
                return
            except Exception:
                logger.exception("run failed unexpectedly", extra={"run_id": self.run_id})
                await self._fail("internal error")
                return
            await asyncio.sleep(backoff_s)
            backoff_s = min(2 * backoff_s, OUTAGE_BACKOFF_MAX_S)

    async def _fail(self, reason: str) -> None:
        """Mark the run failed (retrying while the store is unavailable) and record why."""
        backoff_s = OUTAGE_BACKOFF_S
        while True:
            try:
                await self.state.store.set_run_state(self.run_id, "failed", updated_at=now())
                break
            except UnavailableError:
                await asyncio.sleep(backoff_s)
                backoff_s = min(2 * backoff_s, OUTAGE_BACKOFF_MAX_S)
        self._stop_tasks()
        await self._event({"kind": "run_failed", "reason": reason})

    async def _run(self) -> None:
        store = self.state.store
        record = await store.get_run(self.run_id)
        if record is None:
            return
        config = parse_config(record.config, source=f"run {self.run_id}")
        await self._recover_interrupted_rounds()
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
            if await self._round(config, round_index, attempts + 1):
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

    async def _recover_interrupted_rounds(self) -> None:
        """Close the rounds a previous coordinator left open (see :mod:`.commit`): one whose
        version was stored is committed, any other abandoned and redone."""
        for round_index, closed in await close_interrupted_rounds(self.state.store, self.run_id):
            if closed == "completed":
                await self._event({"kind": "round_recovered", "round": round_index, "version": round_index})
                logger.warning(
                    "interrupted round committed: its version was stored",
                    extra={"run_id": self.run_id, "round": round_index},
                )
            else:
                await self._event(
                    {
                        "kind": "round_abandoned",
                        "round": round_index,
                        "reason": "interrupted before its commit",
                    }
                )
                logger.warning(
                    "interrupted round abandoned: it will be redone",
                    extra={"run_id": self.run_id, "round": round_index},
                )

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

    def _quorum(self, config: RunConfig) -> int:
        """Devices a round needs, alive to start and behind arrived edge models to commit."""
        return max(1, math.ceil(config.num_devices * self.settings.min_device_fraction))

    async def _wait_for_quorum(self, config: RunConfig) -> tuple[list[NodeRecord], list[NodeRecord]]:
        needed = self._quorum(config)
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

    async def _round(self, config: RunConfig, round_index: int, attempt: int) -> bool:
        """One attempt at a cloud round; True when committed, False when abandoned."""
        key = (self.run_id, round_index)
        posted: dict[str, Task] = {}
        try:
            return await self._play_round(config, round_index, attempt, posted)
        finally:  # the attempt is over: it collects nothing more and its train tasks are withdrawn
            self.state.uploads.pop(key, None)
            self.state.probes.pop(key, None)
            self._withdraw(posted)

    def _withdraw(self, posted: dict[str, Task]) -> None:
        """Replace the tasks of an ended attempt that are still current by ``idle``, so that a
        device restarting later does not pick up a round that is over (it waits for its next)."""
        for node_id, task in posted.items():
            entry = self.state.board.tasks.get(node_id)
            if entry is not None and entry[1] is task:
                self.state.board.post(node_id, Task(kind="idle", run_id=self.run_id))

    async def _play_round(
        self, config: RunConfig, round_index: int, attempt: int, posted: dict[str, Task]
    ) -> bool:
        store, live = self.state.store, self.state.live
        started = time.monotonic()
        if await live.is_empty(self.run_id):
            await self._restore_live_state()
        edges, devices = await self._wait_for_quorum(config)
        devices = sorted(devices, key=lambda d: d.name)[: config.num_devices]
        plane = await load_plane(self.state, self.run_id, config)
        assignment, plans = self._plan(config, plane, edges, devices)
        device_by_id = {d.node_id: d for d in devices}
        version = await start_version(store, self.run_id, round_index)
        key = (self.run_id, round_index)
        self.state.uploads[key] = {}  # collect before anyone hears of the round
        self.state.probes[key] = {}  # (the assignment is public)
        await live.set_assignment(self.run_id, assignment)
        await persist(self.state, self.run_id, round_index, plane, assignment)
        await store.start_round(self.run_id, round_index, now())
        fingerprint = plane.fingerprint_round(round_index)
        await store.set_run_state(self.run_id, "running", current_round=round_index, updated_at=now())
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
            posted[device_id] = Task(
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
            )
            self.state.board.post(device_id, posted[device_id])
        await self._event(
            {
                "kind": "round_started",
                "round": round_index,
                "attempt": attempt,
                "devices": len(assignment),
                "edges": len(served),
            }
        )
        logger.info(
            "round started",
            extra={
                "run_id": self.run_id,
                "round": round_index,
                "attempt": attempt,
                "devices": len(assignment),
            },
        )

        stopped, dead = await collect(self.state, self.settings, self.run_id, round_index, sorted(served))
        uploads = self.state.uploads.pop(key, {})
        for edge_id in sorted(set(uploads) - set(served)):  # e.g. late for an earlier attempt
            logger.warning(
                "edge model dropped: the edge serves no device this round",
                extra={"run_id": self.run_id, "round": round_index, "edge": edge_id},
            )
            del uploads[edge_id]
        for edge_id in sorted(set(served) - set(uploads)):
            await store.record_participation(
                self.run_id,
                round_index,
                edge_id,
                "edge",
                "timed_out",
                "dead: no heartbeat" if edge_id in dead else "no edge model by the round deadline",
                now(),
            )
        counted = sorted(device_by_id[d].name for d, e in assignment.items() if e in uploads)
        needed = self._quorum(config)
        if len(counted) < needed:
            if not uploads:
                reason = "no edge model arrived"
            else:
                reason = f"quorum not met: {len(counted)} of {needed} needed devices behind the edge models"
            if stopped:
                reason += " (the run was stopped)"
            await self._abandon(round_index, attempt, reason, sorted(assignment), len(counted), needed)
            self.state.metrics.round_ended("abandoned", time.monotonic() - started)
            return False
        await commit(self.state, self.settings, self.run_id, config, round_index, version, uploads)
        await self._observe(plane, round_index, set(counted), assignment)
        await self._event(
            {
                "kind": "round_completed",
                "round": round_index,
                "edges": sorted(uploads),
                "devices": len(counted),
            }
        )
        self.state.metrics.round_ended("completed", time.monotonic() - started)
        logger.info(
            "round committed", extra={"run_id": self.run_id, "round": round_index, "version": round_index}
        )
        return True

    async def _abandon(
        self, round_index: int, attempt: int, reason: str, device_ids: list[str], counted: int, needed: int
    ) -> None:
        """Record an abandoned attempt: the round's state, its discarded devices, an event."""
        store = self.state.store
        for device_id in device_ids:
            await store.record_participation(
                self.run_id, round_index, device_id, "device", "abandoned", reason, now()
            )
        await store.set_round_state(self.run_id, round_index, "abandoned", now())
        await self._event(
            {
                "kind": "round_abandoned",
                "round": round_index,
                "attempt": attempt,
                "reason": reason,
                "devices": counted,
                "needed": needed,
            }
        )
        logger.warning(
            "round abandoned",
            extra={"run_id": self.run_id, "round": round_index, "attempt": attempt, "reason": reason},
        )

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

    async def _observe(
        self, plane: ControlPlane, round_index: int, expected: set[str], assignment: dict[str, str]
    ) -> None:
        """Update clusters and trust from the round's probe reports (DESIGN §2.4-§2.5) and
        snapshot the plane with the round's ``assignment`` (not read back from Redis: a flush
        mid-round must not blank the snapshot a restore reads).

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
        await persist(self.state, self.run_id, round_index, plane, assignment)
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
