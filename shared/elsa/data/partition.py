"""Non-IID partitioning of a labelled dataset over clients (DESIGN §4).

Label skew: for every class ``c`` the share of its examples that goes to each part is
``d_c ⊙ w`` normalised, with ``d_c ~ Dir(alpha · 1_P)`` (``alpha = None`` → ``d_c`` uniform, an
IID stratified split). Quantity skew: ``w ~ LogNormal(0, quantity_sigma)`` per part
(``quantity_sigma = 0`` → equal weights), so expected part sizes are proportional to ``w``.
Counts are rounded by largest remainder, parts short of ``min_examples`` are topped up from
the largest parts, and the examples of each class are dealt out in a seeded random order.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from elsa.errors import DataError
from elsa.params import PartitionParams

IndexArray = npt.NDArray[np.int64]


def _check_labels(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    arr = np.asarray(labels)
    if arr.size == 0:
        arr = arr.astype(np.int64).reshape(0)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise DataError(f"labels must be a 1-D integer array, got shape {arr.shape} dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise DataError(f"labels must be >= 0, got {arr.min()}")
    return arr.astype(np.int64, copy=False)


def _allocate(quotas: npt.NDArray[np.float64], total: int, offset: int) -> npt.NDArray[np.int64]:
    """Round ``quotas`` (summing to ``total``) to integers by largest remainder.

    Ties are broken in the order ``offset, offset + 1, ...`` (mod P), so equal quotas across
    classes hand their leftovers to different parts (round-robin).
    """
    counts = np.floor(quotas).astype(np.int64)
    short = total - int(counts.sum())
    if short > 0:
        num_parts = quotas.shape[0]
        rotation = (np.arange(num_parts) - offset) % num_parts
        order = np.lexsort((rotation, -(quotas - counts)))
        counts[order[:short]] += 1
    return counts


def _class_shares(
    num_classes: int, weights: npt.NDArray[np.float64], alpha: float | None, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """Row-stochastic ``(num_classes, P)`` matrix: the share of each class that goes to each part."""
    num_parts = weights.shape[0]
    if alpha is None:
        shares = np.tile(weights, (num_classes, 1))
    else:
        shares = rng.dirichlet(np.full(num_parts, alpha), size=num_classes) * weights
    sums = shares.sum(axis=1, keepdims=True)
    bad = ~np.isfinite(sums[:, 0]) | (sums[:, 0] <= 0)
    if bad.any():  # tiny alpha can underflow every coordinate: fall back to one random part
        fallback = np.zeros((int(bad.sum()), num_parts))
        fallback[np.arange(fallback.shape[0]), rng.integers(num_parts, size=fallback.shape[0])] = 1.0
        shares[bad] = fallback
        sums = shares.sum(axis=1, keepdims=True)
    return np.asarray(shares / sums, dtype=np.float64)


def _top_up(counts: npt.NDArray[np.int64], min_examples: int) -> None:
    """Move examples (in place on the private ``(C, P)`` ``counts``) until every part has ``min_examples``.

    The donor is always the currently largest part; it gives one example of the class the
    recipient already holds most of (keeping label skew), else of its own largest class.
    """
    sizes = counts.sum(axis=0)
    for part in np.flatnonzero(sizes < min_examples):
        while sizes[part] < min_examples:
            donor = int(np.argmax(sizes))
            available = counts[:, donor] > 0
            preference = np.where(available, counts[:, part], -1)
            source = preference if preference.max() > 0 else counts[:, donor]
            cls = int(np.argmax(source))
            counts[cls, donor] -= 1
            counts[cls, part] += 1
            sizes[donor] -= 1
            sizes[part] += 1


def dirichlet_partition(labels: npt.NDArray[np.integer], params: PartitionParams) -> list[IndexArray]:
    """Split example indices into ``params.num_parts`` non-IID parts (DESIGN §4: client data).

    ``labels``: 1-D integer array of shape ``(N,)`` with values ``>= 0``; it is not mutated.
    Returns ``num_parts`` sorted ``int64`` index arrays; every index in ``[0, N)`` appears in
    exactly one of them. Per class, proportions over parts follow ``Dir(params.alpha)`` (IID
    stratified when ``alpha is None``), scaled by log-normal quantity weights with
    ``sigma = params.quantity_sigma``. Every part holds at least ``params.min_examples``
    examples. Deterministic for ``params.seed`` (uses ``numpy.random.default_rng``; no global RNG).

    Raises :class:`DataError` for malformed labels or when
    ``num_parts * min_examples > N`` (the minimum cannot be met).
    """
    y = _check_labels(labels)
    n, num_parts = y.shape[0], params.num_parts
    if num_parts * params.min_examples > n:
        raise DataError(
            f"cannot give {num_parts} parts at least {params.min_examples} examples each from only {n} examples"
        )
    rng = np.random.default_rng(params.seed)
    if params.quantity_sigma > 0:
        weights = rng.lognormal(mean=0.0, sigma=params.quantity_sigma, size=num_parts)
    else:
        weights = np.ones(num_parts)
    weights = weights / weights.sum()

    num_classes = int(y.max()) + 1 if n else 0
    class_sizes = np.bincount(y, minlength=num_classes)
    shares = _class_shares(num_classes, weights, params.alpha, rng)
    counts = (
        np.stack(
            [_allocate(shares[c] * class_sizes[c], int(class_sizes[c]), offset=c) for c in range(num_classes)]
        )
        if num_classes
        else np.zeros((0, num_parts), dtype=np.int64)
    )
    _top_up(counts, params.min_examples)

    members: list[list[IndexArray]] = [[] for _ in range(num_parts)]
    for c in range(num_classes):
        order = rng.permutation(np.flatnonzero(y == c))
        bounds = np.cumsum(counts[c])[:-1]
        for part, chunk in enumerate(np.split(order, bounds)):
            members[part].append(chunk.astype(np.int64, copy=False))
    return [np.sort(np.concatenate(chunks)) if chunks else np.zeros(0, dtype=np.int64) for chunks in members]


def label_histogram(
    labels: npt.NDArray[np.integer], parts: list[IndexArray], num_classes: int
) -> npt.NDArray[np.int64]:
    """Examples per (part, class): ``int64`` array of shape ``(len(parts), num_classes)``.

    ``labels`` has shape ``(N,)`` with values in ``[0, num_classes)``; ``parts`` hold indices into
    it (as returned by :func:`dirichlet_partition`). Nothing is mutated. Raises
    :class:`DataError` for out-of-range labels or indices.
    """
    y = _check_labels(labels)
    if num_classes < 1:
        raise DataError(f"num_classes must be >= 1, got {num_classes}")
    if y.size and y.max() >= num_classes:
        raise DataError(f"labels must be < num_classes={num_classes}, got {y.max()}")
    hist = np.zeros((len(parts), num_classes), dtype=np.int64)
    for row, part in enumerate(parts):
        idx = np.asarray(part)
        if idx.size == 0:
            continue
        if idx.ndim != 1 or idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= y.shape[0]:
            raise DataError(f"part {row} has indices outside [0, {y.shape[0]})")
        hist[row] = np.bincount(y[idx], minlength=num_classes)
    return hist
