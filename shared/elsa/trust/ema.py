"""Trust as an exponential moving average of evidence, and aggregation weights (DESIGN §2.5).

    trust_t = β · trust_{t−1} + (1 − β) · evidence_t        (new nodes start at ``initial``)

A node whose trust is strictly below τ_min is *quarantined*: it keeps training, but its
aggregation weight is 0. Because the EMA keeps moving, a quarantined node whose evidence returns
high recovers above τ_min after a few rounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypeVar

from elsa.errors import ConfigError
from elsa.params import TrustParams

NodeT = TypeVar("NodeT", bound=str)


def update_trust(
    previous: Mapping[NodeT, float], evidence: Mapping[NodeT, float], params: TrustParams
) -> dict[NodeT, float]:
    """One EMA step: returns node → new trust in [0, 1] for every node of either mapping.

    A node with evidence this round gets β·prev + (1 − β)·evidence (prev = ``params.initial`` when
    it is new); a node without evidence this round (it did not report) keeps its previous trust.
    Evidence must lie in [0, 1] (ConfigError otherwise). Inputs are not mutated.
    """
    for node, value in evidence.items():
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ConfigError(f"evidence of {node!r} must be in [0, 1], got {value}")
    out: dict[NodeT, float] = {node: float(value) for node, value in previous.items()}
    for node in sorted(evidence):
        prev = float(previous.get(node, params.initial))
        out[node] = min(max(params.beta * prev + (1.0 - params.beta) * float(evidence[node]), 0.0), 1.0)
    return out


def quarantined(trust: Mapping[NodeT, float], params: TrustParams) -> set[NodeT]:
    """The nodes whose trust is strictly below ``params.tau_min``."""
    return {node for node, value in trust.items() if value < params.tau_min}


def aggregation_weights(
    trust: Mapping[NodeT, float], examples: Mapping[NodeT, int], params: TrustParams
) -> dict[NodeT, float]:
    """Aggregation weight of each node of ``examples`` (DESIGN §2.5): ∝ trust × examples.

    A quarantined node (trust < τ_min) gets 0; a node missing from ``trust`` counts
    ``params.initial``. The weights sum to 1, unless every node has weight 0 (all quarantined or
    no examples): then they are all 0 and the caller decides (``elsa.aggregate.weighted_mean``
    falls back to a plain mean). Example counts must be >= 0. Inputs are not mutated.
    """
    raw: dict[NodeT, float] = {}
    for node in sorted(examples):
        count = examples[node]
        if count < 0:
            raise ConfigError(f"example count of {node!r} must be >= 0, got {count}")
        value = float(trust.get(node, params.initial))
        raw[node] = 0.0 if value < params.tau_min else value * float(count)
    total = sum(raw.values())
    if total <= 0:
        return {node: 0.0 for node in raw}
    return {node: weight / total for node, weight in raw.items()}
