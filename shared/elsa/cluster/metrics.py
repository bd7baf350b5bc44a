"""Clustering quality: the adjusted Rand index (Hubert & Arabie, 1985), used by tests and bench/."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from elsa.errors import ConfigError


def _comb2(x: np.ndarray) -> float:
    return float(np.sum(x * (x - 1) / 2.0))


def adjusted_rand_index(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Agreement of two labelings of the same N items, corrected for chance.

    1.0 for identical partitions (whatever the label names), about 0 for independent ones,
    possibly negative. Labels can be any hashable values. When both partitions are trivial in the
    same way (a single cluster each, or all singletons each) the index is defined as 1.0. Raises
    ConfigError when the lengths differ. Inputs are not mutated.
    """
    if len(a) != len(b):
        raise ConfigError(f"labelings have different lengths: {len(a)} != {len(b)}")
    n = len(a)
    ids_a = {label: i for i, label in enumerate(dict.fromkeys(a))}
    ids_b = {label: i for i, label in enumerate(dict.fromkeys(b))}
    table = np.zeros((len(ids_a), len(ids_b)), dtype=np.float64)
    for x, y in zip(a, b, strict=True):
        table[ids_a[x], ids_b[y]] += 1
    sum_cells = _comb2(table)
    sum_a = _comb2(table.sum(axis=1))
    sum_b = _comb2(table.sum(axis=0))
    total = n * (n - 1) / 2.0
    if total == 0:
        return 1.0
    expected = sum_a * sum_b / total
    maximum = 0.5 * (sum_a + sum_b)
    if maximum == expected:
        return 1.0
    return float((sum_cells - expected) / (maximum - expected))
