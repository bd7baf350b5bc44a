"""Affinity, eigengap, spectral clustering, ARI and stable cluster ids (DESIGN §2.4)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elsa.cluster import (
    Fingerprint,
    adjusted_rand_index,
    affinity,
    cluster_fingerprints,
    eigengap_candidates,
    gaussian_fingerprint,
    kmeans,
    laplacian_spectrum,
    match_cluster_ids,
    mean_within_affinity,
    median_sigma,
    skl_matrix,
    spectral_clusters,
)
from elsa.errors import ConfigError
from elsa.params import ClusteringParams


def planted_fingerprints(
    groups: int, per_group: int, seed: int, separation: float = 3.0, k: int = 6, q: int = 200
) -> tuple[list[Fingerprint], list[int]]:
    """Devices whose projected probe representations come from ``groups`` equidistant Gaussians."""
    rng = np.random.default_rng(seed)
    centres = np.eye(k)[:groups] * separation
    fps, truth = [], []
    for g in range(groups):
        for _ in range(per_group):
            fps.append(gaussian_fingerprint(rng.normal(size=(q, k)) + centres[g], np.eye(k), 1e-3))
            truth.append(g)
    order = rng.permutation(len(fps))  # interleave the groups
    return [fps[i] for i in order], [truth[i] for i in order]


# --- adjusted Rand index --------------------------------------------------------------------


def test_adjusted_rand_index_hand_computed() -> None:
    # contingency [[2,0,0],[0,1,1]]: index 1, expected 2*1/6, max 3/2 -> (2/3)/(7/6) = 4/7
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(4 / 7)
    # contingency [[2,1],[1,2]]: index 2, expected 6*6/15, max 6 -> -0.4/3.6 = -1/9
    assert adjusted_rand_index([0, 0, 0, 1, 1, 1], [0, 1, 0, 1, 0, 1]) == pytest.approx(-1 / 9)
    assert adjusted_rand_index(["a", "a", "b"], [7, 7, 3]) == 1.0
    assert adjusted_rand_index([0, 0, 0], [1, 1, 1]) == 1.0
    assert adjusted_rand_index([0, 1, 2], [0, 1, 2]) == 1.0
    assert adjusted_rand_index([0, 0, 0], [0, 1, 2]) == 0.0
    with pytest.raises(ConfigError):
        adjusted_rand_index([0, 1], [0])


# --- affinity -------------------------------------------------------------------------------


def test_affinity_uses_the_median_off_diagonal_skl() -> None:
    skl = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 4.0], [2.0, 4.0, 0.0]])
    before = skl.copy()
    assert median_sigma(skl) == 2.0
    out = affinity(skl)
    np.testing.assert_allclose(out, np.exp(-skl / 2.0))
    np.testing.assert_allclose(affinity(skl, sigma=1.0), np.exp(-skl))
    np.testing.assert_array_equal(skl, before)


def test_affinity_guards_a_zero_median() -> None:
    skl = np.zeros((4, 4))
    skl[0, 1] = skl[1, 0] = 3.0  # median of off-diagonal entries is 0
    assert median_sigma(skl) == 3.0
    assert np.all(np.isfinite(affinity(skl)))
    np.testing.assert_array_equal(affinity(np.zeros((3, 3))), np.ones((3, 3)))
    assert median_sigma(np.zeros((1, 1))) == 1.0


def test_affinity_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        affinity(np.zeros((2, 3)))
    with pytest.raises(ConfigError):
        affinity(np.array([[0.0, 1.0], [2.0, 0.0]]))
    with pytest.raises(ConfigError):
        affinity(np.array([[0.0, -1.0], [-1.0, 0.0]]))
    with pytest.raises(ConfigError):
        affinity(np.zeros((2, 2)), sigma=0.0)


# --- eigengap -------------------------------------------------------------------------------


def test_eigengap_candidates_hand_computed() -> None:
    # gaps for k = 2, 3, 4: 0.02, 0.78, 0.10 -> only k = 3 reaches 0.2
    assert eigengap_candidates([0.0, 0.1, 0.12, 0.9, 1.0], k_max=4, min_eigengap=0.2) == [3]
    # K_max = 2 only sees the gap 0.02
    assert eigengap_candidates([0.0, 0.1, 0.12, 0.9, 1.0], k_max=2, min_eigengap=0.2) == []
    # bunched eigenvalues (one population): gaps 0.05, 0.05, 0.10 -> none at 0.2, all at the default
    assert eigengap_candidates([0.0, 0.8, 0.85, 0.9, 1.0], k_max=4, min_eigengap=0.2) == []
    bunched = eigengap_candidates([0.0, 0.8, 0.85, 0.9, 1.0], k_max=4)
    assert bunched[0] == 4 and sorted(bunched) == [2, 3, 4]  # tightness must reject them
    # gaps 0.125, 0.125, 0.25 (exact in binary): best gap first, smaller k first on ties
    assert eigengap_candidates([0.0, 0.5, 0.625, 0.75, 1.0], k_max=4, min_eigengap=0.2) == [4]
    assert eigengap_candidates([0.0, 0.5, 0.625, 0.75, 1.0], k_max=4, min_eigengap=0.1) == [4, 2, 3]
    assert eigengap_candidates([0.0, 0.25, 0.5, 0.75, 1.0], k_max=4, min_eigengap=0.2) == [2, 3, 4]
    # k <= N - 1: two nodes never split
    assert eigengap_candidates([0.0, 0.5], k_max=4) == []
    with pytest.raises(ConfigError):
        eigengap_candidates([0.0, 1.0], k_max=0)


def test_mean_within_affinity_hand_computed() -> None:
    w = np.array([[1.0, 0.9, 0.1], [0.9, 1.0, 0.3], [0.1, 0.3, 1.0]])
    assert mean_within_affinity(w, [0, 0, 1]) == pytest.approx(0.9)
    assert mean_within_affinity(w, [0, 0, 0]) == pytest.approx((0.9 + 0.1 + 0.3) / 3)
    assert mean_within_affinity(w, [0, 1, 2]) == 1.0


def test_a_large_eigengap_with_loose_groups_is_rejected() -> None:
    # Two pairs joined by weak links: the gap suggests K = 2 ... but the pairs themselves are loose
    # (within 0.5) unless they are tight (within 0.95).
    def four(within: float) -> np.ndarray:
        w = np.full((4, 4), 0.05)
        w[0, 1] = w[1, 0] = w[2, 3] = w[3, 2] = within
        np.fill_diagonal(w, 1.0)
        return w

    for within in (0.5, 0.95):
        values, _ = laplacian_spectrum(four(within))
        assert eigengap_candidates(values, k_max=3)[0] == 2
    np.testing.assert_array_equal(spectral_clusters(four(0.95), k_max=3, seed=0), [0, 0, 1, 1])
    np.testing.assert_array_equal(spectral_clusters(four(0.5), k_max=3, seed=0), [0, 0, 0, 0])
    np.testing.assert_array_equal(
        spectral_clusters(four(0.5), k_max=3, seed=0, min_within_affinity=0.4), [0, 0, 1, 1]
    )


def test_laplacian_of_disconnected_blocks_has_one_zero_eigenvalue_per_block() -> None:
    w = np.zeros((5, 5))
    w[:3, :3] = 1.0
    w[3:, 3:] = 1.0
    values, vectors = laplacian_spectrum(w)
    np.testing.assert_allclose(values[:2], 0.0, atol=1e-12)
    assert values[2] > 0.5
    assert vectors.shape == (5, 5)


@pytest.mark.parametrize(("groups", "per_group"), [(2, 6), (3, 4), (4, 3), (3, 2), (2, 3)])
@pytest.mark.parametrize("separation", [1.0, 3.0])
def test_spectral_clustering_recovers_planted_groups_and_their_number(
    groups: int, per_group: int, separation: float
) -> None:
    fps, truth = planted_fingerprints(groups, per_group, seed=groups, separation=separation)
    labels = cluster_fingerprints(fps, ClusteringParams(k_max=4))
    assert len(set(labels.tolist())) == groups
    assert adjusted_rand_index(labels.tolist(), truth) == 1.0


def test_all_similar_devices_form_one_cluster() -> None:
    rng = np.random.default_rng(7)
    fps = [gaussian_fingerprint(rng.normal(size=(200, 6)), np.eye(6), 1e-3) for _ in range(12)]
    labels = cluster_fingerprints(fps, ClusteringParams(k_max=4))
    np.testing.assert_array_equal(labels, np.zeros(12, dtype=np.int64))
    # ... and the thresholds are what decide it: without them the same data would be split
    loose = ClusteringParams(k_max=4, min_eigengap=0.0, min_within_affinity=0.0)
    assert len(set(cluster_fingerprints(fps, loose).tolist())) > 1


def test_spectral_clustering_is_deterministic_and_labels_are_canonical() -> None:
    fps, _ = planted_fingerprints(3, 4, seed=11, separation=1.0)
    aff = affinity(skl_matrix(fps))
    before = aff.copy()
    first = spectral_clusters(aff, k_max=4, seed=5)
    np.testing.assert_array_equal(spectral_clusters(aff, k_max=4, seed=5), first)
    np.testing.assert_array_equal(aff, before)
    assert first[0] == 0
    seen: list[int] = []
    for label in first.tolist():
        if label not in seen:
            seen.append(label)
    assert seen == list(range(len(seen)))  # numbered in order of first appearance
    assert spectral_clusters(np.zeros((0, 0)), k_max=4, seed=0).shape == (0,)
    np.testing.assert_array_equal(spectral_clusters(np.ones((2, 2)), k_max=4, seed=0), [0, 0])


def test_k_max_caps_the_number_of_clusters() -> None:
    fps, _ = planted_fingerprints(3, 4, seed=2)
    labels = cluster_fingerprints(fps, ClusteringParams(k_max=2))
    assert len(set(labels.tolist())) <= 2


def test_kmeans_separates_two_blobs_and_uses_only_the_given_generator() -> None:
    rng = np.random.default_rng(0)
    points = np.vstack([rng.normal(size=(10, 2)), rng.normal(size=(10, 2)) + 20.0])
    state = np.random.get_state()[1].copy()  # type: ignore[index]
    labels = kmeans(points, 2, np.random.default_rng(1))
    np.testing.assert_array_equal(labels, [0] * 10 + [1] * 10)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # type: ignore[index]
    with pytest.raises(ConfigError):
        kmeans(points, 0, np.random.default_rng(1))
    with pytest.raises(ConfigError):
        kmeans(points, 21, np.random.default_rng(1))


# --- stable cluster ids ---------------------------------------------------------------------


def test_match_cluster_ids_keeps_ids_when_labels_are_permuted() -> None:
    previous = {"a": 5, "b": 5, "c": 9, "d": 9, "e": 2}
    relabelled = {"a": 0, "b": 0, "c": 2, "d": 2, "e": 1}
    assert match_cluster_ids(previous, relabelled) == previous


def test_match_cluster_ids_follows_the_majority_and_gives_fresh_ids() -> None:
    previous = {"a": 0, "b": 0, "c": 0, "d": 1, "e": 1}
    # "c" moved to the d/e group; a new node "f" forms a cluster of its own
    new = {"a": 7, "b": 7, "c": 3, "d": 3, "e": 3, "f": 4}
    out = match_cluster_ids(previous, new)
    assert out == {"a": 0, "b": 0, "c": 1, "d": 1, "e": 1, "f": 2}
    assert match_cluster_ids(previous, new, min_fresh_id=10)["f"] == 10


def test_match_cluster_ids_split_cluster_keeps_the_id_for_the_larger_part() -> None:
    previous = {"a": 4, "b": 4, "c": 4, "d": 4, "e": 4}
    new = {"a": 0, "b": 1, "c": 1, "d": 1, "e": 0}
    assert match_cluster_ids(previous, new) == {"a": 5, "b": 4, "c": 4, "d": 4, "e": 5}


def test_match_cluster_ids_without_history_numbers_by_smallest_node() -> None:
    assert match_cluster_ids({}, {"b": 9, "a": 3, "c": 9}) == {"a": 0, "b": 1, "c": 1}
    assert match_cluster_ids({"a": 1}, {}) == {}


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=12),
    st.permutations(list(range(5))),
    st.integers(0, 100),
)
def test_relabelling_never_changes_ids(labels: list[int], perm: list[int], offset: int) -> None:
    previous = {f"n{i:02d}": label + offset for i, label in enumerate(labels)}
    relabelled = {f"n{i:02d}": perm[label] for i, label in enumerate(labels)}
    assert match_cluster_ids(previous, relabelled) == previous
