"""The expiring cache behind the cloud's token lookups and the edges' token identities."""

from __future__ import annotations

from elsa.infra.cache import ExpiringCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    cache: ExpiringCache[str] = ExpiringCache(ttl_s=10.0, capacity=4, clock=clock)
    cache.put("a", "node-a")
    clock.now += 9.9
    assert cache.get("a") == "node-a"
    clock.now += 0.2
    assert cache.get("a") is None and len(cache) == 0


def test_capacity_drops_the_oldest_first() -> None:
    cache: ExpiringCache[int] = ExpiringCache(ttl_s=60.0, capacity=2, clock=Clock())
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 3)  # refreshed: now the newest
    cache.put("c", 4)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (3, None, 4)


def test_evict_by_value() -> None:
    cache: ExpiringCache[str] = ExpiringCache(ttl_s=60.0, capacity=10, clock=Clock())
    for key, node in (("t1", "n1"), ("t2", "n2"), ("t3", "n1")):
        cache.put(key, node)
    cache.evict(lambda node: node == "n1")
    assert (cache.get("t1"), cache.get("t2"), cache.get("t3")) == (None, "n2", None)
