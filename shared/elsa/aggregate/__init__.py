"""Aggregation of adapters in adapter space, and robust bounds on what is aggregated."""

from elsa.aggregate.bound import norm_bound_scales
from elsa.aggregate.weighted import weighted_mean

__all__ = ["norm_bound_scales", "weighted_mean"]
