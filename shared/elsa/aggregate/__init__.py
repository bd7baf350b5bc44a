"""Aggregation of adapters in adapter space (and, later, sketch space)."""

from elsa.aggregate.weighted import weighted_mean

__all__ = ["weighted_mean"]
