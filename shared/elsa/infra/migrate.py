"""Bring a database to the newest schema: ``alembic upgrade head``, programmatically (DESIGN §5).

The cloud calls :func:`migrate` on startup; compose and k8s run it as a one-shot step before
the cloud starts (:func:`migrate_when_reachable`, waiting for a database that is starting)::

    elsa migrate --database-url postgresql+asyncpg://...          # or ELSA_CLOUD_DATABASE_URL=...
    python -m elsa.infra.migrate --url postgresql+asyncpg://...   # or ELSA_DATABASE_URL=...

The Alembic scripts ship inside the package (:mod:`elsa.infra.migrations`), so no
``alembic.ini`` is needed here; the one at the repository root serves the ``alembic`` command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from elsa.errors import ConfigError, UnavailableError
from elsa.infra.sql.engine import create_engine, is_transient

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
"""The Alembic script directory (``env.py``, ``versions/``)."""

_PG_MIGRATION_LOCK = 0x454C5341  # "ELSA": one migrator at a time per database


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged migrations (no ini file, no URL)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """The newest revision of the packaged migrations (what :func:`migrate` brings a database to)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise ConfigError(f"no migrations in {MIGRATIONS_DIR}")
    return head


async def migrate(url: str, *, schema: str | None = None) -> None:
    """Upgrade the database at ``url`` to the newest revision (a no-op when it is there).

    Runs in one transaction; on PostgreSQL concurrent callers (several cloud replicas) are
    serialised by an advisory lock. ``schema`` (PostgreSQL only) sets the ``search_path``.
    Raises :class:`ConfigError` for a bad URL, :class:`UnavailableError` when the database
    cannot be reached.
    """
    engine = create_engine(url, schema=schema)
    try:
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(text(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})"))
            await connection.run_sync(_upgrade_head)
    except Exception as e:
        if is_transient(e):
            raise UnavailableError(f"database unavailable for migration: {type(e).__name__}") from e
        raise
    finally:
        await engine.dispose()


def migrate_when_reachable(
    url: str,
    *,
    schema: str | None = None,
    timeout_s: float = 60.0,
    retry_s: float = 2.0,
    on_retry: Callable[[UnavailableError], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """:func:`migrate`, retried every ``retry_s`` while the database is unavailable (a server
    still starting), for at most ``timeout_s``; then :class:`UnavailableError`.

    ``on_retry`` is told about each failed attempt. A bad URL or a failing migration is not
    retried. Idempotent, like :func:`migrate`: a database at the newest revision is left as is.
    """
    deadline = clock() + timeout_s
    while True:
        try:
            asyncio.run(migrate(url, schema=schema))
            return
        except UnavailableError as exc:
            if clock() >= deadline:
                raise UnavailableError(f"{exc.detail} (gave up after {timeout_s:.0f}s)") from exc
            if on_retry is not None:
                on_retry(exc)
            sleep(retry_s)


def _upgrade_head(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def main(argv: list[str] | None = None) -> None:
    """``python -m elsa.infra.migrate [--url URL]`` (default: ``ELSA_DATABASE_URL``)."""
    parser = argparse.ArgumentParser(prog="python -m elsa.infra.migrate", description=__doc__)
    parser.add_argument("--url", default=os.environ.get("ELSA_DATABASE_URL"), help="database URL")
    parser.add_argument("--schema", default=None, help="PostgreSQL schema (search_path)")
    args = parser.parse_args(argv)
    if not args.url:
        raise ConfigError("no database URL: pass --url or set ELSA_DATABASE_URL")
    asyncio.run(migrate(args.url, schema=args.schema))


if __name__ == "__main__":
    main()
