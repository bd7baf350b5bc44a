"""The cloud's Prometheus metrics: rounds and their durations (observed by the coordinator), and
gauges read from SQL and Redis at each scrape — runs by state, nodes alive, trust of every device,
quarantined devices, clusters, the latest device-mean accuracy and bytes by kind of recent runs."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING

from elsa.errors import ElsaError
from elsa.infra.metrics import ROUND_BUCKETS_S, ServiceMetrics
from elsa.runtime.config import parse_config

if TYPE_CHECKING:
    from elsa_cloud.state import CloudState

logger = logging.getLogger(__name__)

#: runs whose per-run gauges are exported: every active run plus this many most recent others
RECENT_RUNS = 3
_ACTIVE = ("created", "running", "paused")


class CloudMetrics(ServiceMetrics):
    """Metrics of the cloud coordinator."""

    def __init__(self) -> None:
        super().__init__("cloud")
        self.rounds = self.counter("elsa_cloud_rounds", "cloud rounds ended, by outcome", ("outcome",))
        self.round_seconds = self.histogram(
            "elsa_cloud_round_duration_seconds",
            "wall time of a cloud round, start to commit or abandonment",
            ("outcome",),
            buckets=ROUND_BUCKETS_S,
        )
        self.runs = self.gauge("elsa_cloud_runs", "runs by state", ("state",))
        self.nodes = self.gauge(
            "elsa_cloud_nodes", "registered nodes by role and liveness", ("role", "alive")
        )
        self.run_round = self.gauge(
            "elsa_cloud_run_round", "last committed cloud round of a run", ("run_id",)
        )
        self.trust = self.gauge(
            "elsa_cloud_device_trust", "trust score of a device in a run (0..1)", ("run_id", "device")
        )
        self.quarantined = self.gauge(
            "elsa_cloud_quarantined_devices", "devices below tau_min (weight 0) in a run", ("run_id",)
        )
        self.clusters = self.gauge("elsa_cloud_clusters", "behavioural clusters of a run", ("run_id",))
        self.accuracy = self.gauge(
            "elsa_cloud_eval_accuracy",
            "device-mean local accuracy after the latest reported round of a run",
            ("run_id",),
        )
        self.run_bytes = self.gauge(
            "elsa_cloud_run_bytes", "bytes that crossed the wire in a run, by kind", ("run_id", "kind")
        )

    def round_ended(self, outcome: str, seconds: float) -> None:
        """A cloud round was committed ("completed") or given up ("abandoned")."""
        self.rounds.labels(outcome).inc()
        self.round_seconds.labels(outcome).observe(seconds)

    async def refresh(self, state: CloudState) -> None:
        """Re-read the state-derived gauges; a store that is down leaves them as they were."""
        try:
            await self._refresh(state)
        except ElsaError as exc:
            logger.warning("metrics refresh failed", extra={"error": exc.code})

    async def _refresh(self, state: CloudState) -> None:
        runs = await state.store.list_runs()
        counts: dict[str, int] = defaultdict(int)
        for record in runs:
            counts[record.state] += 1
        self.runs.clear()
        for run_state in ("created", "running", "paused", "completed", "stopped", "failed"):
            self.runs.labels(run_state).set(counts.get(run_state, 0))

        nodes = await state.store.list_nodes()
        alive = await state.live.alive([n.node_id for n in nodes])
        self.nodes.clear()
        for role in ("edge", "device"):
            of_role = [n for n in nodes if n.role == role]
            up = sum(1 for n in of_role if n.node_id in alive)
            self.nodes.labels(role, "true").set(up)
            self.nodes.labels(role, "false").set(len(of_role) - up)

        finished = [r for r in runs if r.state not in _ACTIVE][-RECENT_RUNS:]
        shown = [r for r in runs if r.state in _ACTIVE] + finished
        for gauge in (
            self.run_round,
            self.trust,
            self.quarantined,
            self.clusters,
            self.accuracy,
            self.run_bytes,
        ):
            gauge.clear()
        for record in shown:
            run_id = record.run_id
            last = await state.store.last_completed_round(run_id)
            self.run_round.labels(run_id).set(last)
            trust = await state.live.get_trust(run_id)
            for device, score in trust.items():
                self.trust.labels(run_id, device).set(score)
            control = parse_config(record.config, source=f"run {run_id}").control
            below = sum(1 for t in trust.values() if t < control.tau_min) if control.trust else 0
            self.quarantined.labels(run_id).set(below)
            self.clusters.labels(run_id).set(len(set((await state.live.get_clusters(run_id)).values())))
            reported = [m for m in await state.store.list_metrics(run_id) if m.name == "eval_accuracy"]
            if reported:
                latest = max(m.round for m in reported)
                values = [m.value for m in reported if m.round == latest]
                self.accuracy.labels(run_id).set(sum(values) / len(values))
            for kind, nbytes in (await state.store.bytes_by_kind(run_id)).items():
                self.run_bytes.labels(run_id, kind).set(nbytes)
