"""LiveStore on the real Redis and on the embedded server: values, TTL liveness, events, flush recovery."""

from __future__ import annotations

import asyncio
import math

import pytest
from redis.asyncio import Redis

from elsa.errors import ConfigError, UnavailableError
from elsa.infra import keys
from elsa.infra.live import LiveStore

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_assignment_clusters_trust_round_trip(live: LiveStore, uid: str) -> None:
    run = f"run-{uid}"
    assert await live.get_assignment(run) == {}
    assert await live.get_clusters(run) == {}
    assert await live.get_trust(run) == {}
    await live.set_assignment(run, {"d1": "e1", "d2": "e2"})
    await live.set_assignment(run, {"d1": "e2"})  # replaced, not merged
    await live.set_clusters(run, {"d1": 0, "d2": 1})
    await live.set_trust(run, {"d1": 0.25, "d2": 1})
    assert await live.get_assignment(run) == {"d1": "e2"}
    assert await live.get_clusters(run) == {"d1": 0, "d2": 1}
    trust = await live.get_trust(run)
    assert trust == {"d1": 0.25, "d2": 1.0}
    assert all(type(v) is float for v in trust.values())
    assert await live.get_assignment(f"other-{uid}") == {}


async def test_values_are_json_under_versioned_keys(live: LiveStore, raw_redis: Redis, uid: str) -> None:
    run = f"run-{uid}"
    await live.set_trust(run, {"d1": 0.5})
    await live.set_split_plan(run, "d1", 2, 1)
    assert await raw_redis.get(f"elsa:v1:run:{run}:trust") == '{"d1":0.5}'
    assert await raw_redis.hgetall(keys.split_plans(run)) == {"d1": "[2, 1]"}


async def test_split_plans(live: LiveStore, uid: str) -> None:
    run = f"run-{uid}"
    assert await live.get_split_plans(run) == {}
    await live.set_split_plan(run, "d1", 1, 1)
    await live.set_split_plan(run, "d2", 2, 3)
    await live.set_split_plan(run, "d1", 3, 1)  # re-planned
    assert await live.get_split_plans(run) == {"d1": (3, 1), "d2": (2, 3)}
    with pytest.raises(ConfigError):
        await live.set_split_plan(run, "d3", 0, 1)
    assert set(await live.get_split_plans(run)) == {"d1", "d2"}


async def test_heartbeat_expires(live: LiveStore, uid: str) -> None:
    a, b, c = (f"{n}-{uid}" for n in ("a", "b", "c"))
    await live.heartbeat(a, ttl_s=0.3)
    await live.heartbeat(b, ttl_s=30)
    assert await live.alive([a, b, c]) == {a, b}
    assert await live.alive([]) == set()
    for _ in range(100):  # bounded: 5 s
        if a not in await live.alive([a, b]):
            break
        await asyncio.sleep(0.05)
    assert await live.alive([a, b, c]) == {b}
    await live.heartbeat(a, ttl_s=30)  # back
    assert await live.alive([a]) == {a}


async def test_events_are_capped_and_ordered(live: LiveStore, uid: str) -> None:
    run = f"run-{uid}"
    assert await live.recent_events(run, 10) == []
    for i in range(7):
        await live.push_event(run, {"kind": "round", "i": i, "detail": {"ok": True}}, max_len=5)
    assert [e["i"] for e in await live.recent_events(run, 10)] == [2, 3, 4, 5, 6]
    assert [e["i"] for e in await live.recent_events(run, 2)] == [5, 6]
    assert await live.recent_events(run, 0) == []
    assert (await live.recent_events(run, 1))[0] == {"kind": "round", "i": 6, "detail": {"ok": True}}


async def test_round_state(live: LiveStore, uid: str) -> None:
    run = f"run-{uid}"
    assert await live.get_round_state(run) is None
    await live.set_round_state(run, {"round": 3, "phase": "training", "deadline_s": 12.5})
    assert await live.get_round_state(run) == {"round": 3, "phase": "training", "deadline_s": 12.5}


async def test_flush_detected_and_restored(
    live: LiveStore, raw_redis: Redis, uid: str, request: pytest.FixtureRequest
) -> None:
    run = f"run-{uid}"
    assert await live.is_empty(run)
    await live.set_assignment(run, {"d1": "e1"})
    await live.set_trust(run, {"d1": 0.9})
    await live.set_clusters(run, {"d1": 0})
    await live.set_split_plan(run, "d1", 2, 2)
    assert not await live.is_empty(run)

    if request.node.callspec.params["live_url"] == "embedded":
        await raw_redis.flushdb()  # a server of its own: flush it all
    else:
        await live.clear_run(run)  # the shared server: flush only this run's keys
    assert await live.is_empty(run)
    assert await live.get_split_plans(run) == {}

    await live.set_split_plan(run, "stale", 1, 1)  # replaced by the restore
    await live.restore(
        run, assignment={"d1": "e1"}, clusters={"d1": 0}, trust={"d1": 0.9}, split_plans={"d1": (2, 2)}
    )
    assert not await live.is_empty(run)
    assert await live.get_assignment(run) == {"d1": "e1"}
    assert await live.get_clusters(run) == {"d1": 0}
    assert await live.get_trust(run) == {"d1": 0.9}
    assert await live.get_split_plans(run) == {"d1": (2, 2)}


async def test_clear_run_deletes_only_that_run(live: LiveStore, raw_redis: Redis, uid: str) -> None:
    run, other = f"run-{uid}", f"run-{uid}x"
    await live.set_trust(run, {"d": 1.0})
    await live.push_event(run, {"e": 1})
    await live.set_trust(other, {"d": 0.5})
    await live.heartbeat(f"n-{uid}", 30)
    assert await live.clear_run(run) == 2
    assert await live.get_trust(run) == {}
    assert await live.get_trust(other) == {"d": 0.5}
    assert await live.alive([f"n-{uid}"]) == {f"n-{uid}"}


async def test_undecoded_client(live_url: str, uid: str, raw_redis: Redis) -> None:
    """A caller's client without ``decode_responses`` reads the same values."""
    store = LiveStore(Redis.from_url(live_url))
    try:
        run = f"run-{uid}"
        await store.set_assignment(run, {"d1": "e1"})
        await store.set_split_plan(run, "d1", 1, 2)
        await store.push_event(run, {"x": 1})
        assert await store.get_assignment(run) == {"d1": "e1"}
        assert await store.get_split_plans(run) == {"d1": (1, 2)}
        assert await store.recent_events(run, 5) == [{"x": 1}]
        assert await store.ping()
    finally:
        await store.close()


async def test_bad_input_is_rejected_before_writing(live: LiveStore, uid: str) -> None:
    run = f"run-{uid}"
    with pytest.raises(ConfigError):
        await live.set_trust(run, {"d1": math.nan})
    with pytest.raises(ConfigError):
        await live.set_clusters(run, {"d1": True})
    with pytest.raises(ConfigError):
        await live.set_assignment(f"bad:{uid}", {})
    with pytest.raises(ConfigError):
        await live.heartbeat(f"n-{uid}", 0)
    with pytest.raises(ConfigError):
        await live.push_event(run, {"x": object()})
    with pytest.raises(ConfigError):
        await live.push_event(run, {"x": 1}, max_len=0)
    with pytest.raises(ConfigError):
        await live.restore(run, assignment={}, clusters={}, trust={"d": math.inf}, split_plans={})
    assert await live.is_empty(run)
    assert await live.recent_events(run, 5) == []


async def test_corrupt_value_is_reported(live: LiveStore, raw_redis: Redis, uid: str) -> None:
    run = f"run-{uid}"
    await raw_redis.set(keys.trust(run), "{not json")
    with pytest.raises(UnavailableError):
        await live.get_trust(run)
    await raw_redis.hset(keys.split_plans(run), "d1", '"oops"')
    with pytest.raises(UnavailableError):
        await live.get_split_plans(run)
