"""Alembic environment of ELSA's SQL schema (async engines: SQLite or PostgreSQL).

Alembic executes this file; nothing imports it. The database is, in order of precedence:

1. a connection handed over in ``config.attributes["connection"]`` (what
   :func:`elsa.infra.migrate.migrate` does);
2. the ``ELSA_DATABASE_URL`` environment variable;
3. ``sqlalchemy.url`` of the Alembic config (``alembic.ini``).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from elsa.errors import ConfigError
from elsa.infra.sql.engine import async_url, create_engine
from elsa.infra.sql.models import Base, UtcDateTime


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render :class:`UtcDateTime` as the plain column type it stores."""
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _url() -> str:
    url = os.environ.get("ELSA_DATABASE_URL") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise ConfigError("no database URL: set ELSA_DATABASE_URL or sqlalchemy.url in alembic.ini")
    return url


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _migrate_url(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_migrate)
    finally:
        await engine.dispose()


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if context.is_offline_mode():
        context.configure(
            url=async_url(_url()),
            target_metadata=Base.metadata,
            literal_binds=True,
            render_item=_render_item,
        )
        with context.begin_transaction():
            context.run_migrations()
    elif isinstance(connection, Connection):
        _migrate(connection)
    else:
        asyncio.run(_migrate_url(_url()))


_run()
