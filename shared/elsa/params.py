"""Frozen, self-validating parameter records for every ELSA algorithm.

Algorithms take one of these instead of loose keyword arguments. Each validates itself on
construction and raises :class:`elsa.errors.ConfigError` with a clear message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from elsa.errors import ConfigError

WireDType = Literal["fp32", "fp16", "bf16"]
Task = Literal["classification", "causal_lm"]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class LoraParams:
    """LoRA on every segment (DESIGN §1, §2.7).

    ``target_modules`` of ``None`` means the family default (attention projections and MLP).
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _require(self.rank >= 1, f"lora rank must be >= 1, got {self.rank}")
        _require(self.alpha > 0, f"lora alpha must be > 0, got {self.alpha}")
        _require(0.0 <= self.dropout < 1.0, f"lora dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class SplitParams:
    """Cut points: the device keeps blocks ``[0, head_blocks)`` and ``[L - tail_blocks, L)``."""

    head_blocks: int = 1
    tail_blocks: int = 1

    def __post_init__(self) -> None:
        _require(self.head_blocks >= 1, f"head_blocks must be >= 1, got {self.head_blocks}")
        _require(self.tail_blocks >= 1, f"tail_blocks must be >= 1, got {self.tail_blocks}")

    def check_fits(self, num_blocks: int) -> None:
        """Raise ConfigError unless at least one body block remains on the edge."""
        _require(
            self.head_blocks + self.tail_blocks < num_blocks,
            f"head_blocks + tail_blocks must leave >= 1 edge block: "
            f"{self.head_blocks} + {self.tail_blocks} >= {num_blocks} blocks",
        )


@dataclass(frozen=True)
class TransportParams:
    """How cut tensors travel (DESIGN §2.7): dtype on the wire and hard size limits."""

    dtype: WireDType = "fp16"
    max_message_bytes: int = 256 * 1024 * 1024
    max_tensor_elements: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        _require(self.dtype in ("fp32", "fp16", "bf16"), f"unknown wire dtype {self.dtype!r}")
        _require(self.max_message_bytes > 0, "max_message_bytes must be > 0")
        _require(self.max_tensor_elements > 0, "max_tensor_elements must be > 0")


@dataclass(frozen=True)
class TrainParams:
    """Optimisation and the round structure (DESIGN §2): tau1 = local_steps, tau2 = edge_rounds."""

    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 16
    max_length: int = 64
    local_steps: int = 5
    edge_rounds: int = 2
    cloud_rounds: int = 3
    head_learning_rate: float | None = None

    def __post_init__(self) -> None:
        _require(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        _require(self.weight_decay >= 0, "weight_decay must be >= 0")
        _require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _require(self.max_length >= 2, f"max_length must be >= 2, got {self.max_length}")
        _require(self.local_steps >= 1, f"local_steps must be >= 1, got {self.local_steps}")
        _require(self.edge_rounds >= 1, f"edge_rounds must be >= 1, got {self.edge_rounds}")
        _require(self.cloud_rounds >= 1, f"cloud_rounds must be >= 1, got {self.cloud_rounds}")


@dataclass(frozen=True)
class PartitionParams:
    """Non-IID partitioning (DESIGN §4): Dirichlet label skew and log-normal quantity skew.

    ``alpha`` = ``None`` means IID label mix; ``quantity_sigma`` = 0 means equal sizes.
    """

    num_parts: int
    alpha: float | None = 0.5
    quantity_sigma: float = 0.0
    min_examples: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        _require(self.num_parts >= 1, f"num_parts must be >= 1, got {self.num_parts}")
        _require(self.alpha is None or self.alpha > 0, f"alpha must be > 0, got {self.alpha}")
        _require(self.quantity_sigma >= 0, "quantity_sigma must be >= 0")
        _require(self.min_examples >= 0, "min_examples must be >= 0")


@dataclass(frozen=True)
class FingerprintParams:
    """Behavioural fingerprints on the public probe set (DESIGN §2.3).

    ``num_probes`` = Q probe sentences, ``basis_dim`` = k public principal directions,
    ``eps`` = ridge added to the k x k covariance (Σ + εI) so every fingerprint is invertible.
    """

    num_probes: int = 256
    basis_dim: int = 32
    eps: float = 1e-3

    def __post_init__(self) -> None:
        _require(self.num_probes >= 2, f"num_probes must be >= 2, got {self.num_probes}")
        _require(self.basis_dim >= 1, f"basis_dim must be >= 1, got {self.basis_dim}")
        _require(self.eps > 0, f"fingerprint eps must be > 0, got {self.eps}")


@dataclass(frozen=True)
class ClusteringParams:
    """Spectral clustering of fingerprints (DESIGN §2.4).

    ``sigma`` = ``None`` means the median off-diagonal symmetric KL. K in ``[1, k_max]``: a k >= 2
    is a candidate when the normalised-Laplacian eigengap ``λ_{k+1} - λ_k`` is at least
    ``min_eigengap``, and is accepted when its k-means grouping has a mean within-cluster affinity
    of at least ``min_within_affinity``; otherwise K = 1 (see :mod:`elsa.cluster.spectral`).
    ``kmeans_restarts`` seeded k-means runs are made and the lowest-inertia one kept. ``eps`` and
    ``basis_dim`` mirror :class:`FingerprintParams` for callers that cluster from raw
    representations.
    """

    k_max: int = 4
    sigma: float | None = None
    eps: float = 1e-3
    seed: int = 0
    basis_dim: int = 32
    min_eigengap: float = 0.02
    min_within_affinity: float = 0.75
    kmeans_restarts: int = 10

    def __post_init__(self) -> None:
        _require(self.k_max >= 1, f"k_max must be >= 1, got {self.k_max}")
        _require(self.sigma is None or self.sigma > 0, f"sigma must be > 0 or None, got {self.sigma}")
        _require(self.eps > 0, f"clustering eps must be > 0, got {self.eps}")
        _require(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        _require(self.basis_dim >= 1, f"basis_dim must be >= 1, got {self.basis_dim}")
        _require(0.0 <= self.min_eigengap <= 2.0, f"min_eigengap must be in [0, 2], got {self.min_eigengap}")
        _require(
            0.0 <= self.min_within_affinity <= 1.0,
            f"min_within_affinity must be in [0, 1], got {self.min_within_affinity}",
        )
        _require(self.kmeans_restarts >= 1, f"kmeans_restarts must be >= 1, got {self.kmeans_restarts}")


@dataclass(frozen=True)
class TrustParams:
    """Prediction-consistency trust (DESIGN §2.5).

    ``trust_t = beta * trust_{t-1} + (1 - beta) * evidence_t``; a node starts at ``initial``;
    trust strictly below ``tau_min`` quarantines it (aggregation weight 0, keeps training).
    """

    beta: float = 0.7
    tau_min: float = 0.5
    initial: float = 1.0

    def __post_init__(self) -> None:
        _require(0.0 <= self.beta < 1.0, f"trust beta must be in [0, 1), got {self.beta}")
        _require(0.0 <= self.tau_min <= 1.0, f"tau_min must be in [0, 1], got {self.tau_min}")
        _require(0.0 <= self.initial <= 1.0, f"initial trust must be in [0, 1], got {self.initial}")


@dataclass(frozen=True)
class AssignmentParams:
    """Latency-aware edge assignment (DESIGN §2.6).

    ``default_edge_capacity``: devices an edge hosts when it reports no capacity of its own.
    ``tie_rel_tol``: bottlenecks within this relative tolerance of the best count as tied, and
    the total cost decides among them. ``max_solver_nodes``: branch-and-bound node budget of each
    MILP solve (deterministic, unlike a time limit); small instances (a few clusters and edges)
    finish well within it and are solved exactly, larger ones get the best solution found.
    """

    default_edge_capacity: int = 16
    tie_rel_tol: float = 1e-9
    max_solver_nodes: int = 500

    def __post_init__(self) -> None:
        _require(
            self.default_edge_capacity >= 1,
            f"default_edge_capacity must be >= 1, got {self.default_edge_capacity}",
        )
        _require(0.0 <= self.tie_rel_tol < 1.0, f"tie_rel_tol must be in [0, 1), got {self.tie_rel_tol}")
        _require(self.max_solver_nodes >= 1, f"max_solver_nodes must be >= 1, got {self.max_solver_nodes}")


@dataclass(frozen=True)
class SplitPlanParams:
    """Resource-aware split planning (DESIGN §2.2).

    ``min_head_blocks`` / ``min_tail_blocks`` bound h and t from below (>= 1: the device always
    keeps the embeddings side and the task head side). ``cut_transfers_per_step``: cut tensors a
    step moves over the device's link (DESIGN counts the two cut tensors).
    """

    min_head_blocks: int = 1
    min_tail_blocks: int = 1
    cut_transfers_per_step: int = 2

    def __post_init__(self) -> None:
        _require(self.min_head_blocks >= 1, f"min_head_blocks must be >= 1, got {self.min_head_blocks}")
        _require(self.min_tail_blocks >= 1, f"min_tail_blocks must be >= 1, got {self.min_tail_blocks}")
        _require(
            self.cut_transfers_per_step >= 0,
            f"cut_transfers_per_step must be >= 0, got {self.cut_transfers_per_step}",
        )


SketchEstimator = Literal["median", "mean"]


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
    keeps all. ``table_dtype`` is the precision tables are rounded to wherever they are made
    (sender, merge), so they travel in it exactly and every receiver decodes what the sender
    meant ("fp16" halves the bytes; its rounding, ~1e-3 relative, is far below the sketch's own
    collision noise). The hash seed is the run seed and is passed separately, never stored here.
    """

    rows: int = 5
    compression: float = 8.0
    cols: int | None = None
    dense_below: int = 256
    estimator: SketchEstimator = "mean"
    topk_fraction: float | None = None
    table_dtype: WireDType = "fp32"

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
        _require(
            self.table_dtype in ("fp32", "fp16", "bf16"),
            f"table_dtype must be fp32, fp16 or bf16, got {self.table_dtype!r}",
        )

    def topk_for(self, length: int) -> int | None:
        """Coordinates kept by heavy-hitter decoding of a tensor of ``length`` elements."""
        if self.topk_fraction is None:
            return None
        return min(length, math.ceil(self.topk_fraction * length))


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
