"""The edge's background work: join the cloud, poll tasks, prepare rounds, close edge rounds
at their deadline and upload edge models (DESIGN §2.1, §2.8, §2.9)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from elsa.errors import ElsaError, UnavailableError
from elsa.infra.http import CloudClient
from elsa.model.adapters import AdapterState
from elsa.model.split import SplitModel
from elsa.params import SplitParams
from elsa.runtime.config import RunConfig, parse_config
from elsa.runtime.exchange import DeltaSender, catch_up, update_message
from elsa.runtime.profile import measure_block_step_s
from elsa.runtime.rounds import EdgeRound
from elsa.runtime.simulation import load_run_model
from elsa.sketch import weighted_sum
from elsa.wire.control import JoinRequest, ResourceReport, Task
from elsa_edge.settings import EdgeSettings
from elsa_edge.state import EdgeState, ServedRound

logger = logging.getLogger(__name__)


class EdgeWorker:
    """Runs in a background thread for the life of the edge process."""

    def __init__(self, settings: EdgeSettings, state: EdgeState, cloud: CloudClient) -> None:
        self.settings = settings
        self.state = state
        self.cloud = cloud
        self.stop = threading.Event()

    def join(self) -> None:
        """Register with the cloud, retrying until it answers or the worker stops."""
        request = JoinRequest(
            join_secret=self.settings.join_secret,
            role="edge",
            name=self.settings.name,
            url=self.settings.public_url,
            capacity=self.settings.capacity,
        )
        joined = self.cloud.join_until_accepted(request, self.stop)
        if joined is not None:
            self.state.node_id = joined.node_id
            logger.info("joined cloud", extra={"node_id": joined.node_id})

    def run(self) -> None:
        """Join, then poll tasks until stopped (edge-round deadlines are watched in another thread)."""
        self.join()
        watcher = threading.Thread(target=self.watch_deadlines, name="edge-deadlines", daemon=True)
        watcher.start()
        threading.Thread(
            target=self.cloud.heartbeat_until,
            args=(self.stop, self.settings.heartbeat_s),
            name="edge-heartbeat",
            daemon=True,
        ).start()
        seq = 0
        while not self.stop.is_set():
            try:
                seq, task = self.cloud.next_task(seq, self.settings.poll_wait_s)
            except UnavailableError:
                self.stop.wait(1.0)
                continue
            except ElsaError as exc:
                self.state.last_error = f"{exc.code}: {exc.detail}"
                logger.warning("task poll failed", extra={"error": exc.code})
                self.stop.wait(1.0)
                continue
            except Exception as exc:  # the worker outlives any failed poll
                self.state.last_error = f"{type(exc).__name__}: {exc}"
                logger.exception("task poll failed")
                self.stop.wait(1.0)
                continue
            try:
                self.handle(task)
            except ElsaError as exc:
                self.state.last_error = f"{exc.code}: {exc.detail}"
                logger.warning("task failed", extra={"error": exc.code, "run_id": task.run_id})
            except Exception as exc:  # e.g. the cloud vanished mid-request: the worker lives on
                self.state.last_error = f"{type(exc).__name__}: {exc}"
                logger.exception("task failed", extra={"run_id": task.run_id})

    def handle(self, task: Task) -> None:
        """Act on one task."""
        if task.kind == "serve" and task.run_id and task.config is not None and task.round is not None:
            self.prepare_round(task, task.run_id, task.round, task.config)
        elif task.kind == "stop" and task.run_id:
            run_id = task.run_id
            with self.state.state_lock:
                self.state.rounds.pop(run_id, None)
                self.state.previous.pop(run_id, None)
                self.state.models.pop(run_id, None)
                self.state.globals.pop(run_id, None)
                self.state.senders.pop(run_id, None)
                for sid in [s for s, v in self.state.sessions.items() if v.run_id == run_id]:
                    del self.state.sessions[sid]

    def prepare_round(self, task: Task, run_id: str, round_index: int, raw_config: dict[str, Any]) -> None:
        """Load the run's model (once) and the round's start adapter; expect its devices."""
        config = parse_config(raw_config, source=f"run {run_id}")
        model = self.state.models.get(run_id)
        if model is None:
            with self.state.compute_lock:
                model = load_run_model(config, config.resolved_num_labels())
                block_s = measure_block_step_s(model, config)
            self.state.models[run_id] = model
            self.report_block_step(block_s)
        version = task.version or 0
        start = self.global_model(run_id, config, model, version)
        edge_round = EdgeRound(
            run_id,
            round_index,
            tuple(task.devices),
            start,
            config.train_params(),
            clusters=dict(task.clusters),
            trust=dict(task.trust),
            sketch=config.sketch_params(),
            seed=config.seed,
            norm_bound=config.control.norm_bound,
        )
        splits = {d: SplitParams(head_blocks=h, tail_blocks=t) for d, (h, t) in task.splits.items()}
        for split in splits.values():
            model.segments(split)  # ConfigError now for a cut the model cannot take
        with self.state.state_lock:
            current = self.state.rounds.get(run_id)
            # the same round again with new session tokens is a new attempt (the cloud abandoned
            # the round, e.g. it restarted): it replaces the old one and that one's sessions end
            redo = current is not None and current.edge_round.round_index == round_index
            if redo and current is not None and current.tokens == task.session_token_hashes:
                return  # the same task re-delivered
            if current is not None and not redo:
                self.state.previous[run_id] = current
            self.state.rounds[run_id] = ServedRound(
                config,
                model,
                edge_round,
                dict(task.session_token_hashes),
                time.monotonic(),
                splits=splits,
                version=version,
            )
            self.state.senders.setdefault(run_id, DeltaSender(config, perturb=False))
            if redo:  # the previous round's sessions still serve inference
                stale = {round_index}
            else:
                keep = {round_index, current.edge_round.round_index if current else round_index}
                stale = {v.round_index for v in self.state.sessions.values()} - keep
            for sid in [
                s for s, v in self.state.sessions.items() if v.run_id == run_id and v.round_index in stale
            ]:
                del self.state.sessions[sid]
        logger.info(
            "serving a new attempt of round" if redo else "serving round",
            extra={"run_id": run_id, "round": round_index, "devices": len(task.devices)},
        )

    def global_model(self, run_id: str, config: RunConfig, model: SplitModel, version: int) -> AdapterState:
        """The global adapter ``version`` of a run (every key; a copy of what this edge holds)."""
        initial = model.initial_state()
        held, _ = catch_up(
            self.cloud, run_id, version, self.state.globals.get(run_id, (0, initial)), initial, config
        )
        self.state.globals[run_id] = held
        return {k: v.clone() for k, v in held[1].items()}

    def report_block_step(self, block_s: float) -> None:
        """Tell the cloud this edge's per-block step time, for split planning (DESIGN §2.2)."""
        try:
            self.cloud.report_resources(ResourceReport(block_step_s=block_s))
        except ElsaError as exc:
            self.state.last_error = f"{exc.code}: {exc.detail}"
            logger.warning("could not report resources", extra={"error": exc.code})

    def watch_deadlines(self) -> None:
        """Every second until stopped: close edge rounds past their deadline and retry the
        uploads that failed while the cloud was unavailable."""
        while not self.stop.wait(1.0):
            try:
                self.close_overdue_edge_rounds()
                self.retry_uploads()
            except ElsaError as exc:
                self.state.last_error = f"{exc.code}: {exc.detail}"
                logger.warning("closing an edge round failed", extra={"error": exc.code})
            except Exception as exc:  # the watcher must outlive any failure (e.g. the cloud died mid-upload)
                self.state.last_error = f"{type(exc).__name__}: {exc}"
                logger.exception("closing an edge round failed")

    def close_overdue_edge_rounds(self) -> None:
        """Aggregate edge rounds whose deadline passed with the devices that submitted."""
        now = time.monotonic()
        for run_id, served in list(self.state.rounds.items()):
            for edge_round, first in list(served.first_submit_at.items()):
                if edge_round in served.edge_round.models:
                    continue
                if now - first > self.settings.edge_round_deadline_s:
                    logger.warning(
                        "closing edge round at deadline", extra={"run_id": run_id, "edge_round": edge_round}
                    )
                    finish_edge_round(self.state, self.cloud, served, edge_round)

    def retry_uploads(self) -> None:
        """Upload final edge models whose upload failed because the cloud was unavailable."""
        for served in list(self.state.rounds.values()):
            last = served.config.train.edge_rounds - 1
            if not served.uploaded and not served.upload_failed and last in served.edge_round.models:
                try_upload(self.state, self.cloud, served)


def finish_edge_round(state: EdgeState, cloud: CloudClient, served: ServedRound, edge_round: int) -> None:
    """Aggregate an edge round; after the last one, upload the edge model to the cloud.

    A failed upload does not fail the caller (a device's valid update): the model is kept and
    the worker retries while the cloud is unavailable.
    """
    with state.state_lock:
        if edge_round in served.edge_round.models:
            return
        served.edge_round.aggregate(edge_round)
        first = served.first_submit_at.get(edge_round)
    state.metrics.edge_rounds.inc()
    if first is not None:
        state.metrics.edge_round_seconds.observe(time.monotonic() - first)
    if edge_round == served.config.train.edge_rounds - 1 and not served.uploaded:
        try_upload(state, cloud, served)


def try_upload(state: EdgeState, cloud: CloudClient, served: ServedRound) -> None:
    """Upload the round's edge model; on failure record it (retried later if the cloud was down)."""
    try:
        upload_edge_model(state, cloud, served)
        state.metrics.uploads.labels("sent").inc()
    except ElsaError as exc:
        state.metrics.uploads.labels("failed").inc()
        state.last_error = f"{exc.code}: {exc.detail}"
        served.upload_failed = not isinstance(exc, UnavailableError)
        logger.warning(
            "edge model upload failed",
            extra={
                "run_id": served.edge_round.run_id,
                "round": served.edge_round.round_index,
                "error": exc.code,
            },
        )


def upload_edge_model(state: EdgeState, cloud: CloudClient, served: ServedRound) -> None:
    """Send the round's edge model to the cloud: the merged sketches of its clusters plus the
    sketch (with this edge's error feedback) of its body deltas."""
    merged, exact, total, weight = served.edge_round.final_update()
    parts = [(merged, 1.0)] if merged else []
    if exact:
        sender = state.senders.setdefault(served.edge_round.run_id, DeltaSender(served.config, perturb=False))
        parts.append((sender.compress(exact, served.edge_round.round_index), 1.0))
    update = update_message(
        weighted_sum(parts) if parts else {},
        dtype=served.config.sketch_params().table_dtype,
        node_id=state.node_id or "edge",
        run_id=served.edge_round.run_id,
        round_index=served.edge_round.round_index,
        num_examples=total,
        weight=weight,
    )
    state.count_out(
        "adapters_to_cloud",
        cloud.upload_edge_model(served.edge_round.run_id, served.edge_round.round_index, update),
    )
    served.uploaded = True
    logger.info(
        "uploaded edge model",
        extra={"run_id": served.edge_round.run_id, "round": served.edge_round.round_index, "examples": total},
    )
