"""The cloud's live state in Redis: assignments, clusters, trust, split plans, liveness, events
and round state (DESIGN §5).

Redis may be flushed at any time: :meth:`LiveStore.is_empty` tells the cloud so, and
:meth:`LiveStore.restore` puts the SQL snapshots back in one transaction. Every value is JSON
(never pickle); every key comes from :mod:`elsa.infra.keys`. Connection errors and timeouts
raise :class:`~elsa.errors.UnavailableError`; bad arguments raise :class:`~elsa.errors.ConfigError`
before anything is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from elsa.errors import ConfigError, UnavailableError
from elsa.infra import keys


class LiveStore:
    """Typed, JSON-valued access to ELSA's Redis keys over a ``redis.asyncio`` client.

    The client may decode responses or not. :meth:`close` closes it.
    """

    def __init__(self, client: Redis) -> None:
        """Wrap a client (see :meth:`from_url` for one with ELSA's timeouts and retries)."""
        self._redis = client

    @classmethod
    def from_url(
        cls, url: str, *, connect_timeout_s: float = 2.0, timeout_s: float = 5.0, retries: int = 2
    ) -> LiveStore:
        """A store on a new client for ``redis://host:port/db`` (no I/O until the first call).

        Each command is retried ``retries`` times on connection errors, with a short exponential
        backoff, before :class:`UnavailableError`.
        """
        try:
            client = Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=connect_timeout_s,
                socket_timeout=timeout_s,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries),
            )
        except ValueError as e:
            raise ConfigError(f"invalid Redis URL: {e}") from e
        return cls(client)

    async def close(self) -> None:
        """Close the client and its connection pool."""
        await self._redis.aclose()

    async def ping(self) -> bool:
        """Whether Redis answers (for readiness checks); never raises."""
        try:
            return bool(await self._redis.ping())
        except (RedisConnectionError, RedisTimeoutError, OSError):
            return False

    # ------------------------------------------------------------------ assignment, clusters, trust

    async def set_assignment(self, run_id: str, mapping: Mapping[str, str]) -> None:
        """Replace the run's device → edge assignment."""
        await self._set(keys.assignment(run_id), _str_map(mapping))

    async def get_assignment(self, run_id: str) -> dict[str, str]:
        """The run's device → edge assignment (``{}`` if none)."""
        return {k: str(v) for k, v in (await self._get_object(keys.assignment(run_id)) or {}).items()}

    async def set_clusters(self, run_id: str, mapping: Mapping[str, int]) -> None:
        """Replace the run's device → cluster membership."""
        await self._set(keys.clusters(run_id), _int_map(mapping))

    async def get_clusters(self, run_id: str) -> dict[str, int]:
        """The run's device → cluster membership (``{}`` if none)."""
        return {k: int(v) for k, v in (await self._get_object(keys.clusters(run_id)) or {}).items()}

    async def set_trust(self, run_id: str, mapping: Mapping[str, float]) -> None:
        """Replace the run's device → trust scores (finite numbers)."""
        await self._set(keys.trust(run_id), _float_map(mapping))

    async def get_trust(self, run_id: str) -> dict[str, float]:
        """The run's device → trust scores (``{}`` if none)."""
        return {k: float(v) for k, v in (await self._get_object(keys.trust(run_id)) or {}).items()}

    # ----------------------------------------------------------------------------- split plans

    async def set_split_plan(self, run_id: str, node_id: str, head_blocks: int, tail_blocks: int) -> None:
        """Set one device's split: ``head_blocks`` ≥ 1 on-device blocks before the edge, ``tail_blocks`` ≥ 1 after."""
        plan = _plan(head_blocks, tail_blocks)
        with _unavailable("set_split_plan"):
            await self._redis.hset(keys.split_plans(run_id), node_id, plan)

    async def get_split_plans(self, run_id: str) -> dict[str, tuple[int, int]]:
        """Every device's ``(head_blocks, tail_blocks)`` in the run."""
        key = keys.split_plans(run_id)
        with _unavailable("get_split_plans"):
            raw = await self._redis.hgetall(key)
        plans: dict[str, tuple[int, int]] = {}
        for node, value in raw.items():
            plan = _decode(value, key)
            if not (isinstance(plan, list) and len(plan) == 2 and all(type(b) is int for b in plan)):
                raise UnavailableError(f"Redis key {key!r} holds a malformed split plan")
            plans[_text(node)] = (plan[0], plan[1])
        return plans

    # -------------------------------------------------------------------------------- liveness

    async def heartbeat(self, node_id: str, ttl_s: float) -> None:
        """Mark the node alive for ``ttl_s`` seconds (> 0)."""
        if not (isinstance(ttl_s, int | float) and math.isfinite(ttl_s) and ttl_s > 0):
            raise ConfigError(f"ttl_s must be a positive number, got {ttl_s!r}")
        with _unavailable("heartbeat"):
            await self._redis.set(keys.heartbeat(node_id), "1", px=max(1, round(ttl_s * 1000)))

    async def alive(self, node_ids: Iterable[str]) -> set[str]:
        """The nodes among ``node_ids`` whose heartbeat has not expired."""
        ids = list(node_ids)
        if not ids:
            return set()
        heartbeat_keys = [keys.heartbeat(n) for n in ids]
        with _unavailable("alive"):
            values = await self._redis.mget(heartbeat_keys)
        return {n for n, v in zip(ids, values, strict=True) if v is not None}

    # ---------------------------------------------------------------------------------- events

    async def push_event(self, run_id: str, event: Mapping[str, Any], max_len: int = 1000) -> None:
        """Append a JSON event to the run's log, keeping only the newest ``max_len`` (≥ 1)."""
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise ConfigError(f"max_len must be an integer >= 1, got {max_len!r}")
        key, value = keys.events(run_id), _encode(dict(event), "event")
        with _unavailable("push_event"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, value)
                pipe.ltrim(key, -max_len, -1)
                await pipe.execute()

    async def recent_events(self, run_id: str, n: int) -> list[dict[str, Any]]:
        """The newest ``n`` events of the run, oldest first."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"n must be an integer >= 0, got {n!r}")
        key = keys.events(run_id)
        if n == 0:
            return []
        with _unavailable("recent_events"):
            raw = await self._redis.lrange(key, -n, -1)
        return [_object(_decode(value, key), key) for value in raw]

    # ----------------------------------------------------------------------------- round state

    async def set_round_state(self, run_id: str, payload: Mapping[str, Any]) -> None:
        """Replace the run's live round state (a JSON object)."""
        await self._set(keys.round_state(run_id), dict(payload))

    async def get_round_state(self, run_id: str) -> dict[str, Any] | None:
        """The run's live round state, or ``None``."""
        return await self._get_object(keys.round_state(run_id))

    # -------------------------------------------------------------------------- flush recovery

    async def is_empty(self, run_id: str) -> bool:
        """Whether the run's assignment and trust are both gone (Redis was flushed or never set)."""
        with _unavailable("is_empty"):
            return await self._redis.exists(keys.assignment(run_id), keys.trust(run_id)) == 0

    async def restore(
        self,
        run_id: str,
        *,
        assignment: Mapping[str, str],
        clusters: Mapping[str, int],
        trust: Mapping[str, float],
        split_plans: Mapping[str, tuple[int, int]],
    ) -> None:
        """Write the run's assignment, clusters, trust and split plans back in one transaction.

        Values are replaced, not merged; afterwards :meth:`is_empty` is ``False``.
        """
        values = {
            keys.assignment(run_id): _encode(_str_map(assignment), "assignment"),
            keys.clusters(run_id): _encode(_int_map(clusters), "clusters"),
            keys.trust(run_id): _encode(_float_map(trust), "trust"),
        }
        plans_key = keys.split_plans(run_id)
        plans: dict[FieldT, EncodableT] = {node: _plan(h, t) for node, (h, t) in split_plans.items()}
        with _unavailable("restore"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.mset(values)
                pipe.delete(plans_key)
                if plans:
                    pipe.hset(plans_key, mapping=plans)
                await pipe.execute()

    async def clear_run(self, run_id: str) -> int:
        """Delete every key of the run (when it ends); returns how many were deleted."""
        deleted = 0
        with _unavailable("clear_run"):
            async for key in self._redis.scan_iter(match=keys.run_pattern(run_id), count=500):
                deleted += await self._redis.delete(key)
        return deleted

    # -------------------------------------------------------------------------------- plumbing

    async def _set(self, key: str, value: dict[str, Any]) -> None:
        encoded = _encode(value, key)
        with _unavailable("set"):
            await self._redis.set(key, encoded)

    async def _get_object(self, key: str) -> dict[str, Any] | None:
        with _unavailable("get"):
            raw = await self._redis.get(key)
        return None if raw is None else _object(_decode(raw, key), key)


@contextmanager
def _unavailable(what: str) -> Iterator[None]:
    """Map Redis connection errors and timeouts to :class:`UnavailableError`."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as e:
        raise UnavailableError(f"Redis unavailable ({what}): {type(e).__name__}") from e


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _encode(value: object, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{what} is not JSON-serialisable: {e}") from e


def _decode(raw: str | bytes, key: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as e:
        raise UnavailableError(f"corrupt JSON value at Redis key {key!r}") from e


def _object(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UnavailableError(f"Redis key {key!r} does not hold a JSON object")
    return value


def _str_map(mapping: Mapping[str, str]) -> dict[str, str]:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise ConfigError("assignment must map node ids to edge ids (strings)")
    return dict(mapping)


def _int_map(mapping: Mapping[str, int]) -> dict[str, int]:
    if not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in mapping.items()
    ):
        raise ConfigError("clusters must map node ids to integer cluster ids")
    return dict(mapping)


def _float_map(mapping: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in mapping.items():
        if (
            not isinstance(k, str)
            or isinstance(v, bool)
            or not isinstance(v, int | float)
            or not math.isfinite(v)
        ):
            raise ConfigError("trust must map node ids to finite numbers")
        out[k] = float(v)
    return out


def _plan(head_blocks: int, tail_blocks: int) -> str:
    for name, value in (("head_blocks", head_blocks), ("tail_blocks", tail_blocks)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return json.dumps([head_blocks, tail_blocks])
