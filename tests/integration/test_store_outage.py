"""The cloud while PostgreSQL is briefly unavailable (DESIGN §5): the cloud app runs in-process
against the real PostgreSQL reached through a small TCP proxy the test cuts and restores (the
server itself is never stopped). While it is cut, the store retries, then every call that needs
SQL answers a clean 503 ``{"error": "unavailable", ...}`` and changes nothing; the run does not
fail; once PostgreSQL is back the cloud serves again and the run finishes with every round and
adapter version intact."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
import torch
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from elsa.model.peft_format import ADAPTER_FILE, file_sha256
from elsa.runtime.config import parse_config
from elsa.sketch import sketch_state, sketches_to_payloads
from elsa.wire import AdapterUpdate, encode
from elsa_cloud.main import create_app
from elsa_cloud.settings import CloudSettings

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CONFIG: dict[str, Any] = {
    "name": "outage",
    "topology": {"edges": 1, "devices_per_edge": 1},
    "train": {"cloud_rounds": 2, "edge_rounds": 1, "local_steps": 1},
}
SECRET = "s3cret"
ADMIN = {"authorization": "Bearer admin"}


class TcpProxy:
    """A loopback TCP proxy to ``target`` that can be cut (listener closed, every open
    connection reset: clients see PostgreSQL vanish) and restored on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter, asyncio.Task[None]]] = set()

    async def start(self) -> None:
        """Listen (on the same port as before, after a cut)."""
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        for client, upstream, task in list(self._links):
            task.cancel()
            client.transport.abort()
            upstream.transport.abort()
        self._links.clear()

    async def _link(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.target)
        except OSError:
            client.transport.abort()
            return

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        async def both() -> None:
            await asyncio.gather(pump(client_reader, upstream), pump(upstream_reader, client))

        task = asyncio.create_task(both())
        entry = (client, upstream, task)
        self._links.add(entry)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._links.discard(entry)

    async def close(self) -> None:
        """Stop for good."""
        if self._server is not None:
            await self.cut()


@pytest.fixture
async def proxied_postgres(postgres_url: str) -> AsyncIterator[tuple[TcpProxy, str, str]]:
    """(proxy, SQLAlchemy URL through the proxy, a fresh schema dropped afterwards)."""
    real = make_url(postgres_url)
    dsn = real.set(drivername="postgresql").render_as_string(hide_password=False)
    schema = f"elsa_outage_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    proxy = TcpProxy(real.host or "127.0.0.1", real.port or 5432)
    await proxy.start()
    try:
        url = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        yield proxy, url, schema
    finally:
        await proxy.close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


@contextlib.asynccontextmanager
async def cloud_app(settings: CloudSettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cloud") as client:
            yield app, client


async def join(client: httpx.AsyncClient, role: str, name: str) -> httpx.Response:
    body: dict[str, Any] = {"join_secret": SECRET, "role": role, "name": name}
    if role == "edge":
        body["url"] = "http://127.0.0.1:9"
    return await client.post("/v1/nodes/join", json=body)


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    body = response.json()
    assert body["error"] == "unavailable" and set(body) == {"error", "detail"}, body
    assert "database unavailable" in body["detail"], body


async def until(predicate: Any, timeout_s: float = 60.0) -> None:
    """Poll ``predicate`` (a generous bound, not a timing assertion)."""
    for _ in range(int(timeout_s / 0.1)):
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached")


async def test_postgres_outage_gives_clean_503s_and_the_run_survives(
    proxied_postgres: tuple[TcpProxy, str, str], redis_url: str, tmp_path: Path
) -> None:
    proxy, url, schema = proxied_postgres
    uid = uuid.uuid4().hex[:8]  # Redis keys of this test (node heartbeats) hold it
    settings = CloudSettings(
        database_url=url,
        database_schema=schema,
        redis_url=redis_url,
        join_secret=SECRET,
        admin_token="admin",
        adapter_dir=tmp_path / "adapters",
        join_wait_s=120,
        round_deadline_s=120,
        report_wait_s=0.5,
    )
    raw = Redis.from_url(redis_url)
    run_id = ""
    try:
        async with cloud_app(settings) as (app, client):
            joined = (await join(client, "edge", f"edge-{uid}")).json()
            edge = {"authorization": f"Bearer {joined['token']}"}
            edge_id = joined["node_id"]
            created = await client.post("/v1/runs", json={"config": CONFIG}, headers=ADMIN)
            assert created.status_code == 201, created.text
            run_id = created.json()["run_id"]
            runs_before = (await client.get("/v1/runs", headers=ADMIN)).json()

            # 1. PostgreSQL goes away while the run waits for its device
            await proxy.cut()
            assert_unavailable(await client.get("/v1/runs", headers=ADMIN))
            assert_unavailable(await client.get(f"/v1/runs/{run_id}/rounds", headers=ADMIN))
            assert_unavailable(await join(client, "device", f"device-{uid}"))
            assert_unavailable(await client.get("/v1/tasks/next", params={"wait_s": 0}, headers=edge))
            assert_unavailable(await client.post("/v1/runs", json={"config": CONFIG}, headers=ADMIN))
            ready = await client.get("/ready")
            assert ready.status_code == 503 and ready.json()["checks"] == {"sql": "down", "redis": "ok"}
            assert (await client.get("/health")).status_code == 200
            await asyncio.sleep(2.0)  # the coordinator polls for its devices meanwhile and meets the outage
            await proxy.start()

            # ... it is back: same runs (the refused POST left nothing), the run is still running
            assert (await client.get("/ready")).status_code == 200
            assert (await client.get("/v1/runs", headers=ADMIN)).json() == runs_before
            joined_device = await join(client, "device", f"device-{uid}")
            assert joined_device.status_code == 200, joined_device.text

            async def round_started(round_index: int) -> bool:
                events = (await client.get(f"/v1/runs/{run_id}/events", headers=ADMIN)).json()
                return any(e["kind"] == "round_started" and e["round"] == round_index for e in events)

            await until(lambda: round_started(1))

            # 2. PostgreSQL goes away while round 1 collects edge models: the upload is refused
            # cleanly, and accepted once it is back
            await proxy.cut()
            assert_unavailable(await upload(app, client, edge, edge_id, run_id, 1))
            await asyncio.sleep(1.0)  # the coordinator checks the run meanwhile and meets the outage
            await proxy.start()
            assert (await upload(app, client, edge, edge_id, run_id, 1)).status_code == 200
            await until(lambda: round_started(2))
            assert (await upload(app, client, edge, edge_id, run_id, 2)).status_code == 200

            async def completed() -> bool:
                view = (await client.get(f"/v1/runs/{run_id}", headers=ADMIN)).json()
                return bool(view["state"] == "completed")

            await until(completed)
            rounds = (await client.get(f"/v1/runs/{run_id}/rounds", headers=ADMIN)).json()
            assert [(r["round"], r["state"], r["version"]) for r in rounds] == [
                (1, "completed", 1),
                (2, "completed", 2),
            ]
            events = (await client.get(f"/v1/runs/{run_id}/events", headers=ADMIN)).json()
            assert [e["kind"] for e in events if e["kind"] != "control_updated"] == [
                "round_started",
                "round_completed",
                "round_started",
                "round_completed",
                "run_completed",
            ]
            store = app.state.cloud.store
            versions = await store.list_adapter_versions(run_id)
            assert [v.version for v in versions] == [1, 2]
            for v in versions:  # the checksums in SQL match the files
                assert file_sha256(Path(v.path) / ADAPTER_FILE) == v.sha256
    finally:
        stale = [k async for k in raw.scan_iter(match=f"elsa:v1:*{uid}*", count=500)]
        if run_id:
            stale += [k async for k in raw.scan_iter(match=f"elsa:v1:run:{run_id}:*", count=500)]
        if stale:
            await raw.delete(*stale)
        await raw.aclose()


async def upload(
    app: FastAPI, client: httpx.AsyncClient, edge: dict[str, str], edge_id: str, run_id: str, round_index: int
) -> httpx.Response:
    """The edge's sketched model delta for a round."""
    model, _ = app.state.cloud.models[run_id]
    config = parse_config(CONFIG)
    delta = {k: torch.full_like(v, 0.01) for k, v in model.initial_state().items()}
    update = AdapterUpdate(
        node_id=edge_id,
        run_id=run_id,
        round=round_index,
        num_examples=10,
        sketches=sketches_to_payloads(sketch_state(delta, config.sketch_params(), round_index, config.seed)),
    )
    return await client.post(
        f"/v1/runs/{run_id}/rounds/{round_index}/edge-models",
        content=encode(update),
        headers={"content-type": "application/msgpack", **edge},
    )
