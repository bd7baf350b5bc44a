"""How a cloud round closes (DESIGN §2.9, §5): collecting the edges' models until every serving
edge uploaded or died, committing the aggregate, and closing the rounds a killed or interrupted
coordinator left open.

The commit point of a round is the SQL row of its global version, written after the version's
files (PEFT weights, ELSA-keyed weights, merged-sketch delta) are complete on disk; the round's
``completed`` state follows it. So a round whose version row exists is committed whatever
happened next, and a round without one is redone from the previous version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Literal

from elsa.errors import ConflictError, UnavailableError
from elsa.infra.sql import SqlStore
from elsa.runtime.config import RunConfig
from elsa.runtime.exchange import broadcast_message
from elsa.runtime.rounds import aggregate_edges
from elsa.sketch import SketchedState
from elsa.wire import encode
from elsa_cloud.settings import CloudSettings
from elsa_cloud.state import CloudState
from elsa_cloud.workflows.vault import save_delta, save_version, start_model

logger = logging.getLogger(__name__)

COLLECT_POLL_S = 0.2
"""How often the collection checks for uploads, dead edges and a stopped run."""


def now() -> datetime:
    """Timezone-aware UTC now (the store never reads the clock itself)."""
    return datetime.now(UTC)


async def collect(
    state: CloudState, settings: CloudSettings, run_id: str, round_index: int, served: list[str]
) -> tuple[bool, set[str]]:
    """Wait until every edge in ``served`` uploaded its model or is dead, the round deadline
    passes, or the run is stopped. Returns (whether it was stopped, the edges found dead). A
    store outage meanwhile only delays the checks.

    An edge is dead once its heartbeat has been missing for a whole ``heartbeat_ttl_s`` (so at
    least twice the TTL after its last sign of life): a flushed Redis loses every heartbeat for a
    moment, and live nodes send their next one within seconds.
    """
    deadline = time.monotonic() + settings.round_deadline_s
    silent_since: dict[str, float] = {}
    uploads = state.uploads[(run_id, round_index)]
    while time.monotonic() < deadline:
        try:
            record = await state.store.get_run(run_id)
            if record is None or record.state == "stopped":
                return True, set()
        except UnavailableError:
            pass
        pending = sorted(e for e in served if e not in uploads)
        if not pending:
            break
        dead = await _dead(state, settings, pending, silent_since)
        if dead == set(pending):
            logger.warning(
                "round closed early: the edges still missing are dead",
                extra={"run_id": run_id, "round": round_index, "edges": pending},
            )
            return False, dead
        await asyncio.sleep(COLLECT_POLL_S)
    return False, set()


async def _dead(
    state: CloudState, settings: CloudSettings, edge_ids: list[str], silent_since: dict[str, float]
) -> set[str]:
    """The edges whose heartbeat has been missing for ``heartbeat_ttl_s`` (``silent_since``:
    when each was first seen without one; updated in place)."""
    try:
        alive = await state.live.alive(edge_ids)
    except UnavailableError:
        return set()
    now_s = time.monotonic()
    for edge_id in edge_ids:
        if edge_id in alive:
            silent_since.pop(edge_id, None)
        else:
            silent_since.setdefault(edge_id, now_s)
    ttl_s = settings.heartbeat_ttl_s
    return {e for e in edge_ids if e in silent_since and now_s - silent_since[e] >= ttl_s}


async def start_version(store: SqlStore, run_id: str, round_index: int) -> int:
    """The global version a round starts from: the previous round's (0 = the initial adapter).

    Versions are numbered by the round that made them and only committed rounds have one, so
    anything else means the stored state is inconsistent (:class:`ConflictError`).
    """
    latest = await store.latest_adapter_version(run_id)
    version = latest.version if latest is not None else 0
    if version != round_index - 1:
        raise ConflictError(
            f"round {round_index} of run {run_id} cannot start: the latest global version is {version}"
        )
    return version


async def commit(
    state: CloudState,
    settings: CloudSettings,
    run_id: str,
    config: RunConfig,
    round_index: int,
    version: int,
    uploads: dict[str, tuple[SketchedState, float]],
) -> None:
    """Aggregate the edge models (``uploads``: edge id -> sketched delta from ``version``, weight),
    store version ``round_index`` (files, then its SQL row: the commit point) and complete the
    round."""
    store = state.store
    await store.set_round_state(run_id, round_index, "aggregating", now())
    start = await start_model(state, settings.adapter_dir, run_id, config, version)
    aggregated, merged = aggregate_edges(uploads, start, config.sketch_params())
    folder, digest, nbytes = await asyncio.to_thread(
        save_version, settings.adapter_dir, run_id, round_index, aggregated, config
    )
    delta = encode(
        broadcast_message(
            dtype=config.sketch_params().table_dtype,
            run_id=run_id,
            round_index=round_index,
            version=round_index,
            sketches=merged,
            base_version=version,
        )
    )
    await asyncio.to_thread(save_delta, settings.adapter_dir, run_id, round_index, delta)
    await store.add_adapter_version(run_id, round_index, round_index, str(folder), digest, nbytes, now())
    state.adapter_cache[(run_id, round_index)] = aggregated
    await store.set_round_state(run_id, round_index, "completed", now())


async def close_interrupted_rounds(
    store: SqlStore, run_id: str
) -> list[tuple[int, Literal["completed", "abandoned"]]]:
    """Close the rounds a previous coordinator left open (the cloud was killed, or a store
    outage interrupted it): a round whose version row exists is completed, any other is
    abandoned (to be redone). Returns each closed round and its new state."""
    closed: list[tuple[int, Literal["completed", "abandoned"]]] = []
    for rnd in await store.list_rounds(run_id):
        if rnd.state not in ("training", "aggregating"):
            continue
        stored = None
        if rnd.state == "aggregating":
            stored = await store.get_adapter_version(run_id, rnd.round)
        target: Literal["completed", "abandoned"] = "completed" if stored is not None else "abandoned"
        await store.set_round_state(run_id, rnd.round, target, now())
        closed.append((rnd.round, target))
    return closed
