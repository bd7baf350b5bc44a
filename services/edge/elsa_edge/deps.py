"""Typed dependencies of the edge routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from elsa.errors import AuthError, NotFoundError
from elsa.infra.http import CloudClient
from elsa.infra.web import bearer_token, same_secret, token_hash
from elsa.wire.control import NodeIdentity
from elsa_edge.settings import EdgeSettings
from elsa_edge.state import EdgeState, ServedRound, Session


def get_state(request: Request) -> EdgeState:
    """The edge state of this app."""
    state: EdgeState = request.app.state.edge
    return state


def get_settings(request: Request) -> EdgeSettings:
    """The settings this app was built with."""
    settings: EdgeSettings = request.app.state.settings
    return settings


def get_cloud(request: Request) -> CloudClient:
    """The cloud client of this edge."""
    cloud: CloudClient = request.app.state.cloud
    return cloud


StateDep = Annotated[EdgeState, Depends(get_state)]
SettingsDep = Annotated[EdgeSettings, Depends(get_settings)]
CloudDep = Annotated[CloudClient, Depends(get_cloud)]


def authorised_session(request: Request, session_id: str, state: StateDep) -> tuple[Session, ServedRound]:
    """The session named in the path, checked against the caller's session token."""
    token = bearer_token(request)
    session = state.sessions.get(session_id)
    if session is None:
        raise NotFoundError(f"unknown session {session_id}")
    if not same_secret(token_hash(token), session.token_hash):
        raise AuthError("session token does not match")
    served = state.served(session.run_id, session.round_index)
    if served is None:
        raise NotFoundError(f"session {session_id} belongs to a round this edge no longer serves")
    return session, served


SessionDep = Annotated[tuple[Session, ServedRound], Depends(authorised_session)]


async def deployment_node(request: Request, state: StateDep, cloud: CloudDep) -> NodeIdentity:
    """The node of this deployment whose cloud-issued bearer token the caller presents; the
    cloud identifies unknown tokens (answers are cached for ``IDENTITY_TTL_S``). 401 for a token
    no node holds; 503 when the cloud cannot be asked."""
    token = bearer_token(request)
    digest = token_hash(token)
    known = state.identities.get(digest)
    if known is not None:
        return known
    if state.node_id is None:
        raise AuthError("this edge has not joined its cloud yet and cannot check tokens")
    identity = await run_in_threadpool(cloud.introspect, token)
    if identity is None:
        raise AuthError("unknown token: join the deployment's cloud first")
    state.identities.put(digest, identity)
    return identity


NodeDep = Annotated[NodeIdentity, Depends(deployment_node)]
