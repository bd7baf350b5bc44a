"""Registered edges and devices: registration, token lookup, resource reports (DESIGN §2.1)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from elsa.errors import NotFoundError
from elsa.infra.records import ROLES, NodeRecord, Role
from elsa.infra.sql.base import SqlRepository, records
from elsa.infra.sql.checks import aware, check_in, json_object, non_negative, short_text
from elsa.infra.sql.models import NodeRow


class NodeRepository(SqlRepository):
    """Nodes of the network (part of :class:`elsa.infra.sql.SqlStore`)."""

    async def upsert_node(
        self,
        node_id: str,
        role: Role,
        name: str,
        url: str | None,
        capacity: int | None,
        token_hash: str,
        joined_at: datetime,
    ) -> NodeRecord:
        """Insert a node or overwrite its registration fields; its last resource report is kept.

        Raises :class:`ConflictError` if another node already holds ``token_hash``.
        """
        values: dict[str, Any] = {
            "node_id": short_text(node_id, "node_id"),
            "role": check_in(role, ROLES, "role"),
            "name": short_text(name, "name"),
            "url": None if url is None else short_text(url, "url", max_len=512),
            "capacity": None if capacity is None else non_negative(capacity, "capacity", minimum=1),
            "token_hash": short_text(token_hash, "token_hash"),
            "joined_at": aware(joined_at, "joined_at"),
        }

        async def op(s: AsyncSession) -> NodeRecord:
            stmt = self._insert(NodeRow).values(resources={}, **values)
            updates = {k: v for k, v in values.items() if k != "node_id"}
            await s.execute(stmt.on_conflict_do_update(index_elements=["node_id"], set_=updates))
            row = await s.get_one(NodeRow, values["node_id"], populate_existing=True)
            return row.record()

        return await self._transact("upsert_node", op)

    async def get_node(self, node_id: str) -> NodeRecord | None:
        """The node, or ``None``."""

        async def op(s: AsyncSession) -> NodeRecord | None:
            row = await s.get(NodeRow, node_id)
            return None if row is None else row.record()

        return await self._transact("get_node", op)

    async def node_by_token_hash(self, token_hash: str) -> NodeRecord | None:
        """The node holding this bearer-token hash, or ``None``."""

        async def op(s: AsyncSession) -> NodeRecord | None:
            row = await s.scalar(select(NodeRow).where(NodeRow.token_hash == token_hash))
            return None if row is None else row.record()

        return await self._transact("node_by_token_hash", op)

    async def list_nodes(self, role: Role | None = None) -> list[NodeRecord]:
        """Every node (of ``role`` if given), ordered by id."""
        query = select(NodeRow).order_by(NodeRow.node_id)
        if role is not None:
            query = query.where(NodeRow.role == check_in(role, ROLES, "role"))
        return await self._transact("list_nodes", lambda s: records(s, query))

    async def set_node_resources(self, node_id: str, resources_json: dict[str, Any]) -> None:
        """Replace the node's resource report (a JSON object). :class:`NotFoundError` if unknown."""
        resources = json_object(resources_json, "resources")

        async def op(s: AsyncSession) -> None:
            row = await s.get(NodeRow, node_id)
            if row is None:
                raise NotFoundError(f"node {node_id!r} does not exist")
            row.resources = resources

        await self._transact("set_node_resources", op)
