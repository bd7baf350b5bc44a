"""TextDataset invariants and the packaged corpora (DESIGN §4)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from elsa.data import (
    ROTTEN_TOMATOES_LABELS,
    TextDataset,
    encode_labels,
    load_bbc_news,
    load_dataset,
    load_rotten_tomatoes,
)
from elsa.errors import DataError


@pytest.fixture(scope="module")
def bbc() -> TextDataset:
    return load_bbc_news()


@pytest.fixture(scope="module")
def rotten() -> TextDataset:
    return load_rotten_tomatoes()


def tiny() -> TextDataset:
    return TextDataset("tiny", ("a", "b", "c", "d"), np.array([0, 1, 1, 0]), ("neg", "pos"))


# --------------------------------------------------------------------------- TextDataset


def test_labels_are_private_read_only_int64_copy() -> None:
    raw = np.array([0, 1, 1, 0], dtype=np.int32)
    ds = TextDataset("t", ("a", "b", "c", "d"), raw, ("x", "y"))  # type: ignore[arg-type]  # converted
    assert ds.labels.dtype == np.int64
    assert not ds.labels.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        ds.labels[0] = 1
    raw[0] = 1  # the caller's array stays theirs
    assert ds.labels[0] == 0
    assert raw.flags.writeable


def test_dataset_is_frozen() -> None:
    ds = tiny()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "other"  # type: ignore[misc]


def test_len_num_classes_and_counts() -> None:
    ds = tiny()
    assert len(ds) == 4
    assert ds.num_classes == 2
    assert ds.class_counts().tolist() == [2, 2]


def test_subset_picks_in_order_and_leaves_self_untouched() -> None:
    ds = tiny()
    sub = ds.subset([3, 1, 1])
    assert sub.texts == ("d", "b", "b")
    assert sub.labels.tolist() == [0, 1, 1]
    assert sub.label_names == ds.label_names
    assert not sub.labels.flags.writeable
    assert ds == tiny()
    assert len(ds.subset([])) == 0


@pytest.mark.parametrize("bad", [[4], [-1], [[0, 1]], np.array([0.0, 1.0]), np.array([True, False])])
def test_subset_rejects_bad_indices(bad: object) -> None:
    with pytest.raises(DataError):
        tiny().subset(bad)  # type: ignore[arg-type]


def test_equality_and_hash_follow_contents() -> None:
    assert tiny() == tiny()
    assert hash(tiny()) == hash(tiny())
    assert tiny() != tiny().subset([0, 1, 2])


@pytest.mark.parametrize(
    ("texts", "labels", "names"),
    [
        (("a", "b"), [0], ("x", "y")),  # length mismatch
        (("a", "b"), [0, 2], ("x", "y")),  # label out of range
        (("a", "b"), [0, -1], ("x", "y")),  # negative label
        (("a", "b"), [0.0, 1.0], ("x", "y")),  # float labels
        (("a", "b"), [0, 1], ("x", "x")),  # duplicate names
        (("a", "b"), [0, 0], ()),  # no classes
    ],
)
def test_invalid_datasets_are_rejected(
    texts: tuple[str, ...], labels: list[float], names: tuple[str, ...]
) -> None:
    with pytest.raises(DataError):
        TextDataset("bad", texts, np.array(labels), names)


def test_encode_labels_sorted_unique() -> None:
    ids, names = encode_labels(["pos", "neg", "pos", "mid"])
    assert names == ("mid", "neg", "pos")
    assert ids.tolist() == [2, 1, 2, 0]
    ids, names = encode_labels([10, 2, 10])
    assert names == ("2", "10")
    assert ids.tolist() == [1, 0, 1]
    with pytest.raises(DataError, match="mix"):
        encode_labels(["a", 1])


# --------------------------------------------------------------------------- packaged corpora


def test_bbc_news_size_classes_and_counts(bbc: TextDataset) -> None:
    assert bbc.name == "bbc_news"
    assert len(bbc) == 2225
    assert bbc.label_names == ("business", "entertainment", "politics", "sports", "tech")
    assert bbc.class_counts().tolist() == [510, 386, 417, 511, 401]
    assert not bbc.labels.flags.writeable


def test_bbc_news_order_and_text_format(bbc: TextDataset) -> None:
    # sorted category, then sorted file name: labels are non-decreasing
    assert np.all(np.diff(bbc.labels) >= 0)
    # business/001.txt: title, then body
    assert bbc.texts[0].startswith("Ad sales boost Time Warner profit. Quarterly profits at US media giant")
    assert all(t and t == " ".join(t.split()) for t in bbc.texts)
    # sports/199.txt is Windows-1252 encoded; the pound sign must survive
    assert any("£15.8m signing from Parma" in t for t in bbc.texts)


def test_rotten_tomatoes_size_and_polarity(rotten: TextDataset) -> None:
    assert rotten.name == "rotten_tomatoes"
    assert len(rotten) == 12808
    assert rotten.label_names == ROTTEN_TOMATOES_LABELS == ("rotten", "fresh")
    assert rotten.class_counts().tolist() == [5405, 7403]  # rotten = 0 (negative), fresh = 1
    assert all(t and t == " ".join(t.split()) for t in rotten.texts)


def test_loaders_are_deterministic(bbc: TextDataset) -> None:
    assert load_bbc_news() == bbc


def test_load_dataset_by_name_and_path(bbc: TextDataset, tmp_path: Path) -> None:
    assert load_dataset("bbc_news") == bbc
    assert len(load_dataset("rotten_tomatoes")) == 12808
    path = tmp_path / "mine.csv"
    path.write_text("text,label\nhello,a\nworld,b\n", encoding="utf-8")
    ds = load_dataset(str(path))
    assert ds.name == "mine"
    assert len(ds) == 2


def test_load_dataset_unknown_name() -> None:
    with pytest.raises(DataError, match="unknown dataset 'imdb'"):
        load_dataset("imdb")
