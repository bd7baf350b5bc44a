"""Liveness, readiness and status of the edge."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from elsa.infra.web import ERROR_RESPONSES, require_local_or_token
from elsa.wire.control import Health
from elsa_edge.deps import SettingsDep, StateDep

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Liveness")
def health(state: StateDep) -> Health:
    """The process is up."""
    return Health(status="ok", service="edge", node_id=state.node_id)


@router.get("/ready", response_model=Health, summary="Readiness: joined the cloud (503 before)")
def ready(state: StateDep) -> JSONResponse:
    """Ready once the edge has joined the cloud; 503 until then."""
    joined = state.node_id is not None
    body = Health(
        status="ok" if joined else "degraded",
        service="edge",
        node_id=state.node_id,
        checks={"cloud": "joined" if joined else "not joined"},
    )
    return JSONResponse(body.model_dump(), status_code=200 if joined else 503)


@router.get("/v1/status", summary="What this edge serves now", responses=ERROR_RESPONSES)
def status(request: Request, state: StateDep, settings: SettingsDep) -> dict[str, Any]:
    """Runs, rounds, sessions and byte counters (no tensors, no tokens). Needs the status token
    (``ELSA_EDGE_STATUS_TOKEN``); without one configured, loopback callers only."""
    require_local_or_token(request, settings.status_token)
    return {
        "node_id": state.node_id,
        "runs": {
            run_id: {
                "round": served.edge_round.round_index,
                "devices": list(served.edge_round.devices),
                "sessions": sorted(served.edge_round.sessions),
                "aggregated_edge_rounds": sorted(served.edge_round.models),
                "uploaded": served.uploaded,
            }
            for run_id, served in state.rounds.items()
        },
        "bytes_in": state.bytes_in,
        "bytes_out": state.bytes_out,
        "last_error": state.last_error,
    }
