"""Liveness and readiness of the cloud."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from elsa.errors import ElsaError
from elsa.wire.control import Health
from elsa_cloud.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Liveness")
def health() -> Health:
    """The process is up."""
    return Health(status="ok", service="cloud")


@router.get("/ready", response_model=Health, summary="Readiness: SQL and Redis answer")
async def ready(state: StateDep) -> JSONResponse:
    """503 until both stores answer."""
    checks: dict[str, str] = {}
    try:
        checks["sql"] = "ok" if await state.store.ping() else "down"
    except ElsaError:
        checks["sql"] = "down"
    try:
        checks["redis"] = "ok" if await state.live.ping() else "down"
    except ElsaError:
        checks["redis"] = "down"
    ok = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ok else "degraded", service="cloud", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
