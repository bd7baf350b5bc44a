"""Behavioural fingerprints on the public probe set (DESIGN §2.3).

Every node runs the same public probe sentences through its *current* model, pools the final
hidden states to one vector per probe, projects them on a public k-dim basis and summarises the
projections as a Gaussian N(μ, Σ + εI). The basis is the top-k principal directions of the
*base* model's probe representations, computed identically on every node by
:func:`probe_basis`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from elsa.errors import ConfigError

FloatArray = npt.NDArray[np.float64]


def _as_matrix(name: str, values: npt.ArrayLike) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ConfigError(f"{name} must be a 2-D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ConfigError(f"{name} contains non-finite values")
    return array


@dataclass(frozen=True)
class Fingerprint:
    """A device's behavioural fingerprint: the Gaussian N(mu, sigma) of its projected probes.

    ``mu``: (k,) float64; ``sigma``: (k x k) float64, symmetric positive definite (the ridge εI
    is already added); ``num_probes``: Q, the number of probes it summarises. The arrays are
    private read-only copies. Invalid contents raise :class:`ConfigError`.
    """

    mu: FloatArray
    sigma: FloatArray
    num_probes: int

    def __post_init__(self) -> None:
        mu = np.array(self.mu, dtype=np.float64, copy=True)
        sigma = np.array(self.sigma, dtype=np.float64, copy=True)
        if mu.ndim != 1 or mu.shape[0] < 1:
            raise ConfigError(f"fingerprint mu must have shape (k,), got {mu.shape}")
        k = mu.shape[0]
        if sigma.shape != (k, k):
            raise ConfigError(f"fingerprint sigma must have shape ({k}, {k}), got {sigma.shape}")
        if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
            raise ConfigError("fingerprint contains non-finite values")
        if not np.allclose(sigma, sigma.T, rtol=1e-6, atol=1e-9):
            raise ConfigError("fingerprint sigma must be symmetric")
        sigma = 0.5 * (sigma + sigma.T)
        try:
            np.linalg.cholesky(sigma)
        except np.linalg.LinAlgError as exc:
            raise ConfigError("fingerprint sigma must be positive definite") from exc
        if self.num_probes < 1:
            raise ConfigError(f"fingerprint num_probes must be >= 1, got {self.num_probes}")
        mu.flags.writeable = False
        sigma.flags.writeable = False
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "sigma", sigma)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Fingerprint):
            return NotImplemented
        return (
            self.num_probes == other.num_probes
            and np.array_equal(self.mu, other.mu)
            and np.array_equal(self.sigma, other.sigma)
        )

    def __hash__(self) -> int:
        return hash((self.num_probes, self.mu.tobytes(), self.sigma.tobytes()))

    @property
    def dim(self) -> int:
        """k, the dimension of the projected space."""
        return int(self.mu.shape[0])


def probe_basis(representations: npt.ArrayLike, k: int) -> FloatArray:
    """The public k-dim basis: top-k principal directions of the base model's probe representations.

    ``representations``: (Q x d) pooled final representations of the Q probes through the *base*
    model. They are centred and decomposed by SVD (float64). Returns a (d x k) float64 matrix with
    orthonormal columns, ordered by decreasing variance. Sign convention (so every node gets the
    identical basis): in each column, the entry of largest magnitude (first one on ties) is
    positive. Requires ``1 <= k <= min(Q, d)``. The input is not mutated.
    """
    x = _as_matrix("representations", representations)
    q, d = x.shape
    if not 1 <= k <= min(q, d):
        raise ConfigError(f"basis dimension k must be in [1, min(Q, d)] = [1, {min(q, d)}], got {k}")
    centred = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    basis = np.array(vt[:k].T, dtype=np.float64, copy=True)
    pivots = np.argmax(np.abs(basis), axis=0)
    signs = np.sign(basis[pivots, np.arange(k)])
    signs[signs == 0] = 1.0
    return np.asarray(basis * signs[np.newaxis, :], dtype=np.float64)


def gaussian_fingerprint(representations: npt.ArrayLike, basis: npt.ArrayLike, eps: float) -> Fingerprint:
    """Summarise probe representations as a Gaussian on the public basis (DESIGN §2.3).

    ``representations``: (Q x d) pooled final representations of the probes through the node's
    current model, Q >= 2; ``basis``: (d x k) from :func:`probe_basis`; ``eps`` > 0. The
    projections z = representations @ basis (Q x k) give mu = mean(z) (k,) and
    sigma = cov(z, ddof=1) + eps * I (k x k), both float64. Inputs are not mutated.
    """
    x = _as_matrix("representations", representations)
    b = _as_matrix("basis", basis)
    if x.shape[1] != b.shape[0]:
        raise ConfigError(f"representations have width {x.shape[1]} but the basis has {b.shape[0]} rows")
    if x.shape[0] < 2:
        raise ConfigError(f"a fingerprint needs >= 2 probe representations, got {x.shape[0]}")
    if not eps > 0:
        raise ConfigError(f"fingerprint eps must be > 0, got {eps}")
    z = x @ b
    mu = z.mean(axis=0)
    centred = z - mu
    sigma = centred.T @ centred / (z.shape[0] - 1) + eps * np.eye(b.shape[1])
    return Fingerprint(mu=mu, sigma=sigma, num_probes=int(x.shape[0]))
