"""Fixtures for integration tests: real Redis, real PostgreSQL, the embedded Redis, SQLite files.

Services come from ``ELSA_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``) and
``ELSA_TEST_POSTGRES_URL`` (default ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``). An
unreachable service skips its tests with the reason, except under ``CI=true``, where it fails
them: CI must provide (or start) the services.

Isolation: every PostgreSQL test gets its own schema (dropped afterwards); every Redis test uses
ids with a unique suffix and deletes every key holding it afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NoReturn

import asyncpg  # type: ignore[import-untyped]
import pytest
import redis
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from elsa.infra.embedded_redis import EmbeddedRedis
from elsa.infra.live import LiveStore

REDIS_URL = os.environ.get("ELSA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get("ELSA_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def _service_missing(service: str, url: str, error: BaseException) -> NoReturn:
    """Fail under CI (services are required there), skip elsewhere."""
    reason = f"{service} unreachable at {make_url(url).render_as_string()}: {type(error).__name__}: {error}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(f"{reason} (set ELSA_TEST_{service.upper()}_URL or start it)")


def _asyncpg_dsn(url: str) -> str:
    """The asyncpg DSN of a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the anyio pytest plugin ships with anyio)."""
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the real Redis (skip or fail if unreachable)."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as e:
        _service_missing("redis", REDIS_URL, e)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the real PostgreSQL (skip or fail if unreachable)."""

    async def check() -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL), timeout=3)
        await conn.close()

    try:
        with ThreadPoolExecutor(1) as pool:  # its own event loop, away from any test's
            pool.submit(asyncio.run, check()).result()
    except (OSError, asyncpg.PostgresError, TimeoutError) as e:
        _service_missing("postgres", POSTGRES_URL, e)
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", "postgresql"])
async def sql_target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, str | None]]:
    """An empty database as ``(url, schema)`` for ``SqlStore.connect(url, schema=schema)``:
    a fresh SQLite file, or a fresh schema in the test PostgreSQL.
    """
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'elsa.db'}", None
        return
    url: str = request.getfixturevalue("postgres_url")
    schema = f"elsa_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        yield url, schema
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


@pytest.fixture
def embedded_redis() -> Iterator[EmbeddedRedis]:
    """A fresh embedded Redis-protocol server on a free loopback port."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(params=["redis", "embedded"])
def live_url(request: pytest.FixtureRequest) -> str:
    """URL of the real Redis, or of a fresh embedded server."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    server: EmbeddedRedis = request.getfixturevalue("embedded_redis")
    return server.url


@pytest.fixture
def uid() -> str:
    """A suffix unique to the test: every Redis id it uses carries it, and its keys are deleted after."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
async def raw_redis(live_url: str, uid: str) -> AsyncIterator[Redis]:
    """A plain client on the same server; deletes every key holding ``uid`` afterwards."""
    client = Redis.from_url(live_url, decode_responses=True)
    try:
        yield client
    finally:
        stale = [k async for k in client.scan_iter(match=f"elsa:v1:*{uid}*", count=500)]
        if stale:
            await client.delete(*stale)
        await client.aclose()


@pytest.fixture
async def live(live_url: str, raw_redis: Redis) -> AsyncIterator[LiveStore]:
    """A LiveStore on the real Redis or on the embedded server."""
    store = LiveStore.from_url(live_url)
    try:
        yield store
    finally:
        await store.close()
