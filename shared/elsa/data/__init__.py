"""Datasets, non-IID partitioning and the public probe set (DESIGN §4).

Nothing here touches the network, logging configuration or global RNG state; the packaged
corpora are read straight from their installed folders (their packages are never imported).
"""

from __future__ import annotations

from elsa.data.datasets import (
    BBC_NEWS,
    PACKAGED_DATASETS,
    ROTTEN_TOMATOES,
    ROTTEN_TOMATOES_LABELS,
    TextDataset,
    encode_labels,
    load_bbc_news,
    load_dataset,
    load_rotten_tomatoes,
    load_text_file,
    normalize_whitespace,
    train_test_split,
)
from elsa.data.partition import dirichlet_partition, label_histogram
from elsa.data.probes import (
    PROBE_SET_SEED,
    PROBE_SET_SIZE,
    load_probe_set,
    read_guardian_headlines,
    sample_probe_set,
)

__all__ = [
    "BBC_NEWS",
    "PACKAGED_DATASETS",
    "PROBE_SET_SEED",
    "PROBE_SET_SIZE",
    "ROTTEN_TOMATOES",
    "ROTTEN_TOMATOES_LABELS",
    "TextDataset",
    "dirichlet_partition",
    "encode_labels",
    "label_histogram",
    "load_bbc_news",
    "load_dataset",
    "load_probe_set",
    "load_rotten_tomatoes",
    "load_text_file",
    "normalize_whitespace",
    "read_guardian_headlines",
    "sample_probe_set",
    "train_test_split",
]
