"""Request rate limits of the services: a token bucket per caller (its bearer token, else its
address) and a lock-out of addresses that keep failing authentication (guessing tokens or the
join secret). Over the limit → 429 with ``Retry-After``; liveness, readiness and metrics are
never limited.

The state is bounded (least recently seen callers are forgotten first) and per process.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from elsa.errors import ConfigError

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: never limited: probes of orchestrators and scrapers
EXEMPT_PATHS = frozenset({"/health", "/ready", "/metrics"})


@dataclass(frozen=True)
class RateLimits:
    """``requests_per_s`` sustained and ``burst`` requests at once per caller (0 = no limit);
    ``auth_failures`` 401/403 answers per ``auth_window_s`` per address before it is locked out
    for the rest of the window (0 = no lock-out); ``max_callers`` remembered at once."""

    requests_per_s: float = 0.0
    burst: int = 0
    auth_failures: int = 0
    auth_window_s: float = 60.0
    max_callers: int = 100_000

    def __post_init__(self) -> None:
        if self.requests_per_s < 0 or self.burst < 0 or self.auth_failures < 0:
            raise ConfigError("rate limits must be >= 0")
        if self.requests_per_s > 0 and self.burst < 1:
            raise ConfigError("a request rate needs a burst of at least 1")
        if self.auth_window_s <= 0 or self.max_callers < 1:
            raise ConfigError("auth_window_s must be > 0 and max_callers >= 1")


class _Buckets:
    """Token buckets keyed by caller, least recently used evicted past ``capacity``."""

    def __init__(self, rate: float, burst: int, capacity: int) -> None:
        self.rate, self.burst, self.capacity = rate, burst, capacity
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        """0.0 if a request may pass now (and take its token), else seconds until one may."""
        tokens, last = self._state.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._state[key] = (tokens, now)
        if len(self._state) > self.capacity:
            self._state.popitem(last=False)
        return wait


class _Failures:
    """Recent authentication failures per address (sliding window)."""

    def __init__(self, limit: int, window_s: float, capacity: int) -> None:
        self.limit, self.window_s, self.capacity = limit, window_s, capacity
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._seen.pop(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        self._seen[key] = times
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return times

    def locked_for(self, key: str, now: float) -> float:
        """Seconds the address stays locked out (0.0 if it is not)."""
        times = self._recent(key, now)
        if len(times) < self.limit:
            return 0.0
        return max(times[0] + self.window_s - now, 0.0)

    def record(self, key: str, now: float) -> None:
        self._recent(key, now).append(now)


def _caller(scope: Scope) -> tuple[str, str]:
    """(bucket key, address): the bearer token's prefix when present, else the address."""
    client = scope.get("client")
    address = str(client[0]) if client else "unknown"
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            token = value.decode("latin-1").partition(" ")[2].strip()
            if token:
                return "t:" + token[:64], address
    return "a:" + address, address


class RateLimitMiddleware:
    """ASGI middleware enforcing ``RateLimits`` (see the module docstring)."""

    def __init__(self, app: ASGIApp, limits: RateLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.limits = limits
        self.clock = clock
        self.buckets = (
            _Buckets(limits.requests_per_s, limits.burst, limits.max_callers)
            if limits.requests_per_s > 0
            else None
        )
        self.failures = (
            _Failures(limits.auth_failures, limits.auth_window_s, limits.max_callers)
            if limits.auth_failures > 0
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        key, address = _caller(scope)
        now = self.clock()
        if self.failures is not None:
            locked = self.failures.locked_for(address, now)
            if locked > 0:
                await _too_many(scope, send, locked, "too many failed authentications from this address")
                return
        if self.buckets is not None:
            wait = self.buckets.take(key, now)
            if wait > 0:
                await _too_many(scope, send, wait, "request rate limit exceeded")
                return
        if self.failures is None:
            await self.app(scope, receive, send)
            return
        failures = self.failures

        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] in (401, 403):
                failures.record(address, self.clock())
            await send(message)

        await self.app(scope, receive, watch)


async def _too_many(scope: Scope, send: Send, retry_after_s: float, detail: str) -> None:
    scope.setdefault("state", {})["error_code"] = "rate_limited"  # for the request metrics
    body = json.dumps({"error": "rate_limited", "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(max(1, math.ceil(retry_after_s))).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install_rate_limits(app: Any, limits: RateLimits) -> None:
    """Add the middleware to a FastAPI/Starlette app (before the metrics middleware, so that
    429s are counted)."""
    app.add_middleware(RateLimitMiddleware, limits=limits)
