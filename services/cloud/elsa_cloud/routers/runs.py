"""Runs: creation, control and the operator's view of rounds, metrics and assignments."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections import defaultdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path

from elsa.errors import ConfigError, ConflictError, NotFoundError
from elsa.infra.records import RunRecord
from elsa.infra.web import ERROR_RESPONSES
from elsa.runtime.config import parse_config
from elsa.wire.control import ControlView, RoundView, RunCreate, RunView
from elsa_cloud.deps import AdminDep, SettingsDep, StateDep
from elsa_cloud.settings import CloudSettings
from elsa_cloud.state import CloudState
from elsa_cloud.workflows.control import SNAPSHOT_KINDS
from elsa_cloud.workflows.coordinator import Coordinator, now

router = APIRouter(prefix="/v1/runs", tags=["runs"], responses=ERROR_RESPONSES)

#: a run name becomes the prefix of the run id, which appears in URLs and wire messages
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
#: rounds and versions are 32-bit SQL integers (PostgreSQL refuses larger ones)
MAX_INDEX = 2**31 - 1
#: a run id in a URL: what ids are made of (the SQL column holds 128 characters and PostgreSQL
#: refuses NUL): any other string is a 422, never a database error
#: (it starts with a letter or digit, so no id is "." or ".." — ids name adapter folders)
RunIdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")]
#: a round or version in a URL
IndexPath = Annotated[int, Path(ge=0, le=MAX_INDEX)]


async def run_view(state: CloudState, record: RunRecord) -> RunView:
    """The operator's view of a run."""
    latest = await state.store.latest_adapter_version(record.run_id)
    return RunView(
        run_id=record.run_id,
        name=record.name,
        state=record.state,
        current_round=record.current_round,
        cloud_rounds=record.cloud_rounds,
        latest_version=latest.version if latest else None,
        created_at=record.created_at,
        config=record.config,
    )


def start_coordinator(state: CloudState, settings: CloudSettings, run_id: str) -> None:
    """Run the run's coordinator as a background task (one per run)."""
    existing = state.coordinators.get(run_id)
    if existing is not None and not existing.done():
        return
    state.coordinators[run_id] = asyncio.create_task(
        Coordinator(state, settings, run_id).run(), name=f"run-{run_id}"
    )


async def _require_run(state: CloudState, run_id: str) -> RunRecord:
    record = await state.store.get_run(run_id)
    if record is None:
        raise NotFoundError(f"unknown run {run_id}")
    return record


@router.post("", response_model=RunView, status_code=201, summary="Start a fine-tuning run")
async def create_run(body: RunCreate, _: AdminDep, state: StateDep, settings: SettingsDep) -> RunView:
    """Validates the configuration (422 naming the bad field), stores the run and starts it."""
    config = parse_config(body.config, source="config")
    if not _RUN_NAME.fullmatch(config.name):
        raise ConfigError(
            "config: name: 1-100 characters of A-Z a-z 0-9 . _ - starting with a letter or digit "
            "(it prefixes the run id)"
        )
    config.resolved_num_labels()
    config.check_service_runtime()
    run_id = f"{config.name}-{secrets.token_hex(4)}"
    record = await state.store.create_run(
        run_id, config.name, config.model_dump(mode="json"), config.train.cloud_rounds, now()
    )
    record = await state.store.set_run_state(run_id, "running", updated_at=now())
    start_coordinator(state, settings, run_id)
    return await run_view(state, record)


@router.get("", response_model=list[RunView], summary="All runs")
async def list_runs(_: AdminDep, state: StateDep) -> list[RunView]:
    """Every run, newest last."""
    return [await run_view(state, r) for r in await state.store.list_runs()]


@router.get("/{run_id}", response_model=RunView, summary="One run")
async def get_run(run_id: RunIdPath, _: AdminDep, state: StateDep) -> RunView:
    """404 for an unknown run."""
    return await run_view(state, await _require_run(state, run_id))


_TRANSITIONS: dict[str, tuple[set[str], str]] = {
    "pause": ({"running"}, "paused"),
    "resume": ({"paused"}, "running"),
    "stop": ({"running", "paused", "created"}, "stopped"),
}


@router.post("/{run_id}/{action}", response_model=RunView, summary="Pause, resume or stop a run")
async def control_run(
    run_id: RunIdPath,
    action: Literal["pause", "resume", "stop"],
    _: AdminDep,
    state: StateDep,
    settings: SettingsDep,
) -> RunView:
    """409 when the run's state does not allow the action."""
    record = await _require_run(state, run_id)
    allowed, target = _TRANSITIONS[action]
    if record.state not in allowed:
        raise ConflictError(f"cannot {action} a run that is {record.state}")
    record = await state.store.set_run_state(run_id, target, updated_at=now())  # type: ignore[arg-type]
    if target == "running":
        start_coordinator(state, settings, run_id)
    return await run_view(state, record)


@router.get("/{run_id}/rounds", response_model=list[RoundView], summary="Rounds of a run")
async def list_rounds(run_id: RunIdPath, _: AdminDep, state: StateDep) -> list[RoundView]:
    """Each round's state machine position and timestamps."""
    await _require_run(state, run_id)
    rounds = await state.store.list_rounds(run_id)  # before versions: a completed round has one
    versions = {v.round: v.version for v in await state.store.list_adapter_versions(run_id)}
    out = []
    for r in rounds:
        participants = len({p.node_id for p in await state.store.list_participation(run_id, r.round)})
        out.append(
            RoundView(
                run_id=run_id,
                round=r.round,
                state=r.state,
                started_at=r.started_at,
                finished_at=r.finished_at,
                participants=participants,
                version=versions.get(r.round),
            )
        )
    return out


@router.get("/{run_id}/metrics", summary="Per-round metrics (device means) and bytes by kind")
async def metrics(run_id: RunIdPath, _: AdminDep, state: StateDep) -> dict[str, Any]:
    """``{"rounds": [{"round", "reports", "metrics": {name: mean}, "bytes": {kind: total}}]}``."""
    await _require_run(state, run_id)
    values: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    reporters: dict[int, set[str]] = defaultdict(set)
    for m in await state.store.list_metrics(run_id):
        values[m.round][m.name].append(m.value)
        reporters[m.round].add(m.node_id)
    rounds = []
    for r in await state.store.list_rounds(run_id):
        rounds.append(
            {
                "round": r.round,
                "state": r.state,
                "reports": len(reporters.get(r.round, ())),
                "metrics": {k: sum(v) / len(v) for k, v in sorted(values.get(r.round, {}).items())},
                "bytes": await state.store.bytes_by_kind(run_id, r.round),
            }
        )
    return {"run_id": run_id, "rounds": rounds}


@router.get("/{run_id}/assignments", summary="Current device -> edge assignment")
async def assignments(run_id: RunIdPath, _: AdminDep, state: StateDep) -> dict[str, Any]:
    """Live (Redis) assignment, falling back to the last SQL snapshot."""
    await _require_run(state, run_id)
    live = await state.live.get_assignment(run_id)
    if not live:
        snapshot = await state.store.latest_snapshot(run_id, "assignment")
        payload = snapshot.payload if snapshot else {}
        live = dict(payload.get("assignment_ids", payload.get("assignment", {})))
    return {"run_id": run_id, "assignment": live}


@router.get("/{run_id}/control", response_model=ControlView, summary="Clusters, trust, assignment, cuts")
async def control(run_id: RunIdPath, _: AdminDep, state: StateDep) -> ControlView:
    """The run's control plane (DESIGN §2.3-§2.6): device clusters, trust (and who is
    quarantined), the device → edge assignment (by name) and each device's cut. Read from
    Redis; after a flush, from the last SQL snapshot."""
    record = await _require_run(state, run_id)
    config = parse_config(record.config, source=f"run {run_id}")
    clusters = await state.live.get_clusters(run_id)
    trust = await state.live.get_trust(run_id)
    plans = await state.live.get_split_plans(run_id)
    snapshots = {kind: await state.store.latest_snapshot(run_id, kind) for kind in SNAPSHOT_KINDS}
    if not clusters and snapshots["clusters"] is not None:
        clusters = {k: int(v) for k, v in snapshots["clusters"].payload.get("clusters", {}).items()}
    if not trust and snapshots["trust"] is not None:
        trust = {k: float(v) for k, v in snapshots["trust"].payload.get("trust", {}).items()}
    if not plans and snapshots["split_plan"] is not None:
        plans = {
            k: (int(v[0]), int(v[1]))
            for k, v in snapshots["split_plan"].payload.get("split_plans", {}).items()
        }
    assignment: dict[str, str] = {}
    if snapshots["assignment"] is not None:
        names = {n.node_id: n.name for n in await state.store.list_nodes()}
        raw = snapshots["assignment"].payload.get("assignment", {})
        assignment = {d: names.get(e, e) for d, e in raw.items()}
    tau = config.control.tau_min
    quarantined = sorted(d for d, t in trust.items() if t < tau) if config.control.trust else []
    return ControlView(
        run_id=run_id,
        round=await state.store.last_completed_round(run_id),
        clusters=clusters,
        trust=trust,
        quarantined=quarantined,
        assignment=assignment,
        split_plans=plans,
    )


@router.get("/{run_id}/events", summary="Recent run events")
async def events(run_id: RunIdPath, _: AdminDep, state: StateDep, n: int = 50) -> list[dict[str, Any]]:
    """Round starts/completions and other transitions, newest last."""
    await _require_run(state, run_id)
    return await state.live.recent_events(run_id, max(1, min(n, 1000)))
