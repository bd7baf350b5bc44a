"""Sketch geometry and its hashes (DESIGN §3).

A :class:`SketchGeometry` names everything that fixes a count sketch's hash functions: table
size (``rows × cols``), the flattened tensor length, the run seed, the round and the tensor
name. Bucket and sign of coordinate ``i`` in row ``j`` come from a counter-based hash: a
64-bit key per row is ``blake2b(seed, round, row, tensor name)`` (personalised
``elsa.sketch.v1``), and ``z = splitmix64(key + (i + 1) · 0x9E3779B97F4A7C15)``; the bucket is
``(z >> 32) mod cols`` and the sign is ``+1`` when ``z`` is odd, else ``-1``. Both are fixed
integer arithmetic, so every node (any process, platform or numpy version) derives the same
hashes; Python's ``hash()`` and global RNGs are never used.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from elsa.errors import ConfigError, GeometryMismatchError
from elsa.params import SketchParams

__all__ = ["SketchGeometry", "check_same_geometry", "hashes", "tensor_geometry"]

_PERSON: Final = b"elsa.sketch.v1"
_GOLDEN: Final = np.uint64(0x9E3779B97F4A7C15)
_MIX1: Final = np.uint64(0xBF58476D1CE4E5B9)
_MIX2: Final = np.uint64(0x94D049BB133111EB)
_MIN_SEED: Final = -(2**63)
_MAX_SEED: Final = 2**64 - 1
_MAX_ROUND: Final = 2**63 - 1
_MAX_LENGTH: Final = 2**40


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class SketchGeometry:
    """What fixes one count sketch: table shape, tensor length and hash identity.

    ``rows × cols`` is the table; ``length`` the number of elements of the flattened tensor;
    ``seed`` the run seed (any int in ``[-2**63, 2**64)``); ``round`` the round (>= 0);
    ``tensor`` the adapter key. ``dense=True`` is the exact identity "sketch" used for small
    tensors: one row, ``cols == length``, coordinate ``i`` in bucket ``i`` with sign ``+1``.
    Two sketches combine only when their geometries are equal in every field.
    """

    rows: int
    cols: int
    length: int
    seed: int
    round: int
    tensor: str
    dense: bool = False

    def __post_init__(self) -> None:
        _require(self.rows >= 1, f"sketch rows must be >= 1, got {self.rows}")
        _require(self.cols >= 1, f"sketch cols must be >= 1, got {self.cols}")
        _require(1 <= self.length <= _MAX_LENGTH, f"sketch length must be in [1, 2**40], got {self.length}")
        _require(_MIN_SEED <= self.seed <= _MAX_SEED, f"sketch seed {self.seed} is outside 64 bits")
        _require(0 <= self.round <= _MAX_ROUND, f"sketch round must be >= 0, got {self.round}")
        if self.dense:
            _require(
                self.rows == 1 and self.cols == self.length,
                f"a dense geometry needs rows == 1 and cols == length, got {self.rows} x {self.cols} "
                f"for length {self.length}",
            )

    @property
    def table_shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return (self.rows, self.cols)

    @property
    def table_nbytes(self) -> int:
        """Bytes of the float32 table."""
        return self.rows * self.cols * 4

    def to_dict(self) -> dict[str, Any]:
        """Plain (msgpack/JSON-ready) fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SketchGeometry:
        """Inverse of :meth:`to_dict`; raises ConfigError for missing, extra or mistyped fields."""
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            raise ConfigError(f"sketch geometry needs exactly the fields {sorted(names)}, got {sorted(data)}")
        ints = ("rows", "cols", "length", "seed", "round")
        for name in ints:
            if type(data[name]) is not int:
                raise ConfigError(f"sketch geometry field {name!r} must be an int")
        if type(data["tensor"]) is not str or type(data["dense"]) is not bool:
            raise ConfigError("sketch geometry fields 'tensor' (str) and 'dense' (bool) are mistyped")
        return cls(**data)


def check_same_geometry(a: SketchGeometry, b: SketchGeometry) -> None:
    """Raise :class:`GeometryMismatchError` (409) naming every field where ``a`` and ``b`` differ."""
    if a == b:
        return
    diffs = [
        f"{f.name}: {getattr(a, f.name)!r} != {getattr(b, f.name)!r}"
        for f in fields(SketchGeometry)
        if getattr(a, f.name) != getattr(b, f.name)
    ]
    raise GeometryMismatchError(f"sketch geometry of {a.tensor!r} differs: " + "; ".join(diffs))


def tensor_geometry(name: str, length: int, params: SketchParams, round: int, seed: int) -> SketchGeometry:
    """The geometry of tensor ``name`` (``length`` elements) in ``round`` of run ``seed``.

    Sketched: ``rows = params.rows`` and ``cols = params.cols`` or, when that is ``None``,
    ``max(1, floor(length / (params.compression * rows)))``. Dense (exact, ``rows = 1``,
    ``cols = length``) when ``length < params.dense_below`` or when ``rows * cols >= length``
    (a table no smaller than the tensor saves nothing).
    """
    _require(length >= 1, f"tensor {name!r} has no elements")
    rows = params.rows
    cols = (
        params.cols if params.cols is not None else max(1, math.floor(length / (params.compression * rows)))
    )
    if length < params.dense_below or rows * cols >= length:
        return SketchGeometry(
            rows=1, cols=length, length=length, seed=seed, round=round, tensor=name, dense=True
        )
    return SketchGeometry(rows=rows, cols=cols, length=length, seed=seed, round=round, tensor=name)


def _row_keys(geometry: SketchGeometry) -> npt.NDArray[np.uint64]:
    name = geometry.tensor.encode("utf-8")
    head = geometry.seed.to_bytes(9, "little", signed=True) + geometry.round.to_bytes(8, "little")
    keys = [
        int.from_bytes(
            hashlib.blake2b(head + row.to_bytes(4, "little") + name, digest_size=8, person=_PERSON).digest(),
            "little",
        )
        for row in range(geometry.rows)
    ]
    return np.array(keys, dtype=np.uint64)


def _splitmix64(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's output function on a uint64 array (wrapping arithmetic; returns a new array)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def hashes(geometry: SketchGeometry) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """Buckets ``(rows, length)`` intp in ``[0, cols)`` and signs ``(rows, length)`` float32 in {-1, +1}.

    Pure function of ``geometry``; see the module docstring for the exact hash.
    """
    if geometry.dense:
        buckets = np.arange(geometry.length, dtype=np.intp).reshape(1, -1)
        return buckets, np.ones((1, geometry.length), dtype=np.float32)
    counters = np.arange(1, geometry.length + 1, dtype=np.uint64) * _GOLDEN
    z = _splitmix64(_row_keys(geometry)[:, None] + counters[None, :])
    buckets = ((z >> np.uint64(32)) % np.uint64(geometry.cols)).astype(np.intp)
    signs = np.where((z & np.uint64(1)) == 1, np.float32(1.0), np.float32(-1.0)).astype(np.float32)
    return buckets, signs
