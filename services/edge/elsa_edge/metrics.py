"""The edge's Prometheus metrics: split step latency (compute and the wait for the shared body),
sessions, edge rounds and bytes by direction and kind."""

from __future__ import annotations

from elsa.infra.metrics import ROUND_BUCKETS_S, ServiceMetrics


class EdgeMetrics(ServiceMetrics):
    """Metrics of one edge server."""

    def __init__(self) -> None:
        super().__init__("edge")
        self.step_seconds = self.histogram(
            "elsa_edge_split_step_seconds",
            "body compute of one split step (forward, backward or inference forward)",
            ("phase",),
        )
        self.lock_wait_seconds = self.histogram(
            "elsa_edge_compute_wait_seconds",
            "time a split step waited for the shared body (one model execution at a time)",
            ("phase",),
        )
        self.sessions_opened = self.counter("elsa_edge_sessions_opened", "split sessions opened")
        self.sessions = self.gauge("elsa_edge_sessions", "split sessions currently held")
        self.rounds_served = self.gauge("elsa_edge_rounds_served", "cloud rounds this edge currently serves")
        self.edge_rounds = self.counter("elsa_edge_rounds", "edge rounds aggregated")
        self.edge_round_seconds = self.histogram(
            "elsa_edge_round_aggregation_seconds",
            "from an edge round's first device update to its aggregation",
            buckets=ROUND_BUCKETS_S,
        )
        self.uploads = self.counter(
            "elsa_edge_uploads", "edge models sent to the cloud, by outcome", ("outcome",)
        )
        self.bytes = self.counter(
            "elsa_edge_bytes", "payload bytes by direction (in/out) and kind", ("direction", "kind")
        )
