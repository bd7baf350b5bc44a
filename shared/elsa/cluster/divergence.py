"""Symmetric Kullback-Leibler divergence between fingerprints (DESIGN §2.4).

For Gaussians a = N(μa, Σa), b = N(μb, Σb) in k dimensions, KL(a‖b) + KL(b‖a) has a closed
form in which the log-determinant terms cancel:

    SKL = ½ tr(Σb⁻¹Σa) + ½ tr(Σa⁻¹Σb) + ½ (μa − μb)ᵀ (Σa⁻¹ + Σb⁻¹) (μa − μb) − k

It is symmetric, >= 0, and 0 exactly when the two Gaussians are equal. Results are in nats.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from elsa.cluster.fingerprints import Fingerprint
from elsa.errors import ConfigError

FloatArray = npt.NDArray[np.float64]


def _inverse(sigma: FloatArray) -> FloatArray:
    inv = np.linalg.solve(sigma, np.eye(sigma.shape[0]))
    return np.asarray(0.5 * (inv + inv.T), dtype=np.float64)


def symmetric_kl(a: Fingerprint, b: Fingerprint) -> float:
    """KL(a‖b) + KL(b‖a) of two fingerprints in closed form, in nats (>= 0, clamped at 0).

    Both must have the same dimension k (ConfigError otherwise). Inputs are not mutated.
    """
    if a.dim != b.dim:
        raise ConfigError(f"fingerprints of different dimension: {a.dim} != {b.dim}")
    inv_a, inv_b = _inverse(a.sigma), _inverse(b.sigma)
    diff = a.mu - b.mu
    value = (
        0.5 * float(np.sum(inv_b * a.sigma))
        + 0.5 * float(np.sum(inv_a * b.sigma))
        + 0.5 * float(diff @ (inv_a + inv_b) @ diff)
        - a.dim
    )
    return max(value, 0.0)


def skl_matrix(fingerprints: Sequence[Fingerprint]) -> FloatArray:
    """The (N x N) float64 matrix of :func:`symmetric_kl` between every pair of fingerprints.

    Exactly symmetric with a zero diagonal; entries >= 0. All fingerprints must share one
    dimension k. Each covariance is inverted once. Inputs are not mutated.
    """
    n = len(fingerprints)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float64)
    k = fingerprints[0].dim
    if any(fp.dim != k for fp in fingerprints):
        raise ConfigError(f"fingerprints of different dimensions: {sorted({fp.dim for fp in fingerprints})}")
    mus = np.stack([fp.mu for fp in fingerprints])  # (N x k)
    sigmas = np.stack([fp.sigma for fp in fingerprints])  # (N x k x k)
    invs = np.stack([_inverse(fp.sigma) for fp in fingerprints])  # (N x k x k)
    # traces[i, j] = tr(Σj⁻¹ Σi)   (both symmetric, so an elementwise product sums to the trace)
    traces = np.einsum("jab,iab->ij", invs, sigmas)
    diffs = mus[:, np.newaxis, :] - mus[np.newaxis, :, :]  # (N x N x k): μi − μj
    # maha[i, j] = (μi − μj)ᵀ Σj⁻¹ (μi − μj)
    maha = np.einsum("ija,jab,ijb->ij", diffs, invs, diffs)
    one_way = 0.5 * traces + 0.5 * maha  # KL(i‖j) up to log-det and constant terms
    out = one_way + one_way.T - k
    out = 0.5 * (out + out.T)
    np.fill_diagonal(out, 0.0)
    return np.asarray(np.maximum(out, 0.0), dtype=np.float64)
