"""Async engines for the ELSA database and the line between transient and permanent errors.

Shared by :class:`elsa.infra.sql.SqlStore` and :mod:`elsa.infra.migrate` so both read the same
URLs the same way (DESIGN §5): ``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://...``;
the sync spellings ``sqlite:///`` and ``postgresql://`` (or ``postgres://``) are mapped to those
async drivers.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from elsa.errors import ConfigError

_ASYNC_DRIVERS: Final = MappingProxyType(
    {
        "sqlite": "sqlite+aiosqlite",
        "sqlite+aiosqlite": "sqlite+aiosqlite",
        "postgres": "postgresql+asyncpg",
        "postgresql": "postgresql+asyncpg",
        "postgresql+asyncpg": "postgresql+asyncpg",
    }
)
_SCHEMA = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SQLITE_BUSY_TIMEOUT_MS = 5000
_SQLITE_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_PROTOCOL")


def async_url(url: str | URL) -> URL:
    """Parse a database URL and pin its async driver; :class:`ConfigError` if unsupported."""
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise ConfigError(f"invalid database URL: {e}") from e
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ConfigError(
            f"unsupported database driver {parsed.drivername!r}: use sqlite+aiosqlite or postgresql+asyncpg"
        )
    return parsed.set(drivername=driver)


def create_engine(url: str | URL, *, schema: str | None = None) -> AsyncEngine:
    """An async engine for ``url`` (nothing is connected yet).

    The directory of a SQLite file must exist (:class:`ConfigError` otherwise).
    SQLite transactions enforce foreign keys and start with ``BEGIN IMMEDIATE``, waiting up to 5 s
    for a concurrent writer. ``schema`` (PostgreSQL only) becomes the connection's ``search_path``.
    """
    parsed = async_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if schema is not None:
        if parsed.get_backend_name() != "postgresql":
            raise ConfigError("a schema can only be chosen on PostgreSQL")
        if not _SCHEMA.fullmatch(schema):
            raise ConfigError(f"invalid schema name {schema!r}")
        kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        directory = Path(parsed.database).parent
        if not directory.is_dir():
            raise ConfigError(f"directory of the SQLite database does not exist: {directory}")
    engine = create_async_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """Enforce foreign keys, wait on locks, and let SQLAlchemy emit BEGIN itself."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    """Take the write lock up front, so concurrent writers wait (busy timeout) instead of deadlocking."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` means the database could not be reached or dropped the connection.

    Such errors are worth a retry and map to :class:`~elsa.errors.UnavailableError`; constraint
    violations, SQL errors and ELSA errors are not.
    """
    if isinstance(error, OperationalError) and isinstance(error.orig, sqlite3.Error):
        # SQLite reports schema and SQL mistakes as OperationalError too: only lock and I/O
        # conditions are transient.
        name = getattr(error.orig, "sqlite_errorname", None) or ""
        return name.startswith(_SQLITE_TRANSIENT)
    if isinstance(error, OperationalError | InterfaceError | PoolTimeoutError | OSError | TimeoutError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated
