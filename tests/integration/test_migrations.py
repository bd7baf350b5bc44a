"""Alembic migrations create exactly the ORM schema, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import Connection

from elsa.infra.migrate import migrate
from elsa.infra.sql import SqlStore
from elsa.infra.sql.engine import create_engine as create_async_engine
from elsa.infra.sql.models import Base

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def _columns(connection: Connection) -> dict[str, list[str]]:
    """Table name → column names of the ELSA tables (Alembic's own table left out)."""
    inspector = inspect(connection)
    return {
        table: [c["name"] for c in inspector.get_columns(table)]
        for table in sorted(inspector.get_table_names())
        if table != "alembic_version"
    }


def _schema_diff(connection: Connection) -> list[Any]:
    """What autogenerate would still change to reach the ORM schema (empty when equal)."""
    return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


async def _inspect(url: str, schema: str | None) -> tuple[dict[str, list[str]], list[Any], str | None]:
    engine = create_async_engine(url, schema=schema)
    try:
        async with engine.connect() as conn:
            columns = await conn.run_sync(_columns)
            diff = await conn.run_sync(_schema_diff)
            revision = await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
    finally:
        await engine.dispose()
    return columns, diff, revision


@pytest.mark.anyio
async def test_migrated_schema_equals_create_all(sql_target: tuple[str, str | None], tmp_path: Path) -> None:
    url, schema = sql_target
    await migrate(url, schema=schema)
    await migrate(url, schema=schema)  # at head already: a no-op
    migrated, diff, revision = await _inspect(url, schema)
    assert revision == "0001"
    assert diff == []

    # The same backend through create_all: a second SQLite file, or the same PostgreSQL schema
    # after the migrated tables are dropped.
    if schema is None:
        reference_url = f"sqlite+aiosqlite:///{tmp_path / 'create_all.db'}"
    else:
        reference_url = url
        engine = create_async_engine(url, schema=schema)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
        await engine.dispose()
    store = await SqlStore.connect(reference_url, schema=schema)
    await store.create_all()
    await store.close()
    created, _, _ = await _inspect(reference_url, schema)

    assert migrated == created
    assert set(migrated) == set(Base.metadata.tables)


def test_alembic_command_uses_elsa_database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``alembic upgrade head`` from the repository root, the URL taken from ELSA_DATABASE_URL."""
    db = tmp_path / "cli.db"
    monkeypatch.setenv("ELSA_DATABASE_URL", f"sqlite+aiosqlite:///{db}")
    command.upgrade(Config(str(REPO_ROOT / "alembic.ini")), "head")
    with create_engine(f"sqlite:///{db}").connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == "0001"
        assert set(_columns(conn)) == set(Base.metadata.tables)
        command.downgrade(Config(str(REPO_ROOT / "alembic.ini")), "base")
        assert _columns(conn) == {}
