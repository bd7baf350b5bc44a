"""The device agent's Prometheus metrics: split step latency, rounds, bytes by kind and the
latest local evaluation."""

from __future__ import annotations

from elsa.infra.metrics import ROUND_BUCKETS_S, ServiceMetrics


class DeviceMetrics(ServiceMetrics):
    """Metrics of one device agent."""

    def __init__(self) -> None:
        super().__init__("client")
        self.step_seconds = self.histogram(
            "elsa_device_split_step_seconds",
            "one split-training step seen from the device (head, both cut exchanges, tail), "
            "the mean over an edge round's steps",
        )
        self.round_seconds = self.histogram(
            "elsa_device_round_duration_seconds",
            "a cloud round on this device, task received to report sent",
            buckets=ROUND_BUCKETS_S,
        )
        self.rounds = self.counter("elsa_device_rounds", "cloud rounds trained, by outcome", ("outcome",))
        self.bytes = self.counter(
            "elsa_device_bytes", "bytes this device sent or received, by kind", ("kind",)
        )
        self.evaluation = self.gauge(
            "elsa_device_eval", "latest local evaluation after a round (accuracy, loss)", ("metric",)
        )
        self.train_loss = self.gauge("elsa_device_train_loss", "mean training loss of the latest round")
