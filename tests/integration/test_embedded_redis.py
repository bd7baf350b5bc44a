"""The embedded Redis-protocol server: in-process and as ``python -m elsa.infra.embedded_redis``."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time

import pytest
import redis
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from elsa.errors import ConfigError
from elsa.infra.embedded_redis import EmbeddedRedis
from elsa.infra.live import LiveStore

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _set_get_expire(url: str) -> None:
    client = Redis.from_url(url, decode_responses=True)
    try:
        assert await client.set("k", "v")
        assert await client.get("k") == "v"
        assert await client.expire("k", 100)
        assert 0 < await client.ttl("k") <= 100
        await client.set("short", "x", px=100)
        for _ in range(100):  # bounded: 5 s
            if await client.get("short") is None:
                break
            await asyncio.sleep(0.05)
        assert await client.get("short") is None
        assert await client.get("k") == "v"
    finally:
        await client.aclose()


def test_redis_asyncio_and_live_store_work_through_it() -> None:
    async def live(url: str) -> None:
        store = LiveStore.from_url(url)
        try:
            assert await store.ping()
            await store.set_assignment("r1", {"d1": "e1"})
            await store.heartbeat("d1", 30)
            assert await store.get_assignment("r1") == {"d1": "e1"}
            assert await store.alive(["d1", "d2"]) == {"d1"}
        finally:
            await store.close()

    with EmbeddedRedis() as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        asyncio.run(_set_get_expire(server.url))
        asyncio.run(live(server.url))
        port = server.port
    with pytest.raises(redis.ConnectionError):  # stopped: the port is closed
        redis.Redis(port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)).ping()


def test_lifecycle() -> None:
    server = EmbeddedRedis()
    with pytest.raises(ConfigError):
        _ = server.url  # not started
    assert server.start() is server.start()  # idempotent
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(ConfigError):
        EmbeddedRedis(port=70000)


def test_runs_as_a_process_until_sigterm() -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "elsa.infra.embedded_redis", "--port", str(port)])
    try:
        client = redis.Redis(port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
        deadline = time.monotonic() + 15
        while True:
            try:
                assert client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        client.close()
        asyncio.run(_set_get_expire(f"redis://127.0.0.1:{port}/0"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
