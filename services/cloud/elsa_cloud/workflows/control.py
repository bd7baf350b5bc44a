"""The cloud's side of the control plane (DESIGN §2.2-§2.6, §5).

The decisions themselves are :class:`elsa.runtime.control.ControlPlane` (the same code the
simulation runs). This module feeds it what devices reported — resources and link probes (SQL,
per node), probe reports (in memory, per round) — and keeps its state where DESIGN §5 puts it:
live in Redis (clusters, trust, split plans), one SQL snapshot per round (the source of truth a
restarted cloud or a flushed Redis is restored from). Devices are keyed by name, edges by id.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from elsa.errors import ElsaError
from elsa.infra.records import NodeRecord, SnapshotKind
from elsa.runtime.config import RunConfig
from elsa.runtime.control import ControlPlane, DeviceProfile, LinkEstimate, ModelProfile, Observation
from elsa_cloud.state import CloudState

logger = logging.getLogger(__name__)

#: SQL snapshot kinds that together hold a control plane
SNAPSHOT_KINDS: tuple[SnapshotKind, ...] = ("clusters", "trust", "split_plan", "assignment")


def device_profile(node: NodeRecord) -> DeviceProfile | None:
    """A device's last resource report as the planner's profile (None before it reported)."""
    res = node.resources
    if not res:
        return None
    links = {
        str(p["edge_id"]): LinkEstimate(float(p["rtt_s"]), float(p["throughput_bps"]))
        for p in res.get("links", [])
    }
    memory = res.get("memory_bytes")
    step = res.get("block_step_s")
    return DeviceProfile(
        block_step_s=float(step) if step is not None else None,
        memory_bytes=int(memory) if memory is not None else None,
        links=links,
    )


def model_footprint(run_id: str, devices: Sequence[NodeRecord]) -> ModelProfile | None:
    """The run's model as the first device (by name) that loaded it measured it."""
    for node in sorted(devices, key=lambda n: n.name):
        model = node.resources.get("model") if node.resources else None
        if model and model.get("run_id") == run_id:
            return ModelProfile(
                num_blocks=int(model["num_blocks"]),
                cut_bytes=float(model["cut_bytes"]),
                block_memory_bytes=int(model["block_memory_bytes"]),
                base_memory_bytes=int(model["base_memory_bytes"]),
            )
    return None


async def load_plane(state: CloudState, run_id: str, config: RunConfig) -> ControlPlane:
    """The run's control plane: in memory, else rebuilt from its last SQL snapshots."""
    plane = state.controls.get(run_id)
    if plane is not None:
        return plane
    plane = ControlPlane(config)
    merged: dict[str, Any] = {}
    for kind in SNAPSHOT_KINDS:
        snapshot = await state.store.latest_snapshot(run_id, kind)
        if snapshot is not None:
            merged.update({k: v for k, v in snapshot.payload.items() if k != "assignment_ids"})
    if merged:
        plane.restore(merged)
        logger.info("control plane restored from SQL", extra={"run_id": run_id})
    state.controls[run_id] = plane
    return plane


async def persist(
    state: CloudState, run_id: str, round_index: int, plane: ControlPlane, assignment_ids: dict[str, str]
) -> None:
    """Mirror the plane to Redis (live) and snapshot it to SQL for ``round_index``."""
    snap = plane.snapshot()
    at = datetime.now(UTC)
    await state.store.save_snapshot(
        run_id,
        round_index,
        "clusters",
        {"clusters": snap["clusters"], "next_cluster_id": snap["next_cluster_id"]},
        at,
    )
    await state.store.save_snapshot(
        run_id, round_index, "trust", {"trust": snap["trust"], "quarantined": snap["quarantined"]}, at
    )
    await state.store.save_snapshot(
        run_id, round_index, "split_plan", {"split_plans": snap["split_plans"]}, at
    )
    await state.store.save_snapshot(
        run_id,
        round_index,
        "assignment",
        {"assignment": snap["assignment"], "assignment_ids": assignment_ids},
        at,
    )
    await mirror_live(state, run_id, plane)


async def mirror_live(state: CloudState, run_id: str, plane: ControlPlane) -> None:
    """Write the plane's clusters, trust and split plans to Redis."""
    try:
        await state.live.set_clusters(run_id, plane.clusters)
        await state.live.set_trust(run_id, plane.trust)
        for device, split in plane.plans.items():
            await state.live.set_split_plan(run_id, device, split.head_blocks, split.tail_blocks)
    except ElsaError as exc:
        logger.warning("could not mirror control state to Redis", extra={"run_id": run_id, "error": exc.code})


def log_observation(run_id: str, round_index: int, seen: Observation) -> dict[str, Any]:
    """Log quarantine changes (operators grep for them) and return the run event."""
    for device in seen.newly_quarantined:
        logger.warning(
            "device quarantined",
            extra={"run_id": run_id, "round": round_index, "device": device, "trust": seen.trust.get(device)},
        )
    for device in seen.recovered:
        logger.info(
            "device recovered from quarantine",
            extra={"run_id": run_id, "round": round_index, "device": device, "trust": seen.trust.get(device)},
        )
    return {
        "kind": "control_updated",
        "round": round_index,
        "reclustered": seen.reclustered,
        "clusters": len(set(seen.clusters.values())),
        "quarantined": seen.quarantined,
        "newly_quarantined": seen.newly_quarantined,
        "recovered": seen.recovered,
    }
