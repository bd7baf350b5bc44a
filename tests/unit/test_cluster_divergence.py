"""Closed-form symmetric KL between fingerprints (DESIGN §2.4)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.stats import multivariate_normal

from elsa.cluster import Fingerprint, skl_matrix, symmetric_kl
from elsa.errors import ConfigError


def _fp(mu: list[float] | np.ndarray, sigma: list[list[float]] | np.ndarray) -> Fingerprint:
    return Fingerprint(mu=np.asarray(mu, dtype=float), sigma=np.asarray(sigma, dtype=float), num_probes=10)


def test_symmetric_kl_hand_computed_1d() -> None:
    # KL(N(0,1)||N(1,2)) = (ln 2)/2 and KL(N(1,2)||N(0,1)) = (2 - ln 2)/2: the sum is exactly 1
    a, b = _fp([0.0], [[1.0]]), _fp([1.0], [[2.0]])
    assert symmetric_kl(a, b) == pytest.approx(1.0, abs=1e-12)


def test_symmetric_kl_matches_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    a = _fp([0.0, 0.5, -0.3], [[1.0, 0.3, 0.0], [0.3, 0.8, 0.1], [0.0, 0.1, 0.5]])
    b = _fp([0.4, 0.0, 0.2], [[1.5, -0.2, 0.1], [-0.2, 0.6, 0.0], [0.1, 0.0, 0.9]])
    pa, pb = multivariate_normal(a.mu, a.sigma), multivariate_normal(b.mu, b.sigma)
    xa = rng.multivariate_normal(a.mu, a.sigma, size=200_000)
    xb = rng.multivariate_normal(b.mu, b.sigma, size=200_000)
    estimate = float(np.mean(pa.logpdf(xa) - pb.logpdf(xa)) + np.mean(pb.logpdf(xb) - pa.logpdf(xb)))
    exact = symmetric_kl(a, b)
    assert exact > 0.5  # a non-trivial pair
    assert exact == pytest.approx(estimate, rel=0.03)


def test_skl_matrix_entries_match_the_pairwise_function() -> None:
    rng = np.random.default_rng(3)
    fps = []
    for _ in range(5):
        m = rng.normal(size=(4, 4))
        fps.append(_fp(rng.normal(size=4), m @ m.T + 0.5 * np.eye(4)))
    matrix = skl_matrix(fps)
    assert matrix.shape == (5, 5)
    np.testing.assert_array_equal(matrix, matrix.T)
    np.testing.assert_array_equal(np.diag(matrix), 0.0)
    for i in range(5):
        for j in range(5):
            if i != j:
                assert matrix[i, j] == pytest.approx(symmetric_kl(fps[i], fps[j]), rel=1e-9)
                assert matrix[i, j] > 0
    assert skl_matrix([]).shape == (0, 0)


def test_dimension_mismatch_is_rejected() -> None:
    with pytest.raises(ConfigError):
        symmetric_kl(_fp([0.0], [[1.0]]), _fp([0.0, 0.0], np.eye(2)))
    with pytest.raises(ConfigError):
        skl_matrix([_fp([0.0], [[1.0]]), _fp([0.0, 0.0], np.eye(2))])


_K = 3
_vectors = hnp.arrays(np.float64, (_K,), elements=st.floats(-3, 3))
_factors = hnp.arrays(np.float64, (_K, _K), elements=st.floats(-2, 2))


def _gaussian(mu: np.ndarray, factor: np.ndarray) -> Fingerprint:
    return _fp(mu, factor @ factor.T + 0.1 * np.eye(_K))


@settings(max_examples=60, deadline=None)
@given(_vectors, _factors, _vectors, _factors)
def test_symmetric_nonnegative_and_zero_on_identical(
    mu_a: np.ndarray, f_a: np.ndarray, mu_b: np.ndarray, f_b: np.ndarray
) -> None:
    a, b = _gaussian(mu_a, f_a), _gaussian(mu_b, f_b)
    ab, ba = symmetric_kl(a, b), symmetric_kl(b, a)
    assert ab == pytest.approx(ba, rel=1e-9, abs=1e-9)
    assert ab >= 0.0
    assert symmetric_kl(a, a) == pytest.approx(0.0, abs=1e-9)
    assert symmetric_kl(a, _fp(a.mu.copy(), a.sigma.copy())) == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(_vectors, _factors, _vectors, _factors, _factors, _vectors)
def test_invariant_under_a_common_affine_map(
    mu_a: np.ndarray, f_a: np.ndarray, mu_b: np.ndarray, f_b: np.ndarray, m: np.ndarray, c: np.ndarray
) -> None:
    a, b = _gaussian(mu_a, f_a), _gaussian(mu_b, f_b)
    transform = 0.4 * m + 3.0 * np.eye(_K)  # strictly diagonally dominant: invertible, well conditioned

    def mapped(fp: Fingerprint) -> Fingerprint:
        return _fp(transform @ fp.mu + c, transform @ fp.sigma @ transform.T)

    assert symmetric_kl(mapped(a), mapped(b)) == pytest.approx(symmetric_kl(a, b), rel=1e-6, abs=1e-7)
