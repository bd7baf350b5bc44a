"""Stratified, seeded train/test split (DESIGN §4)."""

from __future__ import annotations

import numpy as np
import pytest

from elsa.data import TextDataset, train_test_split
from elsa.errors import ConfigError, DataError


def make(counts: list[int]) -> TextDataset:
    labels = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(7).shuffle(labels)
    texts = tuple(f"doc {i}" for i in range(labels.size))
    return TextDataset("toy", texts, labels, tuple(f"c{k}" for k in range(len(counts))))


def test_split_is_stratified_and_exhaustive() -> None:
    ds = make([100, 60, 40])
    train, test = train_test_split(ds, 0.25, seed=3)
    assert len(test) == 50
    assert len(train) == 150
    assert test.class_counts().tolist() == [25, 15, 10]
    assert train.class_counts().tolist() == [75, 45, 30]
    assert sorted(train.texts + test.texts) == sorted(ds.texts)
    assert not set(train.texts) & set(test.texts)
    assert (train.name, test.name) == ("toy[train]", "toy[test]")
    assert train.label_names == test.label_names == ds.label_names


def test_split_keeps_labels_attached_to_texts() -> None:
    ds = make([30, 30])
    label_of = dict(zip(ds.texts, ds.labels.tolist(), strict=True))
    for part in train_test_split(ds, 0.3, seed=0):
        assert all(label_of[t] == y for t, y in zip(part.texts, part.labels.tolist(), strict=True))


def test_split_rounding_hits_the_total() -> None:
    train, test = train_test_split(make([7, 5, 3]), 0.2, seed=1)
    assert len(test) == 3
    assert len(train) == 12


def test_split_is_deterministic_per_seed_and_varies_across_seeds() -> None:
    ds = make([50, 50])
    assert train_test_split(ds, 0.2, seed=5) == train_test_split(ds, 0.2, seed=5)
    assert train_test_split(ds, 0.2, seed=5)[1].texts != train_test_split(ds, 0.2, seed=6)[1].texts


def test_split_does_not_touch_global_rng_or_input() -> None:
    ds = make([20, 20])
    before = np.random.get_state()[1].copy()  # type: ignore[index]
    train_test_split(ds, 0.5, seed=0)
    assert np.array_equal(np.random.get_state()[1], before)  # type: ignore[index]
    assert ds == make([20, 20])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_fraction(fraction: float) -> None:
    with pytest.raises(ConfigError):
        train_test_split(make([5, 5]), fraction, seed=0)


def test_split_that_would_leave_a_side_empty() -> None:
    with pytest.raises(DataError):
        train_test_split(make([2, 1]), 0.1, seed=0)
