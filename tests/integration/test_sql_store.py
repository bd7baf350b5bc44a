"""SqlStore against SQLite files and the real PostgreSQL: every method, its errors, persistence."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from elsa.errors import ConfigError, ConflictError, NotFoundError
from elsa.infra.sql import SqlStore

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SHA = "ab" * 32


def at(seconds: float) -> datetime:
    """A fixed test time ``seconds`` after T0 (the store never reads the clock)."""
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
async def store(sql_target: tuple[str, str | None]) -> AsyncIterator[SqlStore]:
    """A store on an empty database with the ORM schema."""
    url, schema = sql_target
    s = await SqlStore.connect(url, schema=schema)
    await s.create_all()
    try:
        yield s
    finally:
        await s.close()


async def new_run(store: SqlStore, run_id: str = "run1", created: float = 0) -> None:
    await store.create_run(run_id, f"name-{run_id}", {"lr": 0.001, "model": {"blocks": 6}}, 3, at(created))


# ---------------------------------------------------------------------------------------- nodes


async def test_nodes_upsert_lookup_list_and_resources(store: SqlStore) -> None:
    edge = await store.upsert_node("e1", "edge", "edge-a", "http://e1:8000", 4, "h-e1", at(0))
    assert edge.role == "edge"
    assert edge.capacity == 4
    assert edge.resources == {}
    assert edge.joined_at == T0
    assert edge.joined_at.tzinfo is not None
    await store.upsert_node("d1", "device", "dev-a", None, None, "h-d1", at(1))
    await store.upsert_node("d0", "device", "dev-b", None, None, "h-d0", at(2))

    assert await store.get_node("e1") == edge
    assert await store.get_node("nope") is None
    found = await store.node_by_token_hash("h-d1")
    assert found is not None
    assert found.node_id == "d1"
    assert await store.node_by_token_hash("h-unknown") is None
    assert [n.node_id for n in await store.list_nodes()] == ["d0", "d1", "e1"]
    assert [n.node_id for n in await store.list_nodes("device")] == ["d0", "d1"]
    assert [n.node_id for n in await store.list_nodes("edge")] == ["e1"]

    report = {"memory_bytes": 2**31, "links": [{"edge_id": "e1", "rtt_s": 0.01}]}
    await store.set_node_resources("d1", report)
    report["memory_bytes"] = 0  # the store kept its own copy
    # Re-joining rotates the token and keeps the last resource report.
    again = await store.upsert_node("d1", "device", "dev-a", None, None, "h-d1-new", at(10))
    assert again.token_hash == "h-d1-new"
    assert again.joined_at == at(10)
    assert again.resources == {"memory_bytes": 2**31, "links": [{"edge_id": "e1", "rtt_s": 0.01}]}
    assert await store.node_by_token_hash("h-d1") is None


async def test_node_errors(store: SqlStore) -> None:
    await store.upsert_node("d1", "device", "a", None, None, "h1", at(0))
    with pytest.raises(ConflictError):  # another node already holds this token hash
        await store.upsert_node("d2", "device", "b", None, None, "h1", at(0))
    with pytest.raises(NotFoundError):
        await store.set_node_resources("ghost", {})
    with pytest.raises(ConfigError):
        await store.upsert_node("d3", "cloud", "c", None, None, "h3", at(0))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        await store.upsert_node("d3", "device", "c", None, None, "h3", datetime(2026, 1, 1))
    with pytest.raises(ConfigError):
        await store.set_node_resources("d1", {"bad": object()})
    with pytest.raises(ConfigError):
        await store.list_nodes("cloud")  # type: ignore[arg-type]
    assert [n.node_id for n in await store.list_nodes()] == ["d1"]


# ----------------------------------------------------------------------------------------- runs


async def test_runs_create_get_list_and_state(store: SqlStore) -> None:
    config = {"lr": 0.001, "model": {"blocks": 6}}
    created = await store.create_run("run1", "first", config, 3, at(0))
    assert (created.state, created.current_round, created.cloud_rounds) == ("created", 0, 3)
    assert created.config == config
    assert created.created_at == created.updated_at == T0
    await store.create_run("run0", "second", {}, 1, at(5))
    assert await store.get_run("run1") == created
    assert await store.get_run("nope") is None
    assert [r.run_id for r in await store.list_runs()] == ["run1", "run0"]

    plus_two = timezone(timedelta(hours=2))
    running = await store.set_run_state(
        "run1", "running", current_round=1, updated_at=at(60).astimezone(plus_two)
    )
    assert running.state == "running"
    assert running.current_round == 1
    assert running.updated_at == at(60)
    assert running.updated_at.utcoffset() == timedelta(0)
    paused = await store.set_run_state("run1", "paused", updated_at=at(70))
    assert paused.current_round == 1
    assert paused.created_at == T0
    assert await store.get_run("run1") == paused


async def test_run_errors(store: SqlStore) -> None:
    await new_run(store)
    with pytest.raises(ConflictError):
        await new_run(store)
    with pytest.raises(NotFoundError):
        await store.set_run_state("ghost", "running", updated_at=at(1))
    with pytest.raises(ConfigError):
        await store.set_run_state("run1", "exploded", updated_at=at(1))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        await store.create_run("run2", "n", {"x": math.nan}, 3, at(0))
    with pytest.raises(ConfigError):
        await store.create_run("run2", "n", {}, 0, at(0))
    with pytest.raises(ConfigError):
        await store.create_run("", "n", {}, 1, at(0))
    run = await store.get_run("run1")
    assert run is not None
    assert run.state == "created"
    assert [r.run_id for r in await store.list_runs()] == ["run1"]


# --------------------------------------------------------------------------------------- rounds


async def test_round_state_machine(store: SqlStore) -> None:
    await new_run(store)
    assert await store.last_completed_round("run1") == 0
    r1 = await store.start_round("run1", 1, at(10))
    assert (r1.state, r1.started_at, r1.finished_at) == ("training", at(10), None)
    assert (await store.set_round_state("run1", 1, "aggregating", at(20))).state == "aggregating"
    done = await store.set_round_state("run1", 1, "completed", at(30))
    assert (done.state, done.updated_at, done.finished_at) == ("completed", at(30), at(30))
    assert await store.last_completed_round("run1") == 1

    await store.start_round("run1", 2, at(40))
    abandoned = await store.set_round_state("run1", 2, "abandoned", at(50))
    assert abandoned.finished_at == at(50)
    assert await store.last_completed_round("run1") == 1
    restarted = await store.start_round("run1", 2, at(60))  # an abandoned round may be restarted
    assert (restarted.state, restarted.started_at, restarted.finished_at) == ("training", at(60), None)
    await store.set_round_state("run1", 2, "aggregating", at(70))
    await store.set_round_state("run1", 2, "abandoned", at(80))  # aggregation may be abandoned too

    assert [(r.round, r.state) for r in await store.list_rounds("run1")] == [
        (1, "completed"),
        (2, "abandoned"),
    ]
    assert await store.get_round("run1", 1) == done
    assert await store.get_round("run1", 9) is None
    assert await store.list_rounds("ghost") == []


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ([], "completed"),  # training -> completed skips aggregation
        ([], "training"),  # no self-transition
        (["aggregating"], "training"),
        (["aggregating"], "aggregating"),
        (["aggregating", "completed"], "abandoned"),  # completed is final
        (["aggregating", "completed"], "aggregating"),
        (["abandoned"], "training"),  # only start_round restarts
        (["abandoned"], "completed"),
    ],
)
async def test_illegal_round_transitions_conflict(store: SqlStore, path: list[str], illegal: str) -> None:
    await new_run(store)
    await store.start_round("run1", 1, at(0))
    for i, state in enumerate(path):
        await store.set_round_state("run1", 1, state, at(i + 1))  # type: ignore[arg-type]
    with pytest.raises(ConflictError):
        await store.set_round_state("run1", 1, illegal, at(99))  # type: ignore[arg-type]
    current = await store.get_round("run1", 1)
    assert current is not None
    assert current.state == (path[-1] if path else "training")


async def test_round_errors(store: SqlStore) -> None:
    await new_run(store)
    await store.start_round("run1", 1, at(0))
    with pytest.raises(ConflictError):  # a training round exists
        await store.start_round("run1", 1, at(1))
    await store.set_round_state("run1", 1, "aggregating", at(2))
    await store.set_round_state("run1", 1, "completed", at(3))
    with pytest.raises(ConflictError):  # a completed round is never restarted
        await store.start_round("run1", 1, at(4))
    with pytest.raises(NotFoundError):
        await store.start_round("ghost", 1, at(0))
    with pytest.raises(NotFoundError):
        await store.set_round_state("run1", 7, "aggregating", at(0))
    with pytest.raises(ConfigError):
        await store.start_round("run1", 0, at(0))
    with pytest.raises(ConfigError):
        await store.set_round_state("run1", 1, "done", at(0))  # type: ignore[arg-type]


async def test_concurrent_transitions_let_exactly_one_win(store: SqlStore) -> None:
    await new_run(store)
    await store.start_round("run1", 1, at(0))
    results = await asyncio.gather(
        *(store.set_round_state("run1", 1, "aggregating", at(i)) for i in range(4)), return_exceptions=True
    )
    assert sum(isinstance(r, ConflictError) for r in results) == 3
    assert [r.state for r in results if not isinstance(r, BaseException)] == ["aggregating"]


# -------------------------------------------------------------------------------- participation


async def test_participation_is_idempotent_per_status(store: SqlStore) -> None:
    await new_run(store)
    first = await store.record_participation("run1", 1, "d1", "device", "joined", "", at(1))
    repeat = await store.record_participation("run1", 1, "d1", "device", "joined", "again", at(9))
    assert repeat == first
    assert repeat.detail == ""
    assert repeat.at == at(1)
    await store.record_participation("run1", 1, "d1", "device", "rejected", "bad sketch norm", at(2))
    await store.record_participation("run1", 1, "e1", "edge", "submitted", "", at(3))
    await store.record_participation("run1", 2, "d1", "device", "timed_out", "", at(4))

    rows = await store.list_participation("run1", 1)
    assert [(p.node_id, p.status, p.role) for p in rows] == [
        ("d1", "joined", "device"),
        ("d1", "rejected", "device"),
        ("e1", "submitted", "edge"),
    ]
    assert rows[1].detail == "bad sketch norm"
    assert [p.status for p in await store.list_participation("run1", 2)] == ["timed_out"]
    with pytest.raises(NotFoundError):
        await store.record_participation("ghost", 1, "d1", "device", "joined", "", at(0))
    with pytest.raises(ConfigError):
        await store.record_participation("run1", 1, "d1", "device", "", "", at(0))


# ------------------------------------------------------------------------------ metrics + bytes


async def test_metrics_upsert_per_name(store: SqlStore) -> None:
    await new_run(store)
    await store.record_metrics("run1", 1, "d1", {"loss": 0.9, "acc": 0.5}, at(1))
    await store.record_metrics("run1", 1, "d1", {"loss": 0.7}, at(2))  # overwrites loss only
    await store.record_metrics("run1", 1, "d0", {"loss": 1}, at(3))
    await store.record_metrics("run1", 2, "d1", {"loss": 0.4}, at(4))
    await store.record_metrics("run1", 2, "d1", {}, at(5))

    one = await store.list_metrics("run1", 1)
    assert [(m.node_id, m.name, m.value) for m in one] == [
        ("d0", "loss", 1.0),
        ("d1", "acc", 0.5),
        ("d1", "loss", 0.7),
    ]
    assert one[2].at == at(2)
    assert [(m.round, m.name) for m in await store.list_metrics("run1")] == [
        (1, "loss"),
        (1, "acc"),
        (1, "loss"),
        (2, "loss"),
    ]
    with pytest.raises(ConfigError):
        await store.record_metrics("run1", 1, "d1", {"loss": math.inf}, at(6))
    with pytest.raises(NotFoundError):
        await store.record_metrics("ghost", 1, "d1", {"loss": 1.0}, at(6))
    assert len(await store.list_metrics("run1")) == 4


async def test_bytes_accumulate_and_sum_by_kind(store: SqlStore) -> None:
    await new_run(store)
    big = 5 * 2**32  # needs BigInteger
    await store.record_bytes("run1", 1, "d1", "activations", big, at(1))
    await store.record_bytes("run1", 1, "d1", "activations", 100, at(2))
    await store.record_bytes("run1", 1, "d2", "activations", 7, at(3))
    await store.record_bytes("run1", 1, "d1", "adapter_up", 0, at(4))
    await store.record_bytes("run1", 2, "d1", "activations", 1, at(5))
    assert await store.bytes_by_kind("run1", 1) == {"activations": big + 107, "adapter_up": 0}
    assert await store.bytes_by_kind("run1", 3) == {}
    with pytest.raises(ConfigError):
        await store.record_bytes("run1", 1, "d1", "activations", -1, at(6))
    with pytest.raises(NotFoundError):
        await store.record_bytes("ghost", 1, "d1", "activations", 1, at(6))


async def test_concurrent_byte_counts_do_not_lose_updates(store: SqlStore) -> None:
    await new_run(store)
    await asyncio.gather(*(store.record_bytes("run1", 1, "d1", "grad", 10, at(i)) for i in range(12)))
    assert await store.bytes_by_kind("run1", 1) == {"grad": 120}


# ----------------------------------------------------------------------- adapters + snapshots


async def test_adapter_versions(store: SqlStore) -> None:
    await new_run(store)
    assert await store.latest_adapter_version("run1") is None
    v0 = await store.add_adapter_version("run1", 0, 0, "/blobs/run1/v0", SHA, 10, at(0))
    v2 = await store.add_adapter_version("run1", 2, 2, "/blobs/run1/v2", SHA.upper(), 3 * 2**32, at(20))
    await store.add_adapter_version("run1", 1, 1, "/blobs/run1/v1", SHA, 12, at(10))
    assert v2.sha256 == SHA
    assert v2.nbytes == 3 * 2**32
    assert await store.get_adapter_version("run1", 0) == v0
    assert await store.get_adapter_version("run1", 5) is None
    assert await store.latest_adapter_version("run1") == v2
    assert [v.version for v in await store.list_adapter_versions("run1")] == [0, 1, 2]
    with pytest.raises(ConflictError):
        await store.add_adapter_version("run1", 2, 3, "/elsewhere", SHA, 1, at(30))
    with pytest.raises(ConfigError):
        await store.add_adapter_version("run1", 3, 3, "/p", "not-a-digest", 1, at(30))
    with pytest.raises(NotFoundError):
        await store.add_adapter_version("ghost", 1, 1, "/p", SHA, 1, at(30))
    assert await store.latest_adapter_version("run1") == v2


async def test_snapshots_upsert_and_latest(store: SqlStore) -> None:
    await new_run(store)
    assert await store.latest_snapshot("run1", "trust") is None
    await store.save_snapshot("run1", 1, "trust", {"d1": 0.9}, at(1))
    await store.save_snapshot("run1", 2, "trust", {"d1": 0.8}, at(2))
    replaced = await store.save_snapshot("run1", 2, "trust", {"d1": 0.7, "d2": 1.0}, at(3))
    await store.save_snapshot("run1", 3, "clusters", {"d1": 0}, at(4))
    latest = await store.latest_snapshot("run1", "trust")
    assert latest == replaced
    assert latest is not None
    assert (latest.round, latest.payload, latest.at) == (
        2,
        {"d1": 0.7, "d2": 1.0},
        at(3),
    )
    plans = await store.save_snapshot("run1", 1, "split_plan", {"d1": [1, 2]}, at(5))
    assert plans.payload == {"d1": [1, 2]}
    assert await store.latest_snapshot("run1", "assignment") is None
    with pytest.raises(ConfigError):
        await store.save_snapshot("run1", 1, "weights", {}, at(6))  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        await store.save_snapshot("ghost", 1, "trust", {}, at(6))


# ---------------------------------------------------------------------------------- durability


async def test_data_survives_reconnect(sql_target: tuple[str, str | None]) -> None:
    url, schema = sql_target
    first = await SqlStore.connect(url, schema=schema)
    await first.create_all()
    await new_run(first)
    await first.upsert_node("d1", "device", "a", None, None, "h1", at(0))
    await first.start_round("run1", 1, at(1))
    await first.set_round_state("run1", 1, "aggregating", at(2))
    await first.set_round_state("run1", 1, "completed", at(3))
    await first.record_bytes("run1", 1, "d1", "activations", 5, at(3))
    version = await first.add_adapter_version("run1", 1, 1, "/blobs/v1", SHA, 9, at(3))
    await first.close()

    second = await SqlStore.connect(url, schema=schema)
    try:
        await second.create_all()  # a no-op on an existing schema
        assert await second.last_completed_round("run1") == 1
        assert await second.latest_adapter_version("run1") == version
        assert await second.bytes_by_kind("run1", 1) == {"activations": 5}
        node = await second.node_by_token_hash("h1")
        assert node is not None
        assert node.node_id == "d1"
        assert await second.ping()
    finally:
        await second.close()
