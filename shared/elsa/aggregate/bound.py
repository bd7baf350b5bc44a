"""Norm bounding of updates before they are averaged (robust aggregation, DESIGN §2.5).

A device that sends a huge update (the classic Gaussian-noise attack) moves a weighted mean by
its size, and in sketch space its collisions spread that noise over every tensor of its cluster
(measured with 8 elements per cell: a noise device's honest edge-mates lost trust with it). Trust
quarantines such a device after a round or two; bounding each update's norm to a multiple of
the median norm of its peers limits the damage before that, and leaves honest updates (similar
norms: every device runs the same number of steps) untouched.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import TypeVar

from elsa.errors import ConfigError

NodeT = TypeVar("NodeT", bound=str)


def norm_bound_scales(norms: Mapping[NodeT, float], factor: float) -> dict[NodeT, float]:
    """Per node, the factor in (0, 1] that brings its update norm to at most ``factor`` × the
    median norm of ``norms`` (1.0 for every node when ``factor`` is 0 — off —, when fewer than
    three nodes report, or when the median is 0). ConfigError for a negative or non-finite
    norm or factor. Inputs are not mutated.
    """
    if not (math.isfinite(factor) and factor >= 0):
        raise ConfigError(f"norm bound factor must be finite and >= 0, got {factor}")
    for node, value in norms.items():
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"update norm of {node!r} must be finite and >= 0, got {value}")
    if factor == 0 or len(norms) < 3:
        return dict.fromkeys(norms, 1.0)
    bound = factor * statistics.median(norms.values())
    if bound <= 0:
        return dict.fromkeys(norms, 1.0)
    return {node: min(1.0, bound / value) if value > 0 else 1.0 for node, value in norms.items()}
