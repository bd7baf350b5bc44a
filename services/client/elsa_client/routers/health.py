"""Liveness, readiness and status of the device agent."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from elsa.infra.web import ERROR_RESPONSES, require_local_or_token
from elsa.wire.control import Health
from elsa_client.workflows.agent import DeviceAgent

router = APIRouter(tags=["health"])


def _agent(request: Request) -> DeviceAgent:
    agent: DeviceAgent = request.app.state.agent
    return agent


@router.get("/health", response_model=Health, summary="Liveness")
def health(request: Request) -> Health:
    """The process is up."""
    return Health(status="ok", service="client", node_id=_agent(request).status.node_id)


@router.get("/ready", response_model=Health, summary="Readiness: joined the cloud (503 before)")
def ready(request: Request) -> JSONResponse:
    """Ready once joined; 503 until then."""
    node_id = _agent(request).status.node_id
    body = Health(
        status="ok" if node_id else "degraded",
        service="client",
        node_id=node_id,
        checks={"cloud": "joined" if node_id else "not joined"},
    )
    return JSONResponse(body.model_dump(), status_code=200 if node_id else 503)


@router.get("/status", summary="What this device is doing", responses=ERROR_RESPONSES)
def status(request: Request) -> dict[str, Any]:
    """Phase, run/round, assigned edge, link probes and last metrics (never data or tensors).
    Needs the status token (``ELSA_CLIENT_STATUS_TOKEN``); without one, loopback callers only."""
    require_local_or_token(request, request.app.state.settings.status_token)
    return asdict(_agent(request).status)
