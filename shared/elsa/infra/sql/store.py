"""The cloud's durable store: nodes, runs, rounds, participation, metrics, bytes, adapter
versions and snapshots over SQLAlchemy 2 async (DESIGN §5).

:class:`SqlStore` is a repository: every method is one short transaction, takes plain values and
returns frozen records (:mod:`elsa.infra.records`). It never reads the clock: callers pass
timezone-aware timestamps. Errors are the ELSA tree: bad input → :class:`~elsa.errors.ConfigError`
(nothing written), a missing run/node/round → :class:`~elsa.errors.NotFoundError`, a write that
does not fit the stored state → :class:`~elsa.errors.ConflictError`, a database that cannot be
reached (after a few quick retries) → :class:`~elsa.errors.UnavailableError`.

Backends: ``sqlite+aiosqlite:///path`` (embedded default) and ``postgresql+asyncpg://...``.
Production creates the schema with Alembic (:func:`elsa.infra.migrate.migrate`);
:meth:`SqlStore.create_all` serves tests and embedded mode.
"""

from __future__ import annotations

from sqlalchemy import text

from elsa.infra.sql.artifacts import ArtifactRepository
from elsa.infra.sql.engine import create_engine
from elsa.infra.sql.models import Base
from elsa.infra.sql.nodes import NodeRepository
from elsa.infra.sql.runs import RunRepository
from elsa.infra.sql.telemetry import TelemetryRepository


class SqlStore(NodeRepository, RunRepository, TelemetryRepository, ArtifactRepository):
    """Async repository over the ELSA schema (see the module docstring for the error contract).

    Build it with :meth:`connect`; close it with :meth:`close`. Methods by concern:
    :class:`~elsa.infra.sql.nodes.NodeRepository`, :class:`~elsa.infra.sql.runs.RunRepository`,
    :class:`~elsa.infra.sql.telemetry.TelemetryRepository`,
    :class:`~elsa.infra.sql.artifacts.ArtifactRepository`.
    """

    @classmethod
    async def connect(
        cls, url: str, *, schema: str | None = None, attempts: int = 3, backoff_s: float = 0.05
    ) -> SqlStore:
        """Open a store on ``url`` and check that the database answers.

        ``schema`` (PostgreSQL only) sets the ``search_path``; ``None`` keeps the server's default.
        ``attempts``/``backoff_s`` set the retry on connection errors of every call.
        Raises :class:`~elsa.errors.ConfigError` for a bad URL or driver and
        :class:`~elsa.errors.UnavailableError` when the database cannot be reached.
        """
        store = cls(create_engine(url, schema=schema), attempts=attempts, backoff_s=backoff_s)
        try:
            await store._transact("connect", lambda s: s.execute(text("SELECT 1")))
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        """Close every pooled connection. The store must not be used afterwards."""
        await self._engine.dispose()

    async def ping(self) -> bool:
        """Whether the database answers (for readiness checks); never raises."""
        try:
            async with self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def create_all(self) -> None:
        """Create every missing table of the ORM schema (tests and embedded mode)."""

        async def op() -> None:
            async with self._engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)

        await self._retrying("create_all", op)
