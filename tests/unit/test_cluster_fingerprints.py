"""Behavioural fingerprints and the public probe basis (DESIGN §2.3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elsa.cluster import Fingerprint, gaussian_fingerprint, pooled_representation, probe_basis
from elsa.errors import ConfigError


def _anisotropic(rng: np.random.Generator, q: int = 500) -> np.ndarray:
    """Q x 4 data with standard deviations 5, 3, 1, 0.5 along the coordinate axes, shifted."""
    return np.asarray(
        rng.normal(size=(q, 4)) * np.array([5.0, 3.0, 1.0, 0.5]) + np.array([10.0, -2.0, 0.0, 1.0])
    )


def test_probe_basis_finds_the_principal_directions_with_a_fixed_sign() -> None:
    x = _anisotropic(np.random.default_rng(0))
    before = x.copy()
    basis = probe_basis(x, 2)
    assert basis.shape == (4, 2)
    np.testing.assert_allclose(basis.T @ basis, np.eye(2), atol=1e-12)
    # top directions are the first two axes; the sign convention makes the big entry positive
    np.testing.assert_allclose(basis, np.eye(4)[:, :2], atol=0.05)
    np.testing.assert_array_equal(x, before)


def test_probe_basis_is_identical_whatever_the_sign_the_svd_returns() -> None:
    x = _anisotropic(np.random.default_rng(1))
    basis = probe_basis(x, 3)
    # negating the data flips every SVD direction; the convention must undo it
    np.testing.assert_allclose(probe_basis(-x, 3), basis, atol=1e-10)
    # probe order does not matter either
    perm = np.random.default_rng(2).permutation(x.shape[0])
    np.testing.assert_allclose(probe_basis(x[perm], 3), basis, atol=1e-10)
    for column in basis.T:
        assert column[np.argmax(np.abs(column))] > 0


def test_probe_basis_rejects_bad_k() -> None:
    x = np.ones((5, 3))
    with pytest.raises(ConfigError):
        probe_basis(x, 0)
    with pytest.raises(ConfigError):
        probe_basis(x, 4)
    with pytest.raises(ConfigError):
        probe_basis(np.ones(3), 1)


def test_gaussian_fingerprint_hand_computed() -> None:
    reps = np.array([[1.0, 2.0, 9.0], [3.0, 2.0, 9.0], [2.0, 5.0, 9.0]])
    basis = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    fp = gaussian_fingerprint(reps, basis, eps=0.5)
    np.testing.assert_allclose(fp.mu, [2.0, 3.0])
    # z = [[1,2],[3,2],[2,5]]; centred [[-1,-1],[1,-1],[0,2]]; cov (ddof=1) = [[1, 0],[0, 3]]
    np.testing.assert_allclose(fp.sigma, [[1.5, 0.0], [0.0, 3.5]])
    assert fp.num_probes == 3
    assert fp.dim == 2
    with pytest.raises(ValueError, match="read-only"):
        fp.mu[0] = 1.0
    assert fp == gaussian_fingerprint(reps.copy(), basis, eps=0.5)
    assert hash(fp) == hash(gaussian_fingerprint(reps.copy(), basis, eps=0.5))
    assert fp != gaussian_fingerprint(reps, basis, eps=0.25)


def test_gaussian_fingerprint_of_constant_representations_is_the_ridge() -> None:
    fp = gaussian_fingerprint(np.ones((4, 3)), np.eye(3), eps=1e-3)
    np.testing.assert_allclose(fp.sigma, 1e-3 * np.eye(3))


def test_fingerprint_validation() -> None:
    with pytest.raises(ConfigError):
        Fingerprint(mu=np.zeros(2), sigma=np.eye(3), num_probes=4)
    with pytest.raises(ConfigError):
        Fingerprint(mu=np.zeros(2), sigma=np.array([[1.0, 0.5], [0.0, 1.0]]), num_probes=4)
    with pytest.raises(ConfigError):
        Fingerprint(mu=np.zeros(2), sigma=np.array([[1.0, 2.0], [2.0, 1.0]]), num_probes=4)
    with pytest.raises(ConfigError):
        Fingerprint(mu=np.array([np.nan, 0.0]), sigma=np.eye(2), num_probes=4)
    with pytest.raises(ConfigError):
        gaussian_fingerprint(np.ones((1, 3)), np.eye(3), eps=1e-3)
    with pytest.raises(ConfigError):
        gaussian_fingerprint(np.ones((4, 3)), np.eye(2), eps=1e-3)
    with pytest.raises(ConfigError):
        gaussian_fingerprint(np.ones((4, 3)), np.eye(3), eps=0.0)


def test_pooled_representation_cls_and_mean() -> None:
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    before = hidden.clone()
    torch.testing.assert_close(
        pooled_representation(hidden, mask, "cls"), torch.tensor([[0.0, 1.0], [6.0, 7.0]])
    )
    torch.testing.assert_close(
        pooled_representation(hidden, mask, "mean"), torch.tensor([[1.0, 2.0], [6.0, 7.0]])
    )
    torch.testing.assert_close(hidden, before)
    with pytest.raises(ConfigError):
        pooled_representation(hidden, mask[:, :2], "mean")
    with pytest.raises(ConfigError):
        pooled_representation(hidden, mask, "max")  # type: ignore[arg-type]
