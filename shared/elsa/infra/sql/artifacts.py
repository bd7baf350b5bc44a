"""Global adapter versions and per-round snapshots of the Redis-held state (DESIGN §2.9, §5)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from elsa.errors import ConflictError
from elsa.infra.records import SNAPSHOT_KINDS, AdapterVersionRecord, SnapshotKind, SnapshotRecord
from elsa.infra.sql.base import SqlRepository, first_record, records, require_run
from elsa.infra.sql.checks import aware, check_in, json_object, non_negative, sha256_hex, short_text
from elsa.infra.sql.models import AdapterVersionRow, SnapshotRow


class ArtifactRepository(SqlRepository):
    """Adapter versions and snapshots (part of :class:`elsa.infra.sql.SqlStore`)."""

    async def add_adapter_version(
        self, run_id: str, version: int, round: int, path: str, sha256: str, nbytes: int, created_at: datetime
    ) -> AdapterVersionRecord:
        """Register a global adapter blob. :class:`ConflictError` if the version exists."""
        row = AdapterVersionRow(
            run_id=run_id,
            version=non_negative(version, "version"),
            round=non_negative(round, "round"),
            path=short_text(path, "path", max_len=1024),
            sha256=sha256_hex(sha256),
            nbytes=non_negative(nbytes, "nbytes"),
            created_at=aware(created_at, "created_at"),
        )

        async def op(s: AsyncSession) -> AdapterVersionRecord:
            await require_run(s, run_id)
            if await s.get(AdapterVersionRow, (run_id, row.version)) is not None:
                raise ConflictError(f"adapter version {row.version} of run {run_id!r} already exists")
            s.add(row)
            await s.flush()
            return row.record()

        return await self._transact("add_adapter_version", op)

    async def get_adapter_version(self, run_id: str, version: int) -> AdapterVersionRecord | None:
        """The adapter version, or ``None``."""

        async def op(s: AsyncSession) -> AdapterVersionRecord | None:
            row = await s.get(AdapterVersionRow, (run_id, version))
            return None if row is None else row.record()

        return await self._transact("get_adapter_version", op)

    async def latest_adapter_version(self, run_id: str) -> AdapterVersionRecord | None:
        """The highest adapter version of the run, or ``None``."""
        query = (
            select(AdapterVersionRow)
            .where(AdapterVersionRow.run_id == run_id)
            .order_by(AdapterVersionRow.version.desc())
            .limit(1)
        )
        return await self._transact("latest_adapter_version", lambda s: first_record(s, query))

    async def list_adapter_versions(self, run_id: str) -> list[AdapterVersionRecord]:
        """Every adapter version of the run, in version order."""
        query = (
            select(AdapterVersionRow)
            .where(AdapterVersionRow.run_id == run_id)
            .order_by(AdapterVersionRow.version)
        )
        return await self._transact("list_adapter_versions", lambda s: records(s, query))

    # ------------------------------------------------------------------------------- snapshots

    async def save_snapshot(
        self, run_id: str, round: int, kind: SnapshotKind, payload: dict[str, Any], at: datetime
    ) -> SnapshotRecord:
        """Store (or replace) the ``kind`` snapshot of a round; ``payload`` is a JSON object."""
        values = {
            "run_id": run_id,
            "round": non_negative(round, "round"),
            "kind": check_in(kind, SNAPSHOT_KINDS, "kind"),
            "payload": json_object(payload, "payload"),
            "at": aware(at, "at"),
        }

        async def op(s: AsyncSession) -> SnapshotRecord:
            await require_run(s, run_id)
            stmt = self._insert(SnapshotRow).values(**values)
            await s.execute(
                stmt.on_conflict_do_update(
                    index_elements=["run_id", "round", "kind"],
                    set_={"payload": stmt.excluded.payload, "at": stmt.excluded.at},
                )
            )
            key = (run_id, values["round"], values["kind"])
            return (await s.get_one(SnapshotRow, key, populate_existing=True)).record()

        return await self._transact("save_snapshot", op)

    async def latest_snapshot(self, run_id: str, kind: SnapshotKind) -> SnapshotRecord | None:
        """The ``kind`` snapshot of the highest round, or ``None``."""
        query = (
            select(SnapshotRow)
            .where(SnapshotRow.run_id == run_id, SnapshotRow.kind == check_in(kind, SNAPSHOT_KINDS, "kind"))
            .order_by(SnapshotRow.round.desc())
            .limit(1)
        )
        return await self._transact("latest_snapshot", lambda s: first_record(s, query))

    async def list_snapshots(self, run_id: str) -> list[SnapshotRecord]:
        """Every snapshot of a run, by round then kind."""
        query = (
            select(SnapshotRow)
            .where(SnapshotRow.run_id == run_id)
            .order_by(SnapshotRow.round, SnapshotRow.kind)
        )
        return await self._transact("list_snapshots", lambda s: records(s, query))
