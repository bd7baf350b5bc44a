"""Parameters of the count-sketch compression of adapter deltas (DESIGN §3).

Lives here until it moves into :mod:`elsa.params` next to the other records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from elsa.errors import ConfigError

SketchEstimator = Literal["median", "mean"]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class SketchParams:
    """Count sketch of every adapter tensor (DESIGN §3): geometry, decoder, dense fallback.

    ``rows`` hash rows per tensor. ``cols`` fixes the columns of every sketched tensor; when it
    is ``None`` the columns follow from ``compression``: ``cols = floor(n / (compression *
    rows))`` for a tensor of ``n`` elements, so each table holds at most ``n / compression``
    cells and the ratio is never below ``compression``. Tensors with fewer than
    ``dense_below`` elements, and tensors whose table would not be smaller than the tensor,
    travel dense (exactly). ``estimator`` is the decoder used by :func:`unsketch_state` and
    :class:`ErrorFeedback`: ``"mean"`` over rows (the default: linear, so decoding a merged
    sketch equals merging the senders' decodes, which is what makes sender-side error feedback
    converge when edges and the cloud aggregate in sketch space) or ``"median"`` over rows (the
    classic count-sketch estimate, exact on sparse vectors, but with many merged senders the
    stream's error stalls instead of vanishing). ``topk_fraction`` keeps only the
    ``ceil(topk_fraction * n)`` largest-magnitude decoded coordinates (heavy hitters), ``None``
    keeps all. The hash seed is the run seed and is passed separately, never stored here.
    """

    rows: int = 5
    compression: float = 8.0
    cols: int | None = None
    dense_below: int = 256
    estimator: SketchEstimator = "mean"
    topk_fraction: float | None = None

    def __post_init__(self) -> None:
        _require(self.rows >= 1, f"sketch rows must be >= 1, got {self.rows}")
        _require(
            math.isfinite(self.compression) and self.compression >= 1.0,
            f"sketch compression must be a finite number >= 1, got {self.compression}",
        )
        _require(self.cols is None or self.cols >= 1, f"sketch cols must be >= 1, got {self.cols}")
        _require(self.dense_below >= 0, f"dense_below must be >= 0, got {self.dense_below}")
        _require(
            self.estimator in ("median", "mean"),
            f"sketch estimator must be 'median' or 'mean', got {self.estimator!r}",
        )
        _require(
            self.topk_fraction is None or 0.0 < self.topk_fraction <= 1.0,
            f"topk_fraction must be in (0, 1] or None, got {self.topk_fraction}",
        )

    def topk_for(self, length: int) -> int | None:
        """Coordinates kept by heavy-hitter decoding of a tensor of ``length`` elements."""
        if self.topk_fraction is None:
            return None
        return min(length, math.ceil(self.topk_fraction * length))
