"""The count sketch of one flattened tensor (DESIGN §3): encode, merge, scale, decode.

A :class:`CountSketch` is an immutable ``rows × cols`` float32 table plus the
:class:`~elsa.sketch.geometry.SketchGeometry` that fixed its hashes. Encoding is linear:
``encode(a) + encode(b) == encode(a + b)`` and ``encode(w·a) == w·encode(a)`` (up to float32
rounding), so edges and the cloud aggregate updates by adding tables and decode once. Sketches
of different geometry never combine (:class:`~elsa.errors.GeometryMismatchError`, 409).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from elsa.errors import ConfigError, TensorError
from elsa.params import SketchEstimator, WireDType
from elsa.sketch.geometry import SketchGeometry, check_same_geometry, hashes

__all__ = ["CountSketch", "keep_topk"]


def _check_weight(weight: float) -> float:
    w = float(weight)
    if not math.isfinite(w):
        raise ConfigError(f"sketch weight must be finite, got {weight}")
    return w


def keep_topk(values: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.float32]:
    """A copy of ``values`` (n,) with all but the ``k`` largest-magnitude entries set to zero.

    Ties are broken towards the lower index (stable sort), so the result is deterministic.
    ``k >= n`` keeps everything; ``k == 0`` keeps nothing. The input is not mutated.
    """
    if k < 0:
        raise ConfigError(f"topk must be >= 0, got {k}")
    if k >= values.shape[0]:
        return values.copy()
    keep = np.argsort(-np.abs(values), kind="stable")[:k]
    out = np.zeros_like(values)
    out[keep] = values[keep]
    return out


@dataclass(frozen=True, eq=False)
class CountSketch:
    """An immutable count-sketch table of shape ``geometry.table_shape``, float32.

    The constructor copies ``table`` into a read-only C-contiguous float32 array and raises
    :class:`TensorError` when its shape disagrees with ``geometry`` or it holds NaN/Inf.
    """

    table: npt.NDArray[np.float32]
    geometry: SketchGeometry

    def __post_init__(self) -> None:
        table = np.array(self.table, dtype=np.float32, copy=True, order="C")
        if table.shape != self.geometry.table_shape:
            raise TensorError(
                f"sketch table of {self.geometry.tensor!r} has shape {table.shape}, "
                f"geometry says {self.geometry.table_shape}"
            )
        if not np.isfinite(table).all():
            raise TensorError(f"sketch table of {self.geometry.tensor!r} contains NaN or Inf")
        table.setflags(write=False)
        object.__setattr__(self, "table", table)

    # --- construction --------------------------------------------------------------------

    @classmethod
    def zeros(cls, geometry: SketchGeometry) -> CountSketch:
        """The sketch of the zero vector (neutral element of :meth:`merge`)."""
        return cls(np.zeros(geometry.table_shape, dtype=np.float32), geometry)

    @classmethod
    def encode(cls, vector: npt.ArrayLike, geometry: SketchGeometry) -> CountSketch:
        """Sketch a flat vector of shape ``(geometry.length,)`` (any real dtype; not mutated).

        ``table[j, c] = Σ_{i: h_j(i) = c} s_j(i) · vector[i]``, accumulated in float64 and
        stored as float32. Raises TensorError for a wrong shape or non-finite values.
        """
        v = np.asarray(vector, dtype=np.float64)
        if v.shape != (geometry.length,):
            raise TensorError(
                f"cannot sketch a vector of shape {v.shape} with a geometry of length {geometry.length}"
            )
        if not np.isfinite(v).all():
            raise TensorError(f"vector for {geometry.tensor!r} contains NaN or Inf")
        buckets, signs = hashes(geometry)
        flat = (buckets + np.arange(geometry.rows, dtype=np.intp)[:, None] * geometry.cols).ravel()
        weights = (signs.astype(np.float64) * v[None, :]).ravel()
        table = np.bincount(flat, weights=weights, minlength=geometry.rows * geometry.cols)
        return cls(table.reshape(geometry.table_shape).astype(np.float32), geometry)

    # --- linear algebra in sketch space ---------------------------------------------------

    def merge(self, other: CountSketch, weight: float = 1.0) -> CountSketch:
        """``self + weight · other`` as a new sketch (the sketch of ``a + weight·b``).

        Raises :class:`GeometryMismatchError` (409) when the geometries differ in any field.
        Neither operand is mutated.
        """
        check_same_geometry(self.geometry, other.geometry)
        w = _check_weight(weight)
        table = self.table.astype(np.float64) + w * other.table.astype(np.float64)
        return CountSketch(table.astype(np.float32), self.geometry)

    def __add__(self, other: CountSketch) -> CountSketch:
        return self.merge(other)

    def rounded(self, dtype: WireDType) -> CountSketch:
        """This sketch with its table rounded to ``dtype`` (held as float32; fp32 = itself).

        Raises :class:`TensorError` when a cell overflows ``dtype`` (never silently infinite).
        """
        if dtype == "fp32":
            return self
        torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        table = torch.from_numpy(self.table.copy()).to(torch_dtype).to(torch.float32).numpy()
        if not np.isfinite(table).all():
            raise TensorError(f"sketch table of {self.geometry.tensor!r} overflows {dtype}")
        return CountSketch(table, self.geometry)

    def scale(self, weight: float) -> CountSketch:
        """``weight · self`` as a new sketch (the sketch of ``weight · vector``)."""
        w = _check_weight(weight)
        return CountSketch((self.table.astype(np.float64) * w).astype(np.float32), self.geometry)

    # --- decoding -------------------------------------------------------------------------

    def row_estimates(self) -> npt.NDArray[np.float32]:
        """Per-row estimates ``s_j(i) · table[j, h_j(i)]``, shape ``(rows, length)`` float32."""
        buckets, signs = hashes(self.geometry)
        gathered: npt.NDArray[np.float32] = np.take_along_axis(self.table, buckets, axis=1)
        return gathered * signs

    def decode(
        self, topk: int | None = None, estimator: SketchEstimator = "median"
    ) -> npt.NDArray[np.float32]:
        """Estimate the sketched vector: a new array of shape ``(length,)``, float32.

        ``estimator="median"`` takes the median over rows of ``s_j(i) · table[j, h_j(i)]``
        (the count-sketch estimate: exact for coordinates whose bucket they share with no other
        non-zero in most rows); ``"mean"`` takes their mean (unbiased and linear in the table).
        ``topk`` keeps only the ``topk`` largest-magnitude estimates (heavy-hitter recovery;
        :func:`keep_topk`). A dense geometry decodes exactly.
        """
        estimates = self.row_estimates()
        if estimator == "median":
            decoded = np.median(estimates, axis=0).astype(np.float32)
        elif estimator == "mean":
            decoded = estimates.mean(axis=0, dtype=np.float64).astype(np.float32)
        else:
            raise ConfigError(f"unknown sketch estimator {estimator!r}")
        return decoded if topk is None else keep_topk(decoded, topk)

    @property
    def nbytes(self) -> int:
        """Bytes of the table (``rows · cols · 4``), what travels on the wire at fp32."""
        return int(self.table.nbytes)
