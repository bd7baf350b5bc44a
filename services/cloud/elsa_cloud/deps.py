"""Typed dependencies of the cloud routers: state, settings, authentication."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from elsa.errors import AuthError, ForbiddenError
from elsa.infra.records import NodeRecord
from elsa.infra.web import bearer_token, same_secret, token_hash
from elsa_cloud.settings import CloudSettings
from elsa_cloud.state import CloudState


def get_state(request: Request) -> CloudState:
    """The cloud state of this app."""
    state: CloudState = request.app.state.cloud
    return state


def get_settings(request: Request) -> CloudSettings:
    """The settings this app was built with."""
    settings: CloudSettings = request.app.state.settings
    return settings


StateDep = Annotated[CloudState, Depends(get_state)]
SettingsDep = Annotated[CloudSettings, Depends(get_settings)]


async def current_node(request: Request, state: StateDep) -> NodeRecord:
    """The node whose bearer token authenticates the request (401 otherwise)."""
    digest = token_hash(bearer_token(request))
    node = state.nodes.get(digest)
    if node is None:
        node = await state.store.node_by_token_hash(digest)
        if node is None:
            raise AuthError("unknown token")
        state.nodes.put(digest, node)
    return node


NodeDep = Annotated[NodeRecord, Depends(current_node)]


async def current_edge(node: NodeDep) -> NodeRecord:
    """The calling node, which must be an edge (403 otherwise)."""
    if node.role != "edge":
        raise ForbiddenError("only edges may do this")
    return node


async def current_device(node: NodeDep) -> NodeRecord:
    """The calling node, which must be a device (403 otherwise)."""
    if node.role != "device":
        raise ForbiddenError("only devices may do this")
    return node


def require_admin(request: Request, settings: SettingsDep) -> None:
    """Operator endpoints: the admin bearer token (401 without a token, 403 with another one)."""
    token = bearer_token(request)
    if not same_secret(token, settings.admin_token):
        raise ForbiddenError("operator endpoints need the admin token")


EdgeDep = Annotated[NodeRecord, Depends(current_edge)]
DeviceDep = Annotated[NodeRecord, Depends(current_device)]
AdminDep = Annotated[None, Depends(require_admin)]
