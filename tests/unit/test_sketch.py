"""elsa.sketch: count-sketch geometry, hashes, linearity, decoding and sketched states (DESIGN §3)."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from elsa.errors import ConfigError, GeometryMismatchError, TensorError
from elsa.sketch import (
    CountSketch,
    SketchGeometry,
    SketchParams,
    hashes,
    keep_topk,
    sketch_from_payload,
    sketch_state,
    sketch_to_payload,
    sketches_nbytes,
    state_geometries,
    tensor_geometry,
    unsketch_state,
    weighted_mean,
    weighted_sum,
)

MASK = 2**64 - 1


def _reference_hashes(g: SketchGeometry) -> tuple[list[list[int]], list[list[int]]]:
    """The documented hash, in plain Python integers (independent of numpy)."""
    buckets, signs = [], []
    for row in range(g.rows):
        material = (
            g.seed.to_bytes(9, "little", signed=True)
            + g.round.to_bytes(8, "little")
            + row.to_bytes(4, "little")
            + g.tensor.encode()
        )
        key = int.from_bytes(
            hashlib.blake2b(material, digest_size=8, person=b"elsa.sketch.v1").digest(), "little"
        )
        b_row, s_row = [], []
        for i in range(g.length):
            z = (key + (i + 1) * 0x9E3779B97F4A7C15) & MASK
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
            z = z ^ (z >> 31)
            b_row.append((z >> 32) % g.cols)
            s_row.append(1 if z & 1 else -1)
        buckets.append(b_row)
        signs.append(s_row)
    return buckets, signs


def _geometry(**overrides: object) -> SketchGeometry:
    fields: dict[str, object] = {
        "rows": 5,
        "cols": 64,
        "length": 1000,
        "seed": 7,
        "round": 2,
        "tensor": "blocks.1.attention.q.lora_A.weight",
    }
    fields.update(overrides)
    return SketchGeometry(**fields)  # type: ignore[arg-type]


# --- hashes -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 42, -3, 2**64 - 1])
def test_hashes_follow_the_documented_integer_spec(seed: int) -> None:
    g = SketchGeometry(rows=3, cols=7, length=50, seed=seed, round=3, tensor="blocks.0.q.lora_A.weight")
    buckets, signs = hashes(g)
    ref_b, ref_s = _reference_hashes(g)
    assert buckets.tolist() == ref_b
    assert signs.astype(int).tolist() == ref_s


def test_hashes_depend_on_seed_round_and_tensor_and_are_balanced() -> None:
    base = _geometry(length=20000)
    b0, s0 = hashes(base)
    for other in (
        _geometry(length=20000, seed=8),
        _geometry(length=20000, round=3),
        _geometry(length=20000, tensor="x"),
    ):
        b1, s1 = hashes(other)
        assert (b0 != b1).mean() > 0.9
        assert (s0 != s1).mean() > 0.4
    assert abs(float(s0.mean())) < 0.05  # signs are balanced
    counts = np.bincount(b0[0], minlength=base.cols)
    assert counts.min() > 0.7 * counts.mean()  # buckets are roughly uniform
    assert (b0[0] != b0[1]).mean() > 0.9  # rows hash independently


def test_hashes_are_identical_in_another_process() -> None:
    code = (
        "import hashlib, numpy as np\n"
        "from elsa.sketch import CountSketch, SketchGeometry\n"
        "g = SketchGeometry(rows=5, cols=64, length=1000, seed=7, round=2, tensor='t')\n"
        "v = np.sin(np.arange(1000) * 0.37)\n"
        "print(hashlib.sha256(CountSketch.encode(v, g).table.tobytes()).hexdigest())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    g = SketchGeometry(rows=5, cols=64, length=1000, seed=7, round=2, tensor="t")
    here = CountSketch.encode(np.sin(np.arange(1000) * 0.37), g)
    assert done.stdout.strip() == hashlib.sha256(here.table.tobytes()).hexdigest()


# --- encode / decode ---------------------------------------------------------------------


def test_encode_matches_the_definition_on_a_tiny_vector() -> None:
    g = SketchGeometry(rows=2, cols=3, length=4, seed=1, round=0, tensor="tiny")
    v = np.array([1.0, -2.0, 0.5, 4.0])
    buckets, signs = hashes(g)
    expected = np.zeros((2, 3))
    for j in range(2):
        for i in range(4):
            expected[j, buckets[j, i]] += signs[j, i] * v[i]
    sketch = CountSketch.encode(v, g)
    np.testing.assert_array_equal(sketch.table, expected.astype(np.float32))
    est = np.stack([signs[j] * expected[j, buckets[j]] for j in range(2)])
    np.testing.assert_allclose(sketch.decode(), np.median(est, axis=0), rtol=1e-6)
    np.testing.assert_allclose(sketch.decode(estimator="mean"), est.mean(axis=0), rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(-8, 8), st.integers(0, 2**64 - 1))
def test_merge_of_sketches_is_the_sketch_of_the_sum_exactly(data_seed: int, weight: int, seed: int) -> None:
    rng = np.random.default_rng(data_seed)
    g = _geometry(length=300, cols=17, seed=seed)
    va = rng.integers(-1000, 1000, 300).astype(np.float64)
    vb = rng.integers(-1000, 1000, 300).astype(np.float64)
    sa, sb = CountSketch.encode(va, g), CountSketch.encode(vb, g)
    # Small integers are exact in float32, so linearity holds bit for bit.
    np.testing.assert_array_equal((sa + sb).table, CountSketch.encode(va + vb, g).table)
    np.testing.assert_array_equal(sa.merge(sb, weight).table, CountSketch.encode(va + weight * vb, g).table)
    np.testing.assert_array_equal(sa.scale(weight).table, CountSketch.encode(weight * va, g).table)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.floats(-3.0, 3.0), st.floats(-3.0, 3.0))
def test_weighted_linearity_on_real_vectors(seed: int, wa: float, wb: float) -> None:
    rng = np.random.default_rng(seed)
    g = _geometry(seed=seed)
    va, vb = rng.standard_normal(g.length), rng.standard_normal(g.length)
    merged = weighted_sum([({"k": CountSketch.encode(va, g)}, wa), ({"k": CountSketch.encode(vb, g)}, wb)])
    direct = CountSketch.encode(wa * va + wb * vb, g)
    np.testing.assert_allclose(merged["k"].table, direct.table, rtol=1e-5, atol=1e-4)


def test_k_sparse_vectors_are_recovered_exactly_by_the_median() -> None:
    for seed in range(20):
        rng = np.random.default_rng(seed)
        v = np.zeros(3072)
        v[rng.choice(3072, 5, replace=False)] = rng.integers(-50, 50, 5) + 0.5
        g = SketchGeometry(rows=5, cols=600, length=3072, seed=seed, round=0, tensor="w")
        sketch = CountSketch.encode(v, g)
        # The median ignores collisions in a minority of rows, so recovery is exact ...
        np.testing.assert_array_equal(sketch.decode(), v.astype(np.float32))
        # ... the mean is not: some zero coordinate shares a bucket with a non-zero in some row.
        assert not np.array_equal(sketch.decode(estimator="mean"), v.astype(np.float32))


@pytest.mark.parametrize("estimator", ["median", "mean"])
def test_decode_is_unbiased_over_hash_seeds(estimator: str) -> None:
    rng = np.random.default_rng(0)
    v = np.zeros(400)
    v[rng.choice(400, 40, replace=False)] = rng.standard_normal(40) * 5  # sparse, but colliding
    errors = np.stack(
        [
            CountSketch.encode(
                v, SketchGeometry(rows=3, cols=16, length=400, seed=s, round=0, tensor="w")
            ).decode(
                estimator=estimator  # type: ignore[arg-type]
            )
            - v
            for s in range(400)
        ]
    )
    spread = errors.std(axis=0).mean()
    assert spread > 0.5  # the test is not trivial: single decodes are wrong
    assert abs(errors.mean()) < 0.05 * spread  # ... but right on average, over all coordinates
    assert np.abs(errors.mean(axis=0)).max() < 5 * spread / math.sqrt(400)


def test_mean_decode_is_linear_and_median_decode_is_not() -> None:
    rng = np.random.default_rng(3)
    g = _geometry()
    sa, sb = (
        CountSketch.encode(rng.standard_normal(g.length), g),
        CountSketch.encode(rng.standard_normal(g.length), g),
    )
    np.testing.assert_allclose(
        (sa + sb).decode(estimator="mean"),
        sa.decode(estimator="mean") + sb.decode(estimator="mean"),
        atol=1e-5,
    )
    assert not np.allclose((sa + sb).decode(), sa.decode() + sb.decode(), atol=1e-3)


def test_topk_keeps_the_largest_magnitudes_deterministically() -> None:
    values = np.array([0.5, -3.0, 2.0, -2.0, 0.0], dtype=np.float32)
    np.testing.assert_array_equal(keep_topk(values, 2), [0.0, -3.0, 2.0, 0.0, 0.0])  # tie: lower index
    np.testing.assert_array_equal(keep_topk(values, 0), np.zeros(5))
    np.testing.assert_array_equal(keep_topk(values, 9), values)
    np.testing.assert_array_equal(values, [0.5, -3.0, 2.0, -2.0, 0.0])
    g = SketchGeometry(rows=5, cols=500, length=3000, seed=0, round=0, tensor="w")
    v = np.random.default_rng(1).standard_normal(3000) * 0.01
    v[[10, 20, 30]] = [50.0, -40.0, 30.0]
    heavy = CountSketch.encode(v, g).decode(topk=3)
    assert set(np.flatnonzero(heavy)) == {10, 20, 30}
    np.testing.assert_allclose(heavy[[10, 20, 30]], [50.0, -40.0, 30.0], atol=0.1)
    with pytest.raises(ConfigError):
        keep_topk(values, -1)


# --- immutability and validation ----------------------------------------------------------


def test_sketches_are_immutable_and_inputs_untouched() -> None:
    g = _geometry()
    v = np.arange(g.length, dtype=np.float64)
    before = v.copy()
    table = np.ones(g.table_shape, dtype=np.float32)
    s = CountSketch(table, g)
    table[0, 0] = 99.0
    assert s.table[0, 0] == 1.0  # constructor copied
    with pytest.raises(ValueError, match="read-only"):
        s.table[0, 0] = 5.0
    t = CountSketch.encode(v, g)
    t2 = t + s
    t.merge(s, 3.0).scale(2.0)
    np.testing.assert_array_equal(v, before)
    np.testing.assert_array_equal(s.table, np.ones(g.table_shape))
    np.testing.assert_array_equal(t2.table, t.table + 1.0)


def test_bad_geometries_params_and_vectors_are_rejected() -> None:
    for bad in ({"rows": 0}, {"cols": 0}, {"length": 0}, {"round": -1}, {"seed": 2**64}):
        with pytest.raises(ConfigError):
            _geometry(**bad)
    with pytest.raises(ConfigError, match="dense"):
        SketchGeometry(rows=1, cols=3, length=4, seed=0, round=0, tensor="b", dense=True)
    for bad_params in (
        {"rows": 0},
        {"compression": 0.5},
        {"compression": math.inf},
        {"cols": 0},
        {"topk_fraction": 0.0},
    ):
        with pytest.raises(ConfigError):
            SketchParams(**bad_params)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        SketchParams(estimator="mode")  # type: ignore[arg-type]
    g = _geometry()
    with pytest.raises(TensorError, match="shape"):
        CountSketch.encode(np.zeros(g.length + 1), g)
    with pytest.raises(TensorError, match="NaN"):
        CountSketch.encode(np.full(g.length, np.nan), g)
    with pytest.raises(TensorError, match="shape"):
        CountSketch(np.zeros((2, 2), dtype=np.float32), g)
    with pytest.raises(TensorError, match="NaN"):
        CountSketch(np.full(g.table_shape, np.inf, dtype=np.float32), g)
    with pytest.raises(ConfigError):
        CountSketch.zeros(g).scale(math.nan)


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 8},
        {"round": 3},
        {"tensor": "blocks.1.attention.k.lora_A.weight"},
        {"cols": 65},
        {"rows": 4},
        {"length": 1001},
    ],
)
def test_geometry_mismatch_is_refused_never_merged(change: dict[str, object]) -> None:
    a = CountSketch.zeros(_geometry())
    b = CountSketch.zeros(_geometry(**change))
    with pytest.raises(GeometryMismatchError, match=next(iter(change))) as info:
        a.merge(b)
    assert info.value.http_status == 409
    with pytest.raises(GeometryMismatchError):
        _ = a + b
    with pytest.raises(GeometryMismatchError):
        weighted_sum([({"k": a}, 1.0), ({"k": b}, 1.0)])
    with pytest.raises(GeometryMismatchError):
        weighted_mean([({"k": a}, 1.0), ({"k": b}, 1.0)])


# --- sketched adapter states -----------------------------------------------------------------

MINILM_LORA = {
    "blocks.0.attention.self.query.lora_A.weight": (8, 384),
    "blocks.0.attention.self.query.lora_B.weight": (384, 8),
    "blocks.0.intermediate.dense.lora_A.weight": (8, 384),
    "blocks.0.intermediate.dense.lora_B.weight": (1536, 8),
    "blocks.0.output.dense.lora_A.weight": (8, 1536),
    "blocks.0.output.dense.lora_B.weight": (384, 8),
    "final.classifier.bias": (4,),
}


def _minilm_delta(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=gen) * 1e-3 for k, shape in MINILM_LORA.items()}


def test_default_compression_is_at_least_8x_on_a_minilm_lora_state() -> None:
    delta = _minilm_delta()
    sketches = sketch_state(delta, SketchParams(), round=0, seed=0)
    dense_bytes = sum(t.numel() * 4 for t in delta.values())
    assert dense_bytes / sketches_nbytes(sketches) >= 8.0
    assert sketches["final.classifier.bias"].geometry.dense
    assert not sketches["blocks.0.intermediate.dense.lora_B.weight"].geometry.dense
    for compression in (4.0, 16.0, 32.0):
        s = sketch_state(delta, SketchParams(compression=compression), round=0, seed=0)
        assert dense_bytes / sketches_nbytes(s) >= compression


def test_tensor_geometry_sizes_tables_and_falls_back_to_dense() -> None:
    p = SketchParams()
    g = tensor_geometry("w", 3072, p, round=1, seed=5)
    assert (g.rows, g.cols, g.round, g.seed, g.dense) == (5, 76, 1, 5, False)
    assert g.rows * g.cols <= 3072 / 8
    assert tensor_geometry("b", 255, p, 0, 0).dense
    assert tensor_geometry("w", 3072, SketchParams(cols=1000), 0, 0).dense  # table would not be smaller
    assert tensor_geometry("w", 3072, SketchParams(cols=50, rows=3), 0, 0).table_shape == (3, 50)
    assert state_geometries({"w": 3072, "b": 4}, p, 1, 5)["w"] == g


def test_state_round_trip_is_exact_for_dense_and_sparse_tensors() -> None:
    sparse = torch.zeros(64, 48)
    sparse[3, 7], sparse[60, 1] = 2.5, -1.25
    state = {"sparse": sparse, "bias": torch.tensor([1.0, -2.0, 3.0])}
    before = {k: v.clone() for k, v in state.items()}
    params = SketchParams(cols=300, rows=5, dense_below=16, estimator="median")
    sketches = sketch_state(state, params, round=4, seed=11)
    back = unsketch_state(sketches, {k: tuple(v.shape) for k, v in state.items()}, params)
    for key in state:
        assert torch.equal(back[key], state[key])
        assert torch.equal(state[key], before[key])
    with pytest.raises(GeometryMismatchError):
        unsketch_state(sketches, {"sparse": (64, 48)}, params)  # no shape for "bias"
    with pytest.raises(GeometryMismatchError):
        unsketch_state(sketches, {"sparse": (64, 47), "bias": (3,)}, params)


def test_weighted_mean_in_sketch_space_decodes_to_the_weighted_mean_of_deltas() -> None:
    params = SketchParams(estimator="mean")
    a, b = _minilm_delta(1), _minilm_delta(2)
    device_only = {"final.head.weight": torch.ones(300)}
    sa = sketch_state({**a, **device_only}, params, round=0, seed=3)
    sb = sketch_state(b, params, round=0, seed=3)
    mean = weighted_mean([(sa, 1.0), (sb, 3.0)])
    expected = sketch_state({k: (a[k] + 3 * b[k]) / 4 for k in a}, params, round=0, seed=3)
    for key in a:
        np.testing.assert_allclose(mean[key].table, expected[key].table, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(mean["final.head.weight"].table, sa["final.head.weight"].table)  # holder only
    zero = weighted_mean([(sa, 0.0), (sb, 0.0)])
    np.testing.assert_allclose(
        zero[next(iter(a))].table, (sa[next(iter(a))].table + sb[next(iter(a))].table) / 2, rtol=1e-6
    )
    summed = weighted_sum([(sa, 1.0), (sb, -1.0)])
    assert set(summed) == set(sa)
    with pytest.raises(ConfigError):
        weighted_mean([(sa, -1.0)])
    with pytest.raises(ConfigError):
        weighted_sum([])
    with pytest.raises(ConfigError):
        weighted_sum([(sa, math.inf)])


def test_tables_rounded_to_fp16_travel_exactly_and_overflow_is_refused() -> None:
    params = SketchParams(table_dtype="fp16")
    gen = torch.Generator().manual_seed(3)
    state = {"blocks.0.q.lora_A.weight": torch.randn(8, 384, generator=gen) * 1e-3}
    (sketch,) = sketch_state(state, params, 2, 7).values()
    table = torch.from_numpy(sketch.table.copy())
    assert torch.equal(table, table.half().float())
    got = sketch_from_payload(sketch_to_payload(sketch, "fp16"), sketch.geometry)
    assert np.array_equal(got.table, sketch.table)  # the fp16 wire loses nothing more
    assert sketch.rounded("fp32") is sketch
    huge = CountSketch(np.full(sketch.geometry.table_shape, 1e6, dtype=np.float32), sketch.geometry)
    with pytest.raises(TensorError, match="overflows fp16"):
        huge.rounded("fp16")
    assert np.isfinite(huge.rounded("bf16").table).all()


def test_sketched_norm_estimates_the_norm_of_what_the_sketch_encodes() -> None:
    from elsa.params import SketchParams
    from elsa.sketch import sketch_state, sketched_norm

    g = torch.Generator().manual_seed(0)
    state = {"w": torch.randn(4096, generator=g), "b": torch.randn(64, generator=g)}
    exact = float(torch.cat([v.flatten() for v in state.values()]).norm())
    dense = sketch_state(state, SketchParams(rows=1, compression=1.0, dense_below=2**40), 1, 0)
    assert sketched_norm(dense) == pytest.approx(exact, rel=1e-6)
    estimates = [sketched_norm(sketch_state(state, SketchParams(), 1, seed)) for seed in range(20)]
    assert sum(estimates) / len(estimates) == pytest.approx(exact, rel=0.05)
