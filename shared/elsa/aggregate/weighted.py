"""Weighted means of adapter states, key by key (DESIGN §2.8, §2.9).

Keys are global (block index + path), so states of devices with different cuts, or partial
states (head/tail from devices, body from edge sessions), combine correctly: each key is
averaged over the states that hold it, with their weights renormalised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from elsa.errors import AdapterMismatchError, ConfigError
from elsa.model.adapters import AdapterState


def weighted_mean(states: Sequence[tuple[Mapping[str, torch.Tensor], float]]) -> AdapterState:
    """Per-key weighted mean of ``(state, weight)`` pairs; returns new float32 tensors.

    Weights must be >= 0; a key whose holders all have weight 0 keeps the unweighted mean of its
    holders (so a fully-quarantined group still has a defined model). Shapes must agree per key
    (AdapterMismatchError otherwise). Inputs are not mutated.
    """
    if not states:
        raise ConfigError("weighted_mean needs at least one state")
    if any(w < 0 for _, w in states):
        raise ConfigError("aggregation weights must be >= 0")
    sums: dict[str, torch.Tensor] = {}
    totals: dict[str, float] = {}
    plain: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for state, weight in states:
        for key, value in state.items():
            v = value.detach().to(torch.float32)
            if key in plain and plain[key].shape != v.shape:
                raise AdapterMismatchError(f"{key}: shape {tuple(v.shape)} != {tuple(plain[key].shape)}")
            if key not in plain:
                plain[key] = v.clone()
                sums[key] = v * weight
                totals[key] = weight
                counts[key] = 1
            else:
                plain[key] += v
                sums[key] += v * weight
                totals[key] += weight
                counts[key] += 1
    return {
        key: (sums[key] / totals[key]) if totals[key] > 0 else (plain[key] / counts[key])
        for key in sorted(plain)
    }
