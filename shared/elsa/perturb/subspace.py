"""The semantic subspace at a cut (DESIGN §3): top principal directions of public probe activations.

Every node computes U from the same public probe activations of the same base model, so every
node must get the same U. :func:`semantic_subspace` is a pure function computed in float64
(covariance of the centred activations, symmetric eigendecomposition, fixed sign convention)
and rounded to float32 at the end; :func:`subspace_digest` lets nodes compare what they got.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from elsa.errors import ConfigError, TensorError

__all__ = ["semantic_subspace", "subspace_digest"]


def semantic_subspace(activations: torch.Tensor, rank: int) -> torch.Tensor:
    """Top-``rank`` principal directions of ``activations``: U of shape ``(d, rank)``, float32, CPU.

    ``activations`` has shape ``(..., d)`` (e.g. ``(N, d)`` tokens or ``(B, T, d)``; leading
    dimensions are flattened into N ≥ 2 samples; padding should be removed by the caller); any
    floating dtype/device; not mutated. The columns of U are orthonormal eigenvectors of the
    covariance of the centred samples, ordered by decreasing eigenvalue, each signed so that its
    largest-magnitude entry (lowest index on ties) is positive.

    Determinism: same input bytes ⇒ bitwise-identical U on the same software stack (numpy's
    LAPACK/BLAS); the float64 computation is rounded to float32 so last-bit differences between
    BLAS builds almost never survive, but they can (e.g. an entry on a rounding boundary), and
    directions of (near-)equal eigenvalues are only defined up to rotation. Compare
    :func:`subspace_digest` across nodes when in doubt. Raises ConfigError unless
    ``1 <= rank <= min(d, N - 1)`` and TensorError for non-finite or non-floating input.
    """
    if not activations.is_floating_point():
        raise TensorError(f"activations must be floating, got {activations.dtype}")
    if activations.dim() < 2:
        raise TensorError(f"activations must have shape (..., d), got {tuple(activations.shape)}")
    d = int(activations.shape[-1])
    x = activations.detach().to(device="cpu", dtype=torch.float64).reshape(-1, d).numpy()
    n = x.shape[0]
    if not 1 <= rank <= min(d, n - 1):
        raise ConfigError(f"subspace rank must be in [1, min(d={d}, N-1={n - 1})], got {rank}")
    if not np.isfinite(x).all():
        raise TensorError("activations contain NaN or Inf")
    centred = x - x.mean(axis=0, keepdims=True)
    covariance = centred.T @ centred / (n - 1)
    covariance = (covariance + covariance.T) / 2.0  # exactly symmetric before eigh
    _, vectors = np.linalg.eigh(covariance)  # ascending eigenvalues
    top = vectors[:, ::-1][:, :rank]
    pivots = np.argmax(np.abs(top), axis=0)  # first index of the largest magnitude
    signs = np.where(top[pivots, np.arange(rank)] < 0, -1.0, 1.0)
    u = np.ascontiguousarray(top * signs[None, :], dtype=np.float32)
    return torch.from_numpy(u)


def subspace_digest(u: torch.Tensor) -> str:
    """Hex blake2b-128 of U's float32 bytes and shape: equal digests ⇒ identical subspaces."""
    arr = np.ascontiguousarray(u.detach().to(device="cpu", dtype=torch.float32).numpy(), dtype="<f4")
    h = hashlib.blake2b(digest_size=16, person=b"elsa.subspace.v1")
    h.update(np.asarray(arr.shape, dtype="<i8").tobytes())
    h.update(arr.tobytes())
    return h.hexdigest()
