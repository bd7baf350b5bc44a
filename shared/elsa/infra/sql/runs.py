"""Runs and their cloud rounds, with the round state machine (DESIGN §2, §5)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from elsa.errors import ConflictError, NotFoundError
from elsa.infra.records import ROUND_STATES, RUN_STATES, RoundRecord, RoundState, RunRecord, RunState
from elsa.infra.sql.base import SqlRepository, records, require_run
from elsa.infra.sql.checks import aware, check_in, json_object, non_negative, short_text
from elsa.infra.sql.models import RoundRow, RunRow

ROUND_TRANSITIONS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "training": frozenset({"aggregating", "abandoned"}),
        "aggregating": frozenset({"completed", "abandoned"}),
        "completed": frozenset(),
        "abandoned": frozenset(),
    }
)
"""Legal round transitions. An abandoned round goes back to ``training`` only via ``start_round``."""


class RunRepository(SqlRepository):
    """Runs and rounds (part of :class:`elsa.infra.sql.SqlStore`)."""

    async def create_run(
        self, run_id: str, name: str, config: dict[str, Any], cloud_rounds: int, created_at: datetime
    ) -> RunRecord:
        """Create a run in state ``created`` at round 0. :class:`ConflictError` if the id exists."""
        at = aware(created_at, "created_at")
        row = RunRow(
            run_id=short_text(run_id, "run_id"),
            name=short_text(name, "name"),
            state="created",
            config=json_object(config, "config"),
            cloud_rounds=non_negative(cloud_rounds, "cloud_rounds", minimum=1),
            current_round=0,
            created_at=at,
            updated_at=at,
        )

        async def op(s: AsyncSession) -> RunRecord:
            if await s.get(RunRow, row.run_id) is not None:
                raise ConflictError(f"run {run_id!r} already exists")
            s.add(row)
            await s.flush()
            return row.record()

        return await self._transact("create_run", op)

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or ``None``."""

        async def op(s: AsyncSession) -> RunRecord | None:
            row = await s.get(RunRow, run_id)
            return None if row is None else row.record()

        return await self._transact("get_run", op)

    async def list_runs(self) -> list[RunRecord]:
        """Every run, oldest first."""
        query = select(RunRow).order_by(RunRow.created_at, RunRow.run_id)
        return await self._transact("list_runs", lambda s: records(s, query))

    async def set_run_state(
        self, run_id: str, state: RunState, *, current_round: int | None = None, updated_at: datetime
    ) -> RunRecord:
        """Set the run's state (and its current round if given). :class:`NotFoundError` if unknown."""
        new_state = check_in(state, RUN_STATES, "state")
        at = aware(updated_at, "updated_at")
        rnd = None if current_round is None else non_negative(current_round, "current_round")

        async def op(s: AsyncSession) -> RunRecord:
            row = await require_run(s, run_id, for_update=True)
            row.state = new_state
            if rnd is not None:
                row.current_round = rnd
            row.updated_at = at
            await s.flush()
            return row.record()

        return await self._transact("set_run_state", op)

    # ---------------------------------------------------------------------------------- rounds

    async def start_round(self, run_id: str, round: int, started_at: datetime) -> RoundRecord:
        """Open round ``round`` (≥ 1) of a run in state ``training``.

        An ``abandoned`` round is restarted (back to ``training``, new ``started_at``); any other
        existing round raises :class:`ConflictError`. :class:`NotFoundError` if the run is unknown.
        """
        rnd = non_negative(round, "round", minimum=1)
        at = aware(started_at, "started_at")

        async def op(s: AsyncSession) -> RoundRecord:
            await require_run(s, run_id)
            row = await s.get(RoundRow, (run_id, rnd), with_for_update=True)
            if row is None:
                row = RoundRow(run_id=run_id, round=rnd, state="training", started_at=at, updated_at=at)
                s.add(row)
            elif row.state == "abandoned":
                row.state, row.started_at, row.updated_at, row.finished_at = "training", at, at, None
            else:
                raise ConflictError(f"round {rnd} of run {run_id!r} already exists ({row.state})")
            await s.flush()
            return row.record()

        return await self._transact("start_round", op)

    async def set_round_state(self, run_id: str, round: int, state: RoundState, at: datetime) -> RoundRecord:
        """Move a round along its state machine (:data:`ROUND_TRANSITIONS`).

        ``completed`` and ``abandoned`` also set ``finished_at``. An illegal transition (including
        to the current state) raises :class:`ConflictError`; an unknown round :class:`NotFoundError`.
        """
        new_state = check_in(state, ROUND_STATES, "state")
        when = aware(at, "at")

        async def op(s: AsyncSession) -> RoundRecord:
            row = await s.get(RoundRow, (run_id, round), with_for_update=True)
            if row is None:
                raise NotFoundError(f"round {round} of run {run_id!r} does not exist")
            if new_state not in ROUND_TRANSITIONS[row.state]:
                raise ConflictError(f"round {round} of run {run_id!r} cannot go {row.state} -> {new_state}")
            row.state, row.updated_at = new_state, when
            if new_state in ("completed", "abandoned"):
                row.finished_at = when
            await s.flush()
            return row.record()

        return await self._transact("set_round_state", op)

    async def get_round(self, run_id: str, round: int) -> RoundRecord | None:
        """The round, or ``None``."""

        async def op(s: AsyncSession) -> RoundRecord | None:
            row = await s.get(RoundRow, (run_id, round))
            return None if row is None else row.record()

        return await self._transact("get_round", op)

    async def list_rounds(self, run_id: str) -> list[RoundRecord]:
        """Every round of the run, in round order."""
        query = select(RoundRow).where(RoundRow.run_id == run_id).order_by(RoundRow.round)
        return await self._transact("list_rounds", lambda s: records(s, query))

    async def last_completed_round(self, run_id: str) -> int:
        """The highest ``completed`` round of the run; 0 if none (where a restart resumes)."""
        query = select(func.max(RoundRow.round)).where(
            RoundRow.run_id == run_id, RoundRow.state == "completed"
        )

        async def op(s: AsyncSession) -> int:
            return (await s.scalar(query)) or 0

        return await self._transact("last_completed_round", op)
