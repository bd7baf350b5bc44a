"""A small in-process cache whose entries expire, bounded in size: what a service remembers of
answers it may reuse for a while (the cloud's token → node lookups, an edge's token → node
identities asked of the cloud)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class ExpiringCache(Generic[V]):
    """``key → value`` for ``ttl_s`` seconds; past ``capacity`` the oldest entries go first."""

    def __init__(self, ttl_s: float, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.capacity = capacity
        self._clock = clock
        self._entries: OrderedDict[str, tuple[V, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> V | None:
        """The value, unless absent or expired."""
        entry = self._entries.get(key)
        if entry is None or entry[1] < self._clock():
            self._entries.pop(key, None)
            return None
        return entry[0]

    def put(self, key: str, value: V) -> None:
        """Remember ``value`` for ``ttl_s`` seconds."""
        self._entries[key] = (value, self._clock() + self.ttl_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def evict(self, where: Callable[[V], bool]) -> None:
        """Forget every entry whose value satisfies ``where``."""
        for key in [k for k, (v, _) in self._entries.items() if where(v)]:
            del self._entries[key]
