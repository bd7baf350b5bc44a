"""Node registration, resources, heartbeats and listings (DESIGN §2.1)."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter

from elsa.errors import AuthError, ConflictError, NotFoundError
from elsa.infra.web import ERROR_RESPONSES, new_token, same_secret, token_hash
from elsa.wire.control import (
    Ack,
    JoinRequest,
    JoinResponse,
    NodeIdentity,
    NodeView,
    ResourceReport,
    TokenQuery,
)
from elsa_cloud.deps import AdminDep, EdgeDep, NodeDep, SettingsDep, StateDep
from elsa_cloud.workflows.coordinator import now

router = APIRouter(prefix="/v1", tags=["nodes"], responses=ERROR_RESPONSES)


def node_id_for(role: str, name: str) -> str:
    """Stable node id per (role, name): a node that rejoins keeps its id."""
    digest = hashlib.sha256(f"{role}:{name}".encode()).hexdigest()[:12]
    return f"{role}-{name}-{digest}"[:128]


@router.post("/nodes/join", response_model=JoinResponse, summary="Join with the deployment secret")
async def join(body: JoinRequest, state: StateDep, settings: SettingsDep) -> JoinResponse:
    """Returns a node id and a fresh bearer token (stored hashed; a rejoin rotates it)."""
    if not same_secret(body.join_secret, settings.join_secret):
        raise AuthError("wrong join secret")
    if body.role == "edge" and not body.url:
        raise ConflictError("an edge must give the URL devices reach it at")
    node_id = node_id_for(body.role, body.name)
    token = new_token()
    await state.store.upsert_node(
        node_id, body.role, body.name, body.url, body.capacity, token_hash(token), now()
    )
    state.nodes.evict(lambda n: n.node_id == node_id)  # the previous token stops working now
    await state.live.heartbeat(node_id, settings.heartbeat_ttl_s)
    return JoinResponse(node_id=node_id, token=token)


@router.post("/nodes/me/resources", response_model=Ack, summary="Report resources and link probes")
async def report_resources(body: ResourceReport, node: NodeDep, state: StateDep) -> Ack:
    """Stored with the node; used for assignment and split planning."""
    await state.store.set_node_resources(node.node_id, body.model_dump(mode="json"))
    state.nodes.evict(lambda n: n.node_id == node.node_id)
    return Ack()


@router.post("/nodes/me/heartbeat", response_model=Ack, summary="Liveness signal")
async def heartbeat(node: NodeDep, state: StateDep, settings: SettingsDep) -> Ack:
    """Marks the node alive for heartbeat_ttl_s (polling for tasks does the same)."""
    await state.live.heartbeat(node.node_id, settings.heartbeat_ttl_s)
    return Ack()


@router.post("/nodes/introspect", response_model=NodeIdentity, summary="Identify a node's token (edges)")
async def introspect(body: TokenQuery, _: EdgeDep, state: StateDep) -> NodeIdentity:
    """An edge asks who holds a token a caller presented to it (devices probing the edge's
    latency); 404 when no node holds it."""
    node = await state.store.node_by_token_hash(token_hash(body.token))
    if node is None:
        raise NotFoundError("no node holds this token")
    return NodeIdentity(node_id=node.node_id, role=node.role, name=node.name)


@router.get("/edges", summary="Edges a device may probe")
async def edges(node: NodeDep, state: StateDep) -> list[dict[str, Any]]:
    """Id, name and URL of every registered edge."""
    return [
        {"node_id": e.node_id, "name": e.name, "url": e.url} for e in await state.store.list_nodes("edge")
    ]


@router.get("/nodes", response_model=list[NodeView], summary="All nodes (operator)")
async def list_nodes(_: AdminDep, state: StateDep) -> list[NodeView]:
    """Every registered node and whether it is alive."""
    nodes = await state.store.list_nodes()
    alive = await state.live.alive([n.node_id for n in nodes])
    return [
        NodeView(
            node_id=n.node_id,
            role=n.role,
            name=n.name,
            url=n.url,
            alive=n.node_id in alive,
            joined_at=n.joined_at,
        )
        for n in nodes
    ]
