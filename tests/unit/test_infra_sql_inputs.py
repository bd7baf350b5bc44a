"""SQL store plumbing without a server: URL handling, input checks, and unreachable databases."""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from elsa.errors import ConfigError, UnavailableError
from elsa.infra.live import LiveStore
from elsa.infra.sql import SqlStore, checks
from elsa.infra.sql.engine import async_url, create_engine, is_transient


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite"),
        ("postgresql://u@h/db", "postgresql+asyncpg"),
        ("postgres://u@h/db", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg"),
    ],
)
def test_urls_get_async_drivers(url: str, driver: str) -> None:
    assert async_url(url).drivername == driver


@pytest.mark.parametrize("url", ["mysql://u@h/db", "postgresql+psycopg2://u@h/db", "not a url"])
def test_unsupported_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        async_url(url)


def test_schema_only_on_postgres_and_well_formed() -> None:
    with pytest.raises(ConfigError):
        create_engine("sqlite+aiosqlite:///x.db", schema="s")
    for bad in ("bad; DROP", "s\n", "1s", ""):
        with pytest.raises(ConfigError):
            create_engine("postgresql+asyncpg://u@h/db", schema=bad)


def test_checks() -> None:
    plus_two = timezone(timedelta(hours=2))
    t = datetime(2026, 1, 1, 14, 0, tzinfo=plus_two)
    assert checks.aware(t, "t") == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert checks.aware(t, "t").tzinfo is UTC
    with pytest.raises(ConfigError):
        checks.aware(datetime(2026, 1, 1), "t")
    assert checks.non_negative(0, "n") == 0
    for bad in (-1, True, 1.5):
        with pytest.raises(ConfigError):
            checks.non_negative(bad, "n")  # type: ignore[arg-type]
    assert checks.finite(3, "m") == 3.0
    for bad_value in (math.nan, math.inf, True, "1"):
        with pytest.raises(ConfigError):
            checks.finite(bad_value, "m")  # type: ignore[arg-type]
    payload = {"a": [1, {"b": 2}]}
    copy = checks.json_object(payload, "p")
    assert copy == payload
    assert copy["a"] is not payload["a"]
    for bad_obj in ({"a": math.nan}, {"a": object()}, [1], {1: "x"}):
        with pytest.raises(ConfigError):
            checks.json_object(bad_obj, "p")  # type: ignore[arg-type]
    assert checks.sha256_hex("AB" * 32) == "ab" * 32
    for bad_digest in ("ab" * 31, "ab" * 32 + "\n", "zz" * 32):
        with pytest.raises(ConfigError):
            checks.sha256_hex(bad_digest)
    assert checks.short_text("x" * 128, "id") == "x" * 128
    for bad_text in ("", "x" * 129, 5):
        with pytest.raises(ConfigError):
            checks.short_text(bad_text, "id")  # type: ignore[arg-type]


def _sqlite_error(name: str) -> OperationalError:
    orig = sqlite3.OperationalError(name.lower())
    orig.sqlite_errorname = name
    return OperationalError("SELECT 1", {}, orig)


def test_transient_errors() -> None:
    assert is_transient(ConnectionRefusedError())
    assert is_transient(TimeoutError())
    assert is_transient(_sqlite_error("SQLITE_BUSY"))
    assert is_transient(_sqlite_error("SQLITE_IOERR_READ"))
    assert not is_transient(_sqlite_error("SQLITE_ERROR"))  # e.g. no such table
    assert not is_transient(IntegrityError("INSERT", {}, Exception("duplicate")))
    assert not is_transient(ValueError())


@pytest.mark.anyio
async def test_schema_errors_are_not_retried_as_outages(tmp_path: Path) -> None:
    store = await SqlStore.connect(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(OperationalError, match="no such table"):
            await store.get_run("r1")
    finally:
        await store.close()


@pytest.mark.anyio
async def test_unreachable_postgres_is_unavailable() -> None:
    with pytest.raises(UnavailableError):
        await SqlStore.connect("postgresql+asyncpg://postgres@127.0.0.1:1/test", backoff_s=0.01)


def test_sqlite_directory_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        create_engine(f"sqlite+aiosqlite:///{tmp_path}/missing-dir/elsa.db")


@pytest.mark.anyio
async def test_unreachable_redis_is_unavailable() -> None:
    store = LiveStore.from_url("redis://127.0.0.1:1/0", connect_timeout_s=0.5, retries=0)
    try:
        assert not await store.ping()
        with pytest.raises(UnavailableError):
            await store.get_assignment("r1")
        with pytest.raises(UnavailableError):
            await store.heartbeat("n1", 1.0)
    finally:
        await store.close()


def test_bad_redis_url() -> None:
    with pytest.raises(ConfigError):
        LiveStore.from_url("http://example/0")
