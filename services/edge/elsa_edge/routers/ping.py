"""Latency and throughput probes (DESIGN §2.1): devices time these to rank edges."""

from __future__ import annotations

from fastapi import APIRouter, Request

from elsa.infra.web import ERROR_RESPONSES, read_body
from elsa_edge.deps import NodeDep, SettingsDep

router = APIRouter(tags=["probe"], responses=ERROR_RESPONSES)


@router.get("/v1/ping", summary="Round-trip probe")
def ping(_: NodeDep) -> dict[str, bool]:
    """An empty answer, for RTT. Callers present their cloud-issued node token."""
    return {"ok": True}


@router.post("/v1/ping", summary="Throughput probe")
async def ping_payload(request: Request, _: NodeDep, settings: SettingsDep) -> dict[str, int]:
    """Reads and discards a payload (bounded by max_body_bytes); answers its size. Callers
    present their cloud-issued node token."""
    body = await read_body(request, settings.max_body_bytes)
    return {"received": len(body)}
