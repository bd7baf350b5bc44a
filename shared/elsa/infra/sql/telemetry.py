"""Per-round telemetry: participation (and rejections), metrics and byte counts (DESIGN §5, §7)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from elsa.infra.records import ROLES, MetricRecord, ParticipationRecord, Role
from elsa.infra.sql.base import SqlRepository, records, require_run
from elsa.infra.sql.checks import aware, check_in, finite, non_negative, short_text
from elsa.infra.sql.models import ByteCountRow, MetricRow, ParticipationRow


class TelemetryRepository(SqlRepository):
    """Participation, metrics and bytes (part of :class:`elsa.infra.sql.SqlStore`)."""

    async def record_participation(
        self, run_id: str, round: int, node_id: str, role: Role, status: str, detail: str, at: datetime
    ) -> ParticipationRecord:
        """Record that a node joined / submitted / was rejected / timed out in a round.

        Idempotent per (run, round, node, status): a repeat returns the first record unchanged.
        """
        values: dict[str, Any] = {
            "run_id": run_id,
            "round": non_negative(round, "round"),
            "node_id": short_text(node_id, "node_id"),
            "status": short_text(status, "status", max_len=32),
            "role": check_in(role, ROLES, "role"),
            "detail": detail,
            "at": aware(at, "at"),
        }
        key = (run_id, values["round"], values["node_id"], values["status"])

        async def op(s: AsyncSession) -> ParticipationRecord:
            await require_run(s, run_id)
            await s.execute(self._insert(ParticipationRow).values(**values).on_conflict_do_nothing())
            return (await s.get_one(ParticipationRow, key)).record()

        return await self._transact("record_participation", op)

    async def list_participation(self, run_id: str, round: int) -> list[ParticipationRecord]:
        """Participation of a round, ordered by node and time."""
        query = (
            select(ParticipationRow)
            .where(ParticipationRow.run_id == run_id, ParticipationRow.round == round)
            .order_by(ParticipationRow.node_id, ParticipationRow.at, ParticipationRow.status)
        )
        return await self._transact("list_participation", lambda s: records(s, query))

    # --------------------------------------------------------------------------------- metrics

    async def record_metrics(
        self, run_id: str, round: int, node_id: str, metrics: Mapping[str, float], at: datetime
    ) -> None:
        """Store one row per metric name (finite values); a repeated name overwrites its value."""
        base = {
            "run_id": run_id,
            "round": non_negative(round, "round"),
            "node_id": short_text(node_id, "node_id"),
        }
        rows = [
            {
                **base,
                "name": short_text(name, "metric name"),
                "value": finite(value, name),
                "at": aware(at, "at"),
            }
            for name, value in metrics.items()
        ]

        async def op(s: AsyncSession) -> None:
            await require_run(s, run_id)
            if rows:
                stmt = self._insert(MetricRow).values(rows)
                await s.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["run_id", "round", "node_id", "name"],
                        set_={"value": stmt.excluded.value, "at": stmt.excluded.at},
                    )
                )

        await self._transact("record_metrics", op)

    async def list_metrics(self, run_id: str, round: int | None = None) -> list[MetricRecord]:
        """Metrics of the run (of one round if given), ordered by round, node and name."""
        query = select(MetricRow).where(MetricRow.run_id == run_id)
        if round is not None:
            query = query.where(MetricRow.round == round)
        query = query.order_by(MetricRow.round, MetricRow.node_id, MetricRow.name)
        return await self._transact("list_metrics", lambda s: records(s, query))

    # ----------------------------------------------------------------------------------- bytes

    async def record_bytes(
        self, run_id: str, round: int, node_id: str, kind: str, nbytes: int, at: datetime
    ) -> None:
        """Add ``nbytes`` (≥ 0) to the node's count of ``kind`` bytes in the round."""
        values = {
            "run_id": run_id,
            "round": non_negative(round, "round"),
            "node_id": short_text(node_id, "node_id"),
            "kind": short_text(kind, "kind", max_len=64),
            "nbytes": non_negative(nbytes, "nbytes"),
            "at": aware(at, "at"),
        }

        async def op(s: AsyncSession) -> None:
            await require_run(s, run_id)
            stmt = self._insert(ByteCountRow).values(**values)
            await s.execute(
                stmt.on_conflict_do_update(
                    index_elements=["run_id", "round", "node_id", "kind"],
                    set_={"nbytes": ByteCountRow.nbytes + stmt.excluded.nbytes, "at": stmt.excluded.at},
                )
            )

        await self._transact("record_bytes", op)

    async def bytes_by_kind(self, run_id: str, round: int | None = None) -> dict[str, int]:
        """Total bytes of the round (of the whole run when ``round`` is None) per kind, summed
        over nodes."""
        query = select(ByteCountRow.kind, func.sum(ByteCountRow.nbytes)).where(ByteCountRow.run_id == run_id)
        if round is not None:
            query = query.where(ByteCountRow.round == round)
        query = query.group_by(ByteCountRow.kind)

        async def op(s: AsyncSession) -> dict[str, int]:
            return {kind: int(total) for kind, total in (await s.execute(query)).all()}

        return await self._transact("bytes_by_kind", op)
