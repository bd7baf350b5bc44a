"""Non-IID Dirichlet / quantity-skew partitioning (DESIGN §4)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elsa.data import dirichlet_partition, label_histogram
from elsa.errors import ConfigError, DataError
from elsa.params import PartitionParams


def balanced_labels(num_classes: int, per_class: int, seed: int = 0) -> npt.NDArray[np.int64]:
    labels = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
    return np.random.default_rng(seed).permutation(labels)


@st.composite
def labels_and_params(draw: st.DrawFn) -> tuple[npt.NDArray[np.int64], PartitionParams]:
    num_classes = draw(st.integers(1, 6))
    n = draw(st.integers(1, 300))
    labels = np.array(draw(st.lists(st.integers(0, num_classes - 1), min_size=n, max_size=n)), dtype=np.int64)
    num_parts = draw(st.integers(1, 12))
    min_examples = draw(st.integers(0, max(0, n // num_parts)))
    params = PartitionParams(
        num_parts=num_parts,
        alpha=draw(st.one_of(st.none(), st.floats(0.01, 100.0))),
        quantity_sigma=draw(st.sampled_from([0.0, 0.5, 2.0])),
        min_examples=min_examples,
        seed=draw(st.integers(0, 2**32 - 1)),
    )
    return labels, params


@settings(max_examples=150, deadline=None)
@given(labels_and_params())
def test_every_example_exactly_once_and_minimum_met(
    case: tuple[npt.NDArray[np.int64], PartitionParams],
) -> None:
    labels, params = case
    original = labels.copy()
    parts = dirichlet_partition(labels, params)
    assert len(parts) == params.num_parts
    assert all(p.dtype == np.int64 and p.ndim == 1 for p in parts)
    everything = np.concatenate(parts)
    assert np.array_equal(np.sort(everything), np.arange(labels.size))
    assert min(p.size for p in parts) >= params.min_examples
    if params.min_examples >= 1:
        assert all(p.size > 0 for p in parts)
    assert np.array_equal(labels, original)  # input untouched


@settings(max_examples=60, deadline=None)
@given(labels_and_params())
def test_seed_reproducible(case: tuple[npt.NDArray[np.int64], PartitionParams]) -> None:
    labels, params = case
    first = dirichlet_partition(labels, params)
    second = dirichlet_partition(labels, params)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([None, 0.1, 1.0]))
def test_different_seeds_differ(seed: int, alpha: float | None) -> None:
    labels = balanced_labels(4, 100)
    a = dirichlet_partition(labels, PartitionParams(num_parts=5, alpha=alpha, seed=seed))
    b = dirichlet_partition(labels, PartitionParams(num_parts=5, alpha=alpha, seed=seed + 1))
    assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_large_alpha_matches_global_label_mix() -> None:
    labels = np.repeat(np.arange(4, dtype=np.int64), [800, 600, 400, 200])
    parts = dirichlet_partition(labels, PartitionParams(num_parts=8, alpha=1e4, seed=1))
    hist = label_histogram(labels, parts, 4)
    global_share = np.bincount(labels) / labels.size
    part_share = hist / hist.sum(axis=1, keepdims=True)
    assert np.abs(part_share - global_share).max() < 0.03
    sizes = hist.sum(axis=1)
    assert sizes.max() - sizes.min() <= 0.05 * sizes.mean()


def test_iid_split_is_stratified_and_balanced() -> None:
    labels = balanced_labels(3, 101)
    hist = label_histogram(labels, dirichlet_partition(labels, PartitionParams(num_parts=4, alpha=None)), 3)
    assert hist.max() - hist.min() <= 1  # every class spread evenly
    assert hist.sum(axis=1).max() - hist.sum(axis=1).min() <= 1  # round-robin leftovers


def test_small_alpha_skews_labels() -> None:
    labels = balanced_labels(5, 200)
    shares = []
    for seed in range(5):
        parts = dirichlet_partition(labels, PartitionParams(num_parts=10, alpha=0.05, seed=seed))
        hist = label_histogram(labels, parts, 5)
        shares.append((hist.max(axis=1) / hist.sum(axis=1)).mean())
    assert float(np.mean(shares)) > 0.7
    # versus the IID baseline, where the top class holds ~1/5
    iid = label_histogram(labels, dirichlet_partition(labels, PartitionParams(num_parts=10, alpha=None)), 5)
    assert (iid.max(axis=1) / iid.sum(axis=1)).mean() < 0.3


def test_quantity_skew_gives_unequal_sizes() -> None:
    labels = balanced_labels(3, 400)
    equal = [p.size for p in dirichlet_partition(labels, PartitionParams(num_parts=10, alpha=None))]
    skewed = [
        p.size
        for p in dirichlet_partition(labels, PartitionParams(num_parts=10, alpha=None, quantity_sigma=1.0))
    ]
    assert max(equal) - min(equal) <= 1
    assert max(skewed) > 2 * min(skewed)
    assert sum(skewed) == labels.size


def test_impossible_minimum_raises() -> None:
    with pytest.raises(DataError, match="at least 3 examples"):
        dirichlet_partition(balanced_labels(2, 5), PartitionParams(num_parts=4, min_examples=3))


def test_minimum_exactly_feasible() -> None:
    parts = dirichlet_partition(
        balanced_labels(2, 6), PartitionParams(num_parts=4, alpha=0.01, min_examples=3)
    )
    assert [p.size for p in parts] == [3, 3, 3, 3]


@pytest.mark.parametrize("bad", [np.array([[0, 1]]), np.array([0.0, 1.0]), np.array([0, -1])])
def test_bad_labels(bad: npt.NDArray[np.generic]) -> None:
    with pytest.raises(DataError):
        dirichlet_partition(bad, PartitionParams(num_parts=1, min_examples=0))  # type: ignore[arg-type]


def test_params_validate_themselves() -> None:
    with pytest.raises(ConfigError):
        PartitionParams(num_parts=0)
    with pytest.raises(ConfigError):
        PartitionParams(num_parts=2, alpha=0.0)


def test_label_histogram_by_hand() -> None:
    labels = np.array([0, 1, 1, 2, 0])
    hist = label_histogram(labels, [np.array([0, 1]), np.array([2, 3, 4]), np.array([], dtype=np.int64)], 3)
    assert hist.tolist() == [[1, 1, 0], [1, 1, 1], [0, 0, 0]]
    with pytest.raises(DataError):
        label_histogram(labels, [np.array([5])], 3)
    with pytest.raises(DataError):
        label_histogram(labels, [np.array([0])], 2)
