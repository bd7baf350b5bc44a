"""The device agent's loop (DESIGN §2.1, §2.7-2.9): join, probe edges, pull tasks, train.

Raw text and labels stay here; only cut tensors (to the edge) and adapters leave the process.
The data partition is derived locally from the run configuration and this device's partition
index, exactly as the simulation runtime derives it, so both runtimes train the same model.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import psutil

from elsa.errors import AuthError, ElsaError, NotFoundError, UnavailableError
from elsa.infra.http import CloudClient, EdgeClient, HttpCutLink
from elsa.model.adapters import AdapterState, select
from elsa.model.split import SplitModel
from elsa.params import SplitParams
from elsa.runtime.config import RunConfig, parse_config
from elsa.runtime.control import probe_message
from elsa.runtime.exchange import catch_up, read_broadcast, update_message
from elsa.runtime.nodes import DeviceData, DeviceNode, evaluate_device
from elsa.runtime.privacy import RunPrivacy
from elsa.runtime.probing import load_probes, probe_report, public_basis
from elsa.runtime.profile import measure_block_step_s, model_profile
from elsa.runtime.simulation import load_run_model, make_device, prepare_data, tokenise_dataset
from elsa.wire.control import JoinRequest, LinkProbe, MetricsReport, ModelFootprint, ResourceReport, Task
from elsa_client.metrics import DeviceMetrics
from elsa_client.settings import ClientSettings

logger = logging.getLogger(__name__)


@dataclass
class DeviceRun:
    """This device's state for one run (kept across its cloud rounds)."""

    config: RunConfig
    model: SplitModel
    device: DeviceNode
    test: DeviceData
    probes: DeviceData
    basis: np.ndarray
    privacy: RunPrivacy
    #: the latest global adapter version this device holds (all keys), for sketched deltas
    global_version: int = 0
    global_model: AdapterState = field(default_factory=dict)


@dataclass
class AgentStatus:
    """What ``/status`` shows."""

    node_id: str | None = None
    phase: str = "starting"
    run_id: str | None = None
    round: int | None = None
    edge_url: str | None = None
    examples: int | None = None
    last_metrics: dict[str, float] = field(default_factory=dict)
    links: list[dict[str, Any]] = field(default_factory=list)
    last_error: str | None = None


def describe(exc: BaseException) -> str:
    """What ``/status`` shows of an error: ``code: detail`` for ELSA errors, else its type and text."""
    if isinstance(exc, ElsaError):
        return f"{exc.code}: {exc.detail}"
    return f"{type(exc).__name__}: {exc}"


class DeviceAgent:
    """Runs in a background thread for the life of the device process."""

    def __init__(self, settings: ClientSettings, cloud: CloudClient) -> None:
        self.settings = settings
        self.cloud = cloud
        self.status = AgentStatus()
        self.runs: dict[str, DeviceRun] = {}
        self.stop = threading.Event()
        self.metrics = DeviceMetrics()

    def run(self) -> None:
        """Join, probe, then pull and execute tasks until stopped."""
        self._join()
        threading.Thread(
            target=self.cloud.heartbeat_until,
            args=(self.stop, self.settings.heartbeat_s),
            name="device-heartbeat",
            daemon=True,
        ).start()
        self._probe_edges()
        seq = 0
        while not self.stop.is_set():
            self.status.phase = "polling"
            try:
                seq, task = self.cloud.next_task(seq, self.settings.poll_wait_s)
            except UnavailableError:
                self.stop.wait(1.0)
                continue
            except Exception as exc:  # the agent outlives any failed poll
                self.status.last_error = describe(exc)
                logger.warning("task poll failed", extra={"error": self.status.last_error})
                self.stop.wait(1.0)
                continue
            try:
                self.handle(task)
            except Exception as exc:
                # a failed task (its edge died, the cloud went away) ends that task only: the
                # device stays up, shows why in /status and takes the next task
                self.status.last_error = describe(exc)
                self.metrics.rounds.labels("failed").inc()
                log = logger.warning if isinstance(exc, ElsaError) else logger.exception
                log(
                    "task failed",
                    extra={"error": self.status.last_error, "run_id": task.run_id, "round": task.round},
                )

    def _join(self) -> None:
        request = JoinRequest(
            join_secret=self.settings.join_secret,
            role="device",
            name=self.settings.device_name,
            memory_bytes=self.settings.memory_bytes,
        )
        joined = self.cloud.join_until_accepted(request, self.stop)
        if joined is not None:
            self.status.node_id = joined.node_id
            logger.info("joined cloud", extra={"node_id": joined.node_id})

    def _probe_edges(self, model: ModelFootprint | None = None, block_step_s: float | None = None) -> None:
        """Measure RTT and throughput to every edge and report them with this device's
        resources (DESIGN §2.1); with a run's model footprint once the run is loaded."""
        self.status.phase = "probing"
        probes: list[LinkProbe] = []
        try:
            edges = self.cloud.edges()
        except ElsaError:
            edges = []
        for edge in edges:
            client = EdgeClient(
                str(edge["url"]),
                token=self.cloud.token,
                timeout_s=30.0,
                retries=1,
                ca_file=self.settings.ca_file,
            )
            try:
                rtt, throughput = client.ping(self.settings.probe_bytes)
                probes.append(LinkProbe(edge_id=str(edge["node_id"]), rtt_s=rtt, throughput_bps=throughput))
            except ElsaError:
                continue
            finally:
                client.close()
        self.status.links = [p.model_dump() for p in probes]
        memory = min(self.settings.memory_bytes, int(psutil.virtual_memory().available))
        report = ResourceReport(memory_bytes=memory, block_step_s=block_step_s, links=probes, model=model)
        try:
            self.cloud.report_resources(report)
        except ElsaError as exc:
            self.status.last_error = f"{exc.code}: {exc.detail}"

    def handle(self, task: Task) -> None:
        """Act on one task."""
        if task.kind == "train" and task.run_id and task.round is not None and task.config is not None:
            self.train_round(task, task.run_id, task.round, task.config)
        elif task.kind == "stop" and task.run_id:
            self.runs.pop(task.run_id, None)
            self.status.phase = "idle"

    def _ensure_run(self, run_id: str, raw_config: dict[str, Any]) -> DeviceRun:
        if run_id in self.runs:
            return self.runs[run_id]
        self.status.phase = "loading"
        config = parse_config(raw_config, source=f"run {run_id}")
        parts, test_ds = prepare_data(config)
        index = self.settings.partition_index
        if index >= len(parts):
            raise ElsaError(f"partition index {index} >= {len(parts)} devices of run {run_id}")
        model = load_run_model(config, config.resolved_num_labels())
        probes = load_probes(model, config)
        privacy = RunPrivacy(model, probes, config)
        device = make_device(config, model, index, parts[index], model.initial_state(), privacy)
        local_test = test_ds.subset(np.arange(index, len(test_ds), len(parts)))
        test = tokenise_dataset(model.task_model, local_test, config.train.max_length)
        basis = public_basis(model, device, probes, config)
        run = DeviceRun(config, model, device, test, probes, basis, privacy, 0, model.initial_state())
        self.runs[run_id] = run
        self.status.examples = device.num_examples
        self._report_footprint(run_id, run)
        return run

    def _report_footprint(self, run_id: str, run: DeviceRun) -> None:
        """Measure this device's block step time and the run model's footprint, re-probe the
        edges, and report it all so the cloud can plan this device's cut (DESIGN §2.2)."""
        self.status.phase = "profiling"
        block_s = measure_block_step_s(run.model, run.config)
        footprint = ModelFootprint(run_id=run_id, **asdict(model_profile(run.model, run.config)))
        self._probe_edges(footprint, block_s)

    def _open_session(
        self, edge: EdgeClient, run_id: str, round_index: int, device_id: str, token: str
    ) -> str:
        """Open the split session, waiting while the edge is still preparing the round (it does
        not serve the round yet, or still serves an abandoned attempt of it, whose session tokens
        differ from this one's)."""
        give_up = time.monotonic() + self.settings.session_open_wait_s
        while True:
            try:
                return edge.open_session(run_id, round_index, device_id, token)
            except (NotFoundError, AuthError):
                if time.monotonic() > give_up or self.stop.is_set():
                    raise
                self.stop.wait(0.5)

    def _observe_round(self, metrics: dict[str, float], counts: dict[str, int]) -> None:
        self.metrics.rounds.labels("reported").inc()
        self.metrics.round_seconds.observe(metrics["round_s"])
        self.metrics.train_loss.set(metrics["train_loss"])
        for name in ("accuracy", "loss"):
            if f"eval_{name}" in metrics:
                self.metrics.evaluation.labels(name).set(metrics[f"eval_{name}"])
        for kind, nbytes in counts.items():
            self.metrics.bytes.labels(kind).inc(nbytes)

    def train_round(self, task: Task, run_id: str, round_index: int, raw_config: dict[str, Any]) -> None:
        """One cloud round: start model, tau2 edge rounds of tau1 steps, local evaluation, report."""
        run = self._ensure_run(run_id, raw_config)
        config, device = run.config, run.device
        self.status.phase, self.status.run_id, self.status.round = "training", run_id, round_index
        self.status.edge_url = task.edge_url
        if not task.edge_url or not task.session_token:
            raise ElsaError("train task without an edge or session token")
        started = time.perf_counter()
        probe_bytes = 0
        split = SplitParams(*task.split) if task.split is not None else config.split_params()
        run.privacy.check(split.head_blocks, task.subspace_digest)
        if split != device.segments.split:
            outgoing = run.privacy.noise(split.head_blocks, self.settings.partition_index)
            device.resplit(
                run.model.segments(split), run.model.initial_state(), config.train_params(), outgoing
            )
        (run.global_version, run.global_model), cloud_bytes = catch_up(
            self.cloud,
            run_id,
            task.version or 0,
            (run.global_version, run.global_model),
            run.model.initial_state(),
            config,
        )
        device.start_round(run.global_model)
        edge = EdgeClient(task.edge_url, timeout_s=300.0, ca_file=self.settings.ca_file)
        try:
            session_id = self._open_session(edge, run_id, round_index, device.device_id, task.session_token)
            device.link = HttpCutLink(edge, session_id, config.transport_params())
            metrics: dict[str, float] = {}
            if self.settings.evaluate:
                self.status.phase = "evaluating"
                for name, value in evaluate_device(device, run.test, self.settings.eval_batch_size).items():
                    metrics[f"start_{name}"] = value
            losses: list[float] = []
            train = config.train_params()
            for edge_round in range(train.edge_rounds):
                self.status.phase = f"training edge round {edge_round + 1}/{train.edge_rounds}"
                step0 = ((round_index - 1) * train.edge_rounds + edge_round) * train.local_steps
                stepped = time.perf_counter()
                losses.extend(device.train_steps(train.local_steps, train.batch_size, step0))
                self.metrics.step_seconds.observe((time.perf_counter() - stepped) / max(train.local_steps, 1))
                if edge_round == 0:  # its own model, before edge aggregation mixes it
                    self.status.phase = "probing behaviour"
                    result = probe_report(device, run.probes, run.basis, config, fingerprint=task.fingerprint)
                    probe_bytes = self.cloud.upload_probes(
                        probe_message(result, device.device_id, run_id, round_index)
                    )
                update = update_message(
                    device.make_update(round_index),
                    dtype=config.sketch_params().table_dtype,
                    node_id=device.device_id,
                    run_id=run_id,
                    round_index=round_index,
                    num_examples=device.num_examples,
                    loss=float(np.mean(losses)),
                )
                edge.submit(session_id, edge_round, update)
                self.status.phase = f"waiting for edge round {edge_round + 1}"
                message = edge.edge_model(session_id, edge_round, 20.0, self.settings.edge_model_wait_s)
                model = read_broadcast(message, device.round_start, config.sketch_params(), config.seed)
                device.load_model(select(model, device.keys))
            metrics["train_loss"] = float(np.mean(losses))
            if self.settings.evaluate:
                self.status.phase = "evaluating"
                for name, value in evaluate_device(device, run.test, self.settings.eval_batch_size).items():
                    metrics[f"eval_{name}"] = value
            metrics["round_s"] = time.perf_counter() - started
            counts = dict(edge.counts)
            counts["adapters_cloud_to_device"] = cloud_bytes
            counts["probe_reports"] = probe_bytes
            self.cloud.report(MetricsReport(run_id=run_id, round=round_index, metrics=metrics, bytes=counts))
            self.status.last_metrics = metrics
            self._observe_round(metrics, counts)
        finally:
            edge.close()
            device.link = None
        self.status.phase = "idle"
