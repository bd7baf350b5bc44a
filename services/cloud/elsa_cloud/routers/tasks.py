"""Task long-polling: devices and edges pull their work (DESIGN §2.1: devices behind NAT)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from elsa.infra.web import ERROR_RESPONSES, wait_until
from elsa.wire.control import Task
from elsa_cloud.deps import NodeDep, SettingsDep, StateDep

router = APIRouter(prefix="/v1", tags=["tasks"], responses=ERROR_RESPONSES)


@router.get("/tasks/next", response_model=Task, summary="Long-poll the next task")
async def next_task(
    node: NodeDep,
    state: StateDep,
    settings: SettingsDep,
    response: Response,
    after: Annotated[int, Query(ge=0, description="sequence number of the last task seen")] = 0,
    wait_s: Annotated[float, Query(ge=0, le=600)] = 20.0,
) -> Task:
    """Returns the node's current task once its sequence number exceeds ``after`` (header
    ``x-elsa-task-seq``), or ``idle`` after ``wait_s``. Polling also refreshes liveness."""
    await state.live.heartbeat(node.node_id, settings.heartbeat_ttl_s)
    await wait_until(
        lambda: state.board.newer_than(node.node_id, after) is not None, min(wait_s, settings.max_task_wait_s)
    )
    entry = state.board.newer_than(node.node_id, after)
    if entry is None:
        response.headers["x-elsa-task-seq"] = str(after)
        return Task(kind="idle")
    response.headers["x-elsa-task-seq"] = str(entry[0])
    return entry[1]
