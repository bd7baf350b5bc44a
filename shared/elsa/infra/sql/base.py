"""Transaction, retry and error policy shared by every repository of the SQL store.

Each public repository method is one short transaction run by :meth:`SqlRepository._transact`:
committed on success, retried on connection errors only (a few tries, exponential backoff),
and mapped onto the ELSA error tree: an integrity violation → :class:`~elsa.errors.ConflictError`,
an unreachable database → :class:`~elsa.errors.UnavailableError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from elsa.errors import ConflictError, NotFoundError, UnavailableError
from elsa.infra.sql.engine import is_transient
from elsa.infra.sql.models import Base, RunRow

T = TypeVar("T")


class SqlRepository:
    """Base of the store's repositories: holds the engine and runs transactions.

    A write whose commit was lost in flight may be retried and so applied twice; every write of
    the store but ``record_bytes`` is idempotent or conflict-checked.
    """

    def __init__(self, engine: AsyncEngine, *, attempts: int = 3, backoff_s: float = 0.05) -> None:
        """Wrap an engine; ``attempts`` tries per call, backoff ``backoff_s · 2^k`` between them."""
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._attempts = max(1, attempts)
        self._backoff_s = backoff_s

    @property
    def dialect(self) -> str:
        """The backend's name: ``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    def _insert(self, model: type[Base]) -> postgresql.Insert | sqlite.Insert:
        """The backend's INSERT that supports ``ON CONFLICT``."""
        if self.dialect == "postgresql":
            return postgresql.insert(model)
        return sqlite.insert(model)

    async def _transact(self, what: str, op: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``op`` in one transaction (committed on success) under the retry/error policy."""

        async def attempt() -> T:
            async with self._sessions.begin() as session:
                return await op(session)

        return await self._retrying(what, attempt)

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Retry ``attempt`` on connection errors; map errors onto the ELSA tree."""
        failures = 0
        while True:
            try:
                return await attempt()
            except IntegrityError as e:
                raise ConflictError(f"{what}: the write conflicts with stored data") from e
            except Exception as e:
                if not is_transient(e):
                    raise
                failures += 1
                if failures >= self._attempts:
                    raise UnavailableError(f"database unavailable ({what}): {type(e).__name__}") from e
            await asyncio.sleep(self._backoff_s * 2 ** (failures - 1))


async def require_run(s: AsyncSession, run_id: str, *, for_update: bool = False) -> RunRow:
    """The run's row; :class:`NotFoundError` if there is none."""
    row = await s.get(RunRow, run_id, with_for_update=for_update)
    if row is None:
        raise NotFoundError(f"run {run_id!r} does not exist")
    return row


async def records(s: AsyncSession, query: Select[Any]) -> list[Any]:
    """The records of every row the query selects."""
    return [row.record() for row in (await s.scalars(query)).all()]


async def first_record(s: AsyncSession, query: Select[Any]) -> Any:
    """The record of the first row the query selects, or ``None``."""
    row = await s.scalar(query)
    return None if row is None else row.record()
