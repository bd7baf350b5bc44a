"""Adapter states in sketch space (DESIGN §3, §2.8-2.9): one count sketch per tensor.

A sketched state maps each adapter key to a :class:`CountSketch` of the flattened tensor.
Small tensors (fewer than ``SketchParams.dense_below`` elements, e.g. biases and classifier
biases) travel dense through the exact identity geometry, so one type covers the whole state
and every operation (merge, weighted sums, wire) stays linear and exact for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import torch

from elsa.errors import ConfigError, GeometryMismatchError
from elsa.params import SketchParams
from elsa.sketch.count_sketch import CountSketch
from elsa.sketch.geometry import SketchGeometry, check_same_geometry, tensor_geometry

__all__ = [
    "SketchedState",
    "apply_sketches",
    "round_state",
    "sketch_state",
    "sketched_norm",
    "sketches_nbytes",
    "state_geometries",
    "unsketch_state",
    "weighted_mean",
    "weighted_sum",
]

SketchedState = dict[str, CountSketch]


def state_geometries(
    lengths: Mapping[str, int], params: SketchParams, round: int, seed: int
) -> dict[str, SketchGeometry]:
    """Expected geometry of every tensor (``key → numel``) in ``round`` of run ``seed``.

    What a receiver checks incoming sketches against (:func:`elsa.sketch.sketch_from_payload`).
    """
    return {key: tensor_geometry(key, lengths[key], params, round, seed) for key in sorted(lengths)}


def sketch_state(
    state: Mapping[str, torch.Tensor], params: SketchParams, round: int, seed: int
) -> SketchedState:
    """One sketch per tensor of an adapter state (delta), keys sorted; inputs not mutated.

    Each tensor (any shape, any real dtype, any device) is flattened in C order and encoded
    with :func:`tensor_geometry` ``(key, numel, params, round, seed)``. No error feedback and
    no perturbation here: see :class:`elsa.sketch.ErrorFeedback` for the sender-side path.
    """
    out: SketchedState = {}
    for key in sorted(state):
        flat = state[key].detach().to(device="cpu", dtype=torch.float64).reshape(-1).numpy()
        sketch = CountSketch.encode(flat, tensor_geometry(key, flat.shape[0], params, round, seed))
        out[key] = sketch.rounded(params.table_dtype)
    return out


def round_state(sketches: Mapping[str, CountSketch], params: SketchParams) -> SketchedState:
    """Every table rounded to ``params.table_dtype`` (what a merge does before it is used)."""
    return {key: sketches[key].rounded(params.table_dtype) for key in sorted(sketches)}


def unsketch_state(
    sketches: Mapping[str, CountSketch], shapes: Mapping[str, Sequence[int]], params: SketchParams
) -> dict[str, torch.Tensor]:
    """Decode every sketch back to a float32 CPU tensor of ``shapes[key]`` (keys sorted).

    Uses ``params.estimator`` and ``params.topk_fraction`` (heavy hitters; dense geometries
    always decode exactly, without top-k). Raises :class:`GeometryMismatchError` when a key
    has no shape or its shape does not hold ``geometry.length`` elements.
    """
    out: dict[str, torch.Tensor] = {}
    for key in sorted(sketches):
        sketch = sketches[key]
        if key not in shapes:
            raise GeometryMismatchError(f"no shape known for sketched tensor {key!r}")
        shape = tuple(int(d) for d in shapes[key])
        if math.prod(shape) != sketch.geometry.length:
            raise GeometryMismatchError(
                f"{key!r}: shape {shape} does not hold the {sketch.geometry.length} sketched elements"
            )
        topk = None if sketch.geometry.dense else params.topk_for(sketch.geometry.length)
        decoded = sketch.decode(topk=topk, estimator=params.estimator)
        out[key] = torch.from_numpy(decoded.copy()).reshape(shape)
    return out


def _check_weights(weights: Sequence[float], *, non_negative: bool) -> None:
    for w in weights:
        if not math.isfinite(w):
            raise ConfigError(f"aggregation weights must be finite, got {w}")
        if non_negative and w < 0:
            raise ConfigError("aggregation weights must be >= 0")


def _accumulate(
    sketched: Sequence[tuple[Mapping[str, CountSketch], float]],
) -> tuple[
    dict[str, npt.NDArray[np.float64]],
    dict[str, npt.NDArray[np.float64]],
    dict[str, SketchGeometry],
    dict[str, float],
    dict[str, int],
]:
    sums: dict[str, npt.NDArray[np.float64]] = {}
    plain: dict[str, npt.NDArray[np.float64]] = {}
    geometry: dict[str, SketchGeometry] = {}
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for state, weight in sketched:
        for key, sketch in state.items():
            table = sketch.table.astype(np.float64)
            if key in geometry:
                check_same_geometry(geometry[key], sketch.geometry)
                sums[key] += weight * table
                plain[key] += table
                totals[key] += weight
                counts[key] += 1
            else:
                geometry[key] = sketch.geometry
                sums[key] = weight * table
                plain[key] = table
                totals[key] = weight
                counts[key] = 1
    return sums, plain, geometry, totals, counts


def weighted_sum(sketched: Sequence[tuple[Mapping[str, CountSketch], float]]) -> SketchedState:
    """``Σ weight · sketch`` per key, in sketch space (the sketch of the weighted sum of deltas).

    A key held by only some states sums over its holders. Weights may be any finite numbers.
    Accumulates in float64 and returns float32 tables; raises ConfigError for an empty list or
    a non-finite weight and :class:`GeometryMismatchError` when two sketches of one key
    differ in geometry. Inputs are not mutated.
    """
    if not sketched:
        raise ConfigError("weighted_sum needs at least one sketched state")
    _check_weights([w for _, w in sketched], non_negative=False)
    sums, _, geometry, _, _ = _accumulate(sketched)
    return {key: CountSketch(sums[key].astype(np.float32), geometry[key]) for key in sorted(sums)}


def weighted_mean(sketched: Sequence[tuple[Mapping[str, CountSketch], float]]) -> SketchedState:
    """Per-key weighted mean in sketch space, the sketch-space twin of ``elsa.aggregate.weighted_mean``.

    Each key is averaged over the states that hold it with their weights renormalised; a key
    whose holders all weigh 0 gets the plain mean of its holders. Weights must be finite and
    >= 0 (ConfigError); geometry mismatch → :class:`GeometryMismatchError`. Inputs are not
    mutated; tables are accumulated in float64 and returned as float32.
    """
    if not sketched:
        raise ConfigError("weighted_mean needs at least one sketched state")
    _check_weights([w for _, w in sketched], non_negative=True)
    sums, plain, geometry, totals, counts = _accumulate(sketched)
    out: SketchedState = {}
    for key in sorted(sums):
        table = sums[key] / totals[key] if totals[key] > 0 else plain[key] / counts[key]
        out[key] = CountSketch(table.astype(np.float32), geometry[key])
    return out


def sketched_norm(sketches: Mapping[str, CountSketch]) -> float:
    """Estimate of the L2 norm of the state a sketched state encodes: every row of a count
    sketch holds signed sums whose squared norm is the vector's in expectation, so
    ``sqrt(Σ ||table||² / rows)`` (exact for dense tables)."""
    total = 0.0
    for sketch in sketches.values():
        table = np.asarray(sketch.table, dtype=np.float64)
        total += float(np.square(table).sum()) / sketch.geometry.rows
    return math.sqrt(total)


def sketches_nbytes(sketches: Mapping[str, CountSketch]) -> int:
    """Total bytes of the float32 tables of a sketched state."""
    return sum(s.nbytes for s in sketches.values())


def apply_sketches(
    start: Mapping[str, torch.Tensor], deltas: Mapping[str, CountSketch], params: SketchParams
) -> dict[str, torch.Tensor]:
    """``start + decode(delta)`` per key (keys without a delta keep ``start``'s value).

    What every receiver of a merged sketch computes; it is a pure function of its inputs, so
    the aggregator and every receiver holding the same ``start`` get bit-identical tensors.
    Raises :class:`GeometryMismatchError` for a delta of a key ``start`` lacks or of another
    size. Returns new float32 tensors; inputs are not mutated.
    """
    unknown = sorted(set(deltas) - set(start))
    if unknown:
        raise GeometryMismatchError(f"sketched deltas for keys the model lacks: {unknown[:3]}")
    shapes = {key: tuple(start[key].shape) for key in deltas}
    decoded = unsketch_state(deltas, shapes, params)
    out: dict[str, torch.Tensor] = {}
    for key in sorted(start):
        base = start[key].detach().to(device="cpu", dtype=torch.float32)
        out[key] = base + decoded[key] if key in decoded else base.clone()
    return out
