"""Seeded k-means (k-means++ seeding + Lloyd iterations), used by spectral clustering (DESIGN §2.4).

Own implementation so that results depend only on the inputs and the caller's
:class:`numpy.random.Generator` (never the global RNG), and are identical on every node.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from elsa.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_MAX_ITERATIONS = 300


def _squared_distances(points: FloatArray, centres: FloatArray) -> FloatArray:
    diff = points[:, np.newaxis, :] - centres[np.newaxis, :, :]
    return np.asarray(np.einsum("nkd,nkd->nk", diff, diff), dtype=np.float64)


def _plus_plus(points: FloatArray, k: int, rng: np.random.Generator) -> FloatArray:
    n = points.shape[0]
    centres = [points[int(rng.integers(n))]]
    for _ in range(1, k):
        d2 = _squared_distances(points, np.stack(centres)).min(axis=1)
        total = float(d2.sum())
        if total <= 0.0:  # fewer distinct points than k: reuse one (an empty cluster follows)
            centres.append(points[int(rng.integers(n))])
            continue
        centres.append(points[int(rng.choice(n, p=d2 / total))])
    return np.stack(centres)


def _lloyd(points: FloatArray, centres: FloatArray) -> tuple[IntArray, float]:
    labels = np.full(points.shape[0], -1, dtype=np.int64)
    for _ in range(_MAX_ITERATIONS):
        new_labels = np.asarray(np.argmin(_squared_distances(points, centres), axis=1), dtype=np.int64)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for j in range(centres.shape[0]):
            members = points[labels == j]
            if members.shape[0]:
                centres[j] = members.mean(axis=0)
    inertia = float(_squared_distances(points, centres)[np.arange(points.shape[0]), labels].sum())
    return labels, inertia


def canonical_labels(labels: npt.ArrayLike) -> IntArray:
    """Relabel so that clusters are numbered 0, 1, ... in order of first appearance (new array)."""
    order: dict[int, int] = {}
    raw = np.asarray(labels).reshape(-1)
    return np.array([order.setdefault(int(x), len(order)) for x in raw], dtype=np.int64)


def kmeans(points: npt.ArrayLike, k: int, rng: np.random.Generator, restarts: int = 10) -> IntArray:
    """Cluster (N x D) points into at most ``k`` groups; returns (N,) int64 labels.

    ``restarts`` runs of k-means++ seeding followed by Lloyd iterations, each drawing from
    ``rng``; the run with the lowest inertia wins (the earliest on ties). Labels are canonical
    (:func:`canonical_labels`), so equal partitions give equal arrays. ``points`` is not mutated;
    ``rng`` is advanced.
    """
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ConfigError(f"k-means needs a non-empty (N x D) array, got shape {x.shape}")
    if not 1 <= k <= x.shape[0]:
        raise ConfigError(f"k must be in [1, N={x.shape[0]}], got {k}")
    if restarts < 1:
        raise ConfigError(f"restarts must be >= 1, got {restarts}")
    best: IntArray | None = None
    best_inertia = np.inf
    for _ in range(restarts):
        labels, inertia = _lloyd(x, _plus_plus(x, k, rng))
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    assert best is not None  # restarts >= 1
    return canonical_labels(best)
