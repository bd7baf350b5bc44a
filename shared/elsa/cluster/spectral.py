"""Spectral clustering of fingerprints and stable cluster ids (DESIGN §2.4).

Pipeline: symmetric-KL matrix → affinity exp(−SKL/σ) with σ = median off-diagonal SKL →
normalised Laplacian L = I − D^{-1/2} W D^{-1/2} (W = affinity with a zero diagonal) → K by
eigengap → seeded k-means on the row-normalised first K eigenvectors (Ng, Jordan & Weiss,
2001). Deterministic for a given seed.

Choosing K (the rule, with its two documented thresholds in :class:`ClusteringParams`):

1. *Eigengap.* With σ = the median, the affinity between well-separated groups is not small
   (about e⁻¹ ≈ 0.37 for balanced groups), so the classic "largest gap over k = 1..K_max"
   always prefers the trivial gap λ₂ − λ₁ and returns K = 1. Candidates are therefore the
   k in [2, min(K_max, N − 1)] whose gap λ_{k+1} − λ_k is >= ``min_eigengap`` (0.02), best gap
   first (:func:`eigengap_candidates`). Planted balanced groups give gaps of 0.3-0.6, but
   uneven groups (12 devices, Dirichlet α = 0.1 over 5 BBC topics: groups of 1-4 devices) give
   0.03-0.07 at the planted K: a floor of 0.2 found K = 1 on all three seeds measured (ARI 0),
   so the floor only drops near-degenerate gaps and tightness does the rejecting.
2. *Tightness.* For few devices, noise alone produces gaps that large (six devices trained on
   the same data mix gave gaps up to 0.46 on the real MiniLM), but the groups it suggests are
   loose. A candidate's k-means grouping is accepted only if its mean within-cluster affinity
   (:func:`mean_within_affinity`) is >= ``min_within_affinity`` (0.75, i.e. within-cluster SKL
   <= 0.29 σ on average). Planted groups measured 0.83-0.99 (synthetic) and 0.93-0.97 (real
   MiniLM, BBC topics); noise groupings at most 0.62 (synthetic) and 0.65 (real).

The first accepted candidate gives K; if none is accepted, K = 1 (all devices behave alike).
N <= 2 always gives K = 1: with a median σ two nodes carry no information about scale. With σ =
median, the ideal gap of K balanced groups shrinks roughly like 0.63/(0.37 K + 0.63).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from elsa.cluster.divergence import skl_matrix
from elsa.cluster.fingerprints import Fingerprint
from elsa.cluster.kmeans import kmeans
from elsa.errors import ConfigError
from elsa.params import ClusteringParams

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
NodeT = TypeVar("NodeT", bound=str)

DEFAULT_MIN_EIGENGAP = ClusteringParams().min_eigengap
DEFAULT_MIN_WITHIN_AFFINITY = ClusteringParams().min_within_affinity


def _square(name: str, values: npt.ArrayLike) -> FloatArray:
    m = np.asarray(values, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ConfigError(f"{name} must be a square (N x N) matrix, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ConfigError(f"{name} contains non-finite values")
    if not np.allclose(m, m.T, rtol=1e-6, atol=1e-9):
        raise ConfigError(f"{name} must be symmetric")
    return m


def median_sigma(skl: npt.ArrayLike) -> float:
    """σ = the median of the off-diagonal entries of an (N x N) SKL matrix.

    Guards: when the median is 0 (most pairs identical) σ = the mean of the positive off-diagonal
    entries; when there is none (N < 2, or all identical) σ = 1.0 (the affinity is then all ones
    whatever σ).
    """
    m = _square("skl", skl)
    off = m[~np.eye(m.shape[0], dtype=bool)]
    if off.size == 0:
        return 1.0
    sigma = float(np.median(off))
    if sigma > 0:
        return sigma
    positive = off[off > 0]
    return float(positive.mean()) if positive.size else 1.0


def affinity(skl: npt.ArrayLike, sigma: float | None = None) -> FloatArray:
    """Affinity exp(−SKL/σ) of an (N x N) symmetric-KL matrix; σ = :func:`median_sigma` if None.

    Returns an (N x N) float64 symmetric matrix with entries in (0, 1] and ones on the diagonal.
    ``skl`` must be symmetric, finite and >= 0 (ConfigError otherwise); it is not mutated.
    """
    m = _square("skl", skl)
    if np.any(m < -1e-9):
        raise ConfigError("skl entries must be >= 0")
    if sigma is None:
        sigma = median_sigma(m)
    elif not sigma > 0:
        raise ConfigError(f"sigma must be > 0, got {sigma}")
    out = np.exp(-np.maximum(m, 0.0) / sigma)
    out = 0.5 * (out + out.T)
    np.fill_diagonal(out, 1.0)
    return np.asarray(out, dtype=np.float64)


def laplacian_spectrum(affinity_matrix: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Eigen-decomposition of the normalised Laplacian of an affinity matrix.

    The diagonal of the affinity is ignored (no self-loops). Returns ``(eigenvalues (N,),
    eigenvectors (N x N))`` in ascending eigenvalue order, float64; eigenvalues lie in [0, 2].
    A node with zero degree is treated as isolated. The input is not mutated.
    """
    w = _square("affinity", affinity_matrix)
    if np.any(w < 0):
        raise ConfigError("affinity entries must be >= 0")
    w = w.copy()
    np.fill_diagonal(w, 0.0)
    degree = w.sum(axis=1)
    scale = np.zeros_like(degree)
    positive = degree > 0
    scale[positive] = 1.0 / np.sqrt(degree[positive])
    normalised = scale[:, np.newaxis] * w * scale[np.newaxis, :]
    laplacian = np.eye(w.shape[0]) - 0.5 * (normalised + normalised.T)
    values, vectors = np.linalg.eigh(laplacian)
    return np.clip(values, 0.0, 2.0), vectors


def eigengap_candidates(
    eigenvalues: npt.ArrayLike, k_max: int, min_eigengap: float = DEFAULT_MIN_EIGENGAP
) -> list[int]:
    """Candidate cluster counts by eigengap (module docstring), best first.

    ``eigenvalues``: (N,) ascending Laplacian eigenvalues. Returns every k in
    [2, min(k_max, N − 1)] whose gap λ_{k+1} − λ_k is >= ``min_eigengap``, ordered by decreasing
    gap (smaller k first on ties); an empty list means K = 1.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64).reshape(-1)
    if k_max < 1:
        raise ConfigError(f"k_max must be >= 1, got {k_max}")
    upper = min(k_max, lam.shape[0] - 1)
    if upper < 2:
        return []
    gaps = lam[2 : upper + 1] - lam[1:upper]  # gaps[i] = λ_{k+1} − λ_k for k = i + 2 (1-based λ)
    order = sorted(range(gaps.shape[0]), key=lambda i: (-float(gaps[i]), i))
    return [i + 2 for i in order if gaps[i] >= min_eigengap]


def mean_within_affinity(affinity_matrix: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Mean affinity over pairs i != j in the same cluster (1.0 when no cluster has two members)."""
    w = np.asarray(affinity_matrix, dtype=np.float64)
    lab = np.asarray(labels).reshape(-1)
    same = (lab[:, np.newaxis] == lab[np.newaxis, :]) & ~np.eye(lab.shape[0], dtype=bool)
    return float(w[same].mean()) if same.any() else 1.0


def _embed_and_group(vectors: FloatArray, k: int, seed: int, restarts: int) -> IntArray:
    embedding = vectors[:, :k]
    norms = np.linalg.norm(embedding, axis=1, keepdims=True)
    embedding = embedding / np.where(norms > 0, norms, 1.0)
    return kmeans(embedding, k, np.random.default_rng(seed), restarts=restarts)


def spectral_clusters(
    affinity_matrix: npt.ArrayLike,
    k_max: int,
    seed: int,
    *,
    min_eigengap: float = DEFAULT_MIN_EIGENGAP,
    min_within_affinity: float = DEFAULT_MIN_WITHIN_AFFINITY,
    kmeans_restarts: int = 10,
) -> IntArray:
    """Spectral clustering of an (N x N) affinity matrix; returns (N,) int64 labels 0..K−1.

    For each candidate K of :func:`eigengap_candidates` (best gap first), the rows of the first K
    eigenvectors of the normalised Laplacian are normalised to unit length and grouped by
    :func:`elsa.cluster.kmeans.kmeans` with ``numpy.random.default_rng(seed)``; the first
    grouping whose :func:`mean_within_affinity` is >= ``min_within_affinity`` is returned (see the
    module docstring). No candidate, or none tight enough, gives K = 1 (all zeros). Labels are
    numbered in order of first appearance (node 0 is in cluster 0), so the result is a pure
    function of the arguments. The input is not mutated.
    """
    w = _square("affinity", affinity_matrix)
    n = w.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    values, vectors = laplacian_spectrum(w)
    for k in eigengap_candidates(values, k_max, min_eigengap):
        labels = _embed_and_group(vectors, k, seed, kmeans_restarts)
        if mean_within_affinity(w, labels) >= min_within_affinity:
            return labels
    return np.zeros(n, dtype=np.int64)


def cluster_fingerprints(fingerprints: Sequence[Fingerprint], params: ClusteringParams) -> IntArray:
    """DESIGN §2.4 end to end: SKL matrix → affinity (σ = params.sigma or median) → spectral
    clusters with ``params``. Returns (N,) int64 labels in the order of ``fingerprints``."""
    skl = skl_matrix(fingerprints)
    return spectral_clusters(
        affinity(skl, params.sigma),
        params.k_max,
        params.seed,
        min_eigengap=params.min_eigengap,
        min_within_affinity=params.min_within_affinity,
        kmeans_restarts=params.kmeans_restarts,
    )


def match_cluster_ids(
    previous: Mapping[NodeT, int], new_labels: Mapping[NodeT, int], *, min_fresh_id: int = 0
) -> dict[NodeT, int]:
    """Stable cluster ids across re-clusterings (DESIGN §2.4).

    ``previous``: node → cluster id of the last clustering (may be empty); ``new_labels``: node →
    label of the new clustering (arbitrary integers). New clusters are matched one-to-one to
    previous ids by maximum overlap (number of shared nodes; Hungarian algorithm,
    ``scipy.optimize.linear_sum_assignment``); a new cluster matched with overlap > 0 keeps that
    id, every other new cluster gets a fresh id in order of its smallest node: max(previous ids + 1,
    ``min_fresh_id``), then + 1, ... (pass the next never-used id as ``min_fresh_id`` so retired
    ids are not reused). Deterministic: rows/columns are ordered by smallest node / id. Returns
    node → id for every node of ``new_labels``; inputs are not mutated.
    """
    groups: dict[int, list[NodeT]] = {}
    for node in sorted(new_labels):
        groups.setdefault(int(new_labels[node]), []).append(node)
    new_order = sorted(groups, key=lambda label: groups[label][0])
    old_ids = sorted({int(v) for v in previous.values()})
    mapping: dict[int, int] = {}
    if old_ids and new_order:
        overlap = np.zeros((len(new_order), len(old_ids)), dtype=np.float64)
        column = {cid: j for j, cid in enumerate(old_ids)}
        for i, label in enumerate(new_order):
            for node in groups[label]:
                if node in previous:
                    overlap[i, column[int(previous[node])]] += 1
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            if overlap[i, j] > 0:
                mapping[new_order[i]] = old_ids[j]
    next_id = max((max(old_ids) + 1) if old_ids else 0, min_fresh_id)
    for label in new_order:
        if label not in mapping:
            mapping[label] = next_id
            next_id += 1
    return {node: mapping[int(label)] for node, label in new_labels.items()}
