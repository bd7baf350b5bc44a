"""Prediction-consistency evidence and EMA trust (DESIGN §2.5)."""

from elsa.trust.consistency import (
    SingletonRule,
    consensus,
    evidence,
    evidence_by_cluster,
    js_divergence,
    relative_evidence,
    sharpen,
)
from elsa.trust.ema import aggregation_weights, quarantined, update_trust

__all__ = [
    "SingletonRule",
    "aggregation_weights",
    "consensus",
    "evidence",
    "evidence_by_cluster",
    "js_divergence",
    "quarantined",
    "relative_evidence",
    "sharpen",
    "update_trust",
]
