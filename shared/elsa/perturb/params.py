"""Parameters of SS-OP, the semantic-subspace orthogonal perturbation (DESIGN §3).

Lives here until it moves into :mod:`elsa.params` next to the other records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from elsa.errors import ConfigError


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class PerturbParams:
    """SS-OP strength and subspace rank (DESIGN §3).

    ``kappa`` scales the noise on device→edge activations relative to the RMS of their
    component orthogonal to the semantic subspace (0 disables SS-OP exactly). ``rank`` is the
    dimension r of the semantic subspace U (d × r) estimated from public probe activations.
    ``adapter_kappa`` scales isotropic noise on adapter deltas before sketching relative to
    each tensor's RMS (0, the default, leaves deltas untouched: the noise is not removed by
    error feedback and costs accuracy, so it is opt-in).
    """

    kappa: float = 1.0
    rank: int = 16
    adapter_kappa: float = 0.0

    def __post_init__(self) -> None:
        _require(
            math.isfinite(self.kappa) and self.kappa >= 0, f"kappa must be finite and >= 0, got {self.kappa}"
        )
        _require(self.rank >= 1, f"subspace rank must be >= 1, got {self.rank}")
        _require(
            math.isfinite(self.adapter_kappa) and self.adapter_kappa >= 0,
            f"adapter_kappa must be finite and >= 0, got {self.adapter_kappa}",
        )

    @property
    def enabled(self) -> bool:
        """Whether activations are perturbed at all (``kappa > 0``)."""
        return self.kappa > 0
