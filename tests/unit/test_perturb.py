"""elsa.perturb: semantic subspace and SS-OP (DESIGN §3)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from elsa.errors import ConfigError, TensorError
from elsa.perturb import (
    PerturbParams,
    orthogonal_component,
    perturb_state_delta,
    semantic_subspace,
    ssop_perturb,
    subspace_digest,
)

D = 48


def _probe(seed: int = 0, n: int = 400, d: int = D, rank: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations with a planted rank-``rank`` signal (orthonormal basis returned) plus small noise."""
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, rank, generator=gen, dtype=torch.float64))
    scales = torch.tensor([10.0 - 2 * i for i in range(rank)], dtype=torch.float64)
    coeff = torch.randn(n, rank, generator=gen, dtype=torch.float64) * scales
    acts = coeff @ basis.T + 0.1 * torch.randn(n, d, generator=gen, dtype=torch.float64) + 3.0
    return acts.to(torch.float32), basis.to(torch.float32)


# --- semantic subspace -------------------------------------------------------------------


def test_subspace_recovers_the_planted_directions_with_a_fixed_sign_convention() -> None:
    acts, basis = _probe()
    u = semantic_subspace(acts, 4)
    assert (u.shape, u.dtype) == ((D, 4), torch.float32)
    torch.testing.assert_close(u.T @ u, torch.eye(4), atol=1e-5, rtol=0)
    # Same span as the planted basis (the offset 3.0 is removed by centring).
    torch.testing.assert_close(u @ u.T, basis @ basis.T, atol=0.01, rtol=0)
    pivots = u.abs().argmax(dim=0)
    assert bool((u[pivots, torch.arange(4)] > 0).all())
    # Ordered by variance: the first direction is the planted one with the largest scale.
    assert float((u[:, 0] @ basis[:, 0]).abs()) > 0.99


def test_subspace_is_bitwise_identical_for_identical_inputs_and_leading_dims_flatten() -> None:
    acts, _ = _probe()
    before = acts.clone()
    u1, u2 = semantic_subspace(acts, 6), semantic_subspace(acts.clone(), 6)
    assert torch.equal(u1, u2)
    assert subspace_digest(u1) == subspace_digest(u2)
    assert torch.equal(semantic_subspace(acts.reshape(20, 20, D), 6), u1)
    assert torch.equal(acts, before)
    assert subspace_digest(u1) != subspace_digest(semantic_subspace(acts, 5))


def test_subspace_is_identical_on_another_node() -> None:
    code = (
        "import torch\n"
        "from elsa.perturb import semantic_subspace, subspace_digest\n"
        "g = torch.Generator().manual_seed(123)\n"
        "acts = torch.randn(300, 64, generator=g) @ torch.randn(64, 64, generator=g)\n"
        "print(subspace_digest(semantic_subspace(acts, 8)))\n"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    g = torch.Generator().manual_seed(123)
    acts = torch.randn(300, 64, generator=g) @ torch.randn(64, 64, generator=g)
    assert other.stdout.strip() == subspace_digest(semantic_subspace(acts, 8))


def test_bad_subspace_inputs_are_rejected() -> None:
    acts, _ = _probe(n=10)
    for rank in (0, 10, D + 1):
        with pytest.raises(ConfigError, match="rank"):
            semantic_subspace(acts, rank)
    with pytest.raises(TensorError):
        semantic_subspace(torch.ones(10, dtype=torch.float32), 1)
    with pytest.raises(TensorError):
        semantic_subspace(torch.ones(10, 4, dtype=torch.int64), 1)
    bad = acts.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(TensorError, match="NaN"):
        semantic_subspace(bad, 2)


# --- SS-OP ---------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**31),
    st.integers(1, 8),
    st.sampled_from([0.5, 1.0, 2.0, 4.0]),
    st.sampled_from([(7, D), (2, 5, D), (D,)]),
)
def test_perturbation_is_orthogonal_to_the_subspace(
    seed: int, rank: int, kappa: float, shape: tuple[int, ...]
) -> None:
    acts, _ = _probe(seed % 5)
    u = semantic_subspace(acts, rank)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * 3
    before = x.clone()
    out = ssop_perturb(x, u, kappa, gen)
    assert (out.shape, out.dtype) == (x.shape, x.dtype)
    assert torch.equal(x, before)
    delta = (out - x).double()
    assert float(delta.norm()) > 0.1
    # The semantic coordinates are kept: Uᵀ(x̃ − x) vanishes up to float32 rounding.
    assert float((delta @ u.double()).abs().max()) < 1e-4 * float(delta.abs().max()) * math.sqrt(D)


def test_kappa_zero_is_exactly_the_identity_and_draws_nothing() -> None:
    acts, _ = _probe()
    u = semantic_subspace(acts, 4)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    x = torch.randn(3, 5, D)
    out = ssop_perturb(x, u, 0.0, gen)
    assert torch.equal(out, x)
    assert out.data_ptr() != x.data_ptr()
    assert torch.equal(gen.get_state(), state)
    delta = {"a": torch.randn(4, 4), "b": torch.randn(3)}
    same = perturb_state_delta(delta, 0.0, gen)
    assert all(torch.equal(same[k], delta[k]) for k in delta)
    assert torch.equal(gen.get_state(), state)


def test_noise_rms_is_kappa_times_the_orthogonal_rms() -> None:
    d, rank = 384, 16
    gen = torch.Generator().manual_seed(1)
    u, _ = torch.linalg.qr(torch.randn(d, rank, generator=gen))
    scale = torch.linspace(0.5, 5.0, 64).unsqueeze(1)  # rows of very different size
    x = torch.randn(64, d, generator=gen) * scale
    ortho = orthogonal_component(x, u)
    ortho_rms = ortho.pow(2).mean(dim=-1).sqrt()
    for kappa in (0.5, 1.0, 4.0):
        noise = ssop_perturb(x, u, kappa, gen) - x
        ratio = noise.pow(2).mean(dim=-1).sqrt() / (kappa * ortho_rms * math.sqrt((d - rank) / d))
        assert abs(float(ratio.mean()) - 1.0) < 0.02  # σ per token, not per tensor
        assert float((ratio - 1.0).abs().max()) < 0.25


def test_perturbation_is_reproducible_from_the_generator_seed_and_passes_gradients() -> None:
    acts, _ = _probe()
    u = semantic_subspace(acts, 4)
    x = torch.randn(2, 3, D, requires_grad=True)
    a = ssop_perturb(x, u, 1.0, torch.Generator().manual_seed(5))
    b = ssop_perturb(x, u, 1.0, torch.Generator().manual_seed(5))
    c = ssop_perturb(x, u, 1.0, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    a.sum().backward()  # type: ignore[no-untyped-call]
    assert x.grad is not None
    assert torch.equal(x.grad, torch.ones_like(x))


def test_half_precision_activations_keep_their_dtype() -> None:
    acts, _ = _probe()
    u = semantic_subspace(acts, 4)
    x = torch.randn(5, D).to(torch.bfloat16)
    out = ssop_perturb(x, u, 1.0, torch.Generator().manual_seed(0))
    assert out.dtype == torch.bfloat16
    assert not torch.equal(out, x)


def test_bad_ssop_inputs_are_rejected() -> None:
    u = torch.eye(D)[:, :4]
    gen = torch.Generator()
    for kappa in (-1.0, math.nan, math.inf):
        with pytest.raises(ConfigError, match="kappa"):
            ssop_perturb(torch.zeros(2, D), u, kappa, gen)
        with pytest.raises(ConfigError, match="kappa"):
            perturb_state_delta({"a": torch.zeros(2)}, kappa, gen)
    with pytest.raises(ConfigError, match="subspace"):
        ssop_perturb(torch.zeros(2, D + 1), u, 1.0, gen)
    with pytest.raises(TensorError):
        ssop_perturb(torch.zeros(2, D, dtype=torch.int64), u, 1.0, gen)
    with pytest.raises(TensorError):
        perturb_state_delta({"a": torch.zeros(2, dtype=torch.int64)}, 1.0, gen)
    for bad in ({"kappa": -0.1}, {"rank": 0}, {"adapter_kappa": math.nan}):
        with pytest.raises(ConfigError):
            PerturbParams(**bad)  # type: ignore[arg-type]
    assert not PerturbParams(kappa=0.0).enabled
    assert PerturbParams().enabled


# --- adapter deltas ------------------------------------------------------------------------------


def test_state_delta_noise_is_isotropic_scaled_per_tensor_and_order_independent() -> None:
    gen = torch.Generator().manual_seed(0)
    delta = {
        "big": torch.randn(200, 50, generator=gen) * 10,
        "small": torch.randn(100, 40, generator=gen) * 0.01,
    }
    before = {k: v.clone() for k, v in delta.items()}
    out = perturb_state_delta(delta, 0.5, torch.Generator().manual_seed(1))
    for key in delta:
        assert torch.equal(delta[key], before[key])
        noise = out[key] - delta[key]
        rms = float(delta[key].pow(2).mean().sqrt())
        assert abs(float(noise.pow(2).mean().sqrt()) / (0.5 * rms) - 1.0) < 0.05
        assert abs(float(np.corrcoef(noise.flatten().numpy(), delta[key].flatten().numpy())[0, 1])) < 0.05
    reordered = perturb_state_delta(
        dict(reversed(list(delta.items()))), 0.5, torch.Generator().manual_seed(1)
    )
    assert all(torch.equal(reordered[k], out[k]) for k in delta)
    zeros = perturb_state_delta({"z": torch.zeros(10)}, 2.0, torch.Generator())
    assert torch.equal(zeros["z"], torch.zeros(10))
