"""SS-OP: semantic-subspace orthogonal perturbation of transmitted tensors (DESIGN §3).

A tensor x (rows of width d) becomes ``x + σ·(I − UUᵀ)ξ`` with ``ξ ~ N(0, I)`` drawn from an
explicit ``torch.Generator``: the directions of the semantic subspace U are kept exactly and
the rest, where token identity and surface detail live, is drowned in noise scaled to the
orthogonal component's own RMS. Adapter deltas get isotropic noise scaled to their RMS
(:func:`perturb_state_delta`). ``kappa = 0`` is exactly off: values are returned unchanged and
no random number is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from elsa.errors import ConfigError, TensorError

__all__ = ["orthogonal_component", "perturb_state_delta", "ssop_perturb"]


def _check_kappa(kappa: float) -> None:
    if not (math.isfinite(kappa) and kappa >= 0):
        raise ConfigError(f"kappa must be finite and >= 0, got {kappa}")


def _check_subspace(x: torch.Tensor, u: torch.Tensor) -> None:
    if not x.is_floating_point():
        raise TensorError(f"SS-OP needs a floating tensor, got {x.dtype}")
    if x.dim() < 1 or u.dim() != 2 or u.shape[0] != x.shape[-1]:
        raise ConfigError(
            f"subspace of shape {tuple(u.shape)} does not fit tensor of shape {tuple(x.shape)}; "
            "expected U of shape (d, r) with d = x.shape[-1]"
        )


def orthogonal_component(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``x − (x U) Uᵀ``: the part of each row of ``x`` (..., d) orthogonal to U (d, r).

    Computed in float32 (float64 when ``x`` is float64); returns a new tensor of that dtype on
    ``x``'s device; inputs are not mutated.
    """
    _check_subspace(x, u)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(dtype)
    uf = u.to(device=x.device, dtype=dtype)
    return xf - (xf @ uf) @ uf.T


def ssop_perturb(x: torch.Tensor, u: torch.Tensor, kappa: float, generator: torch.Generator) -> torch.Tensor:
    """SS-OP of device→edge activations ``x`` of shape (..., d) against subspace U (d, r).

    Returns a new tensor of ``x``'s shape, dtype and device: ``x + σ·(I − UUᵀ)ξ`` where ξ has
    one N(0, 1) draw per element (drawn in float32 on ``generator``'s device, then moved) and σ
    is per row (token): ``σ = kappa · RMS`` over the d entries of that row's orthogonal
    component. The expected noise RMS per row is therefore ``σ · sqrt((d − r) / d)``. Rows
    with no orthogonal component get no noise. The noise is computed without autograd, so
    gradients flow through as the identity (what the device needs to back-propagate the
    edge's gradient). ``kappa = 0`` returns ``x.clone()`` and leaves ``generator`` untouched.
    ``x`` is not mutated.
    """
    _check_kappa(kappa)
    _check_subspace(x, u)
    if kappa == 0:
        return x.clone()
    with torch.no_grad():
        ortho = orthogonal_component(x.detach(), u)
        sigma = kappa * ortho.pow(2).mean(dim=-1, keepdim=True).sqrt()
        xi = torch.randn(x.shape, generator=generator, device=generator.device, dtype=torch.float32)
        noise = orthogonal_component(xi.to(device=x.device, dtype=ortho.dtype), u) * sigma
    return x + noise.to(x.dtype)


def perturb_state_delta(
    delta: Mapping[str, torch.Tensor], kappa: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Isotropic noise on adapter deltas before sketching (DESIGN §3): ``δ + κ·RMS(δ)·ξ`` per tensor.

    Adapter tensors have no semantic subspace, so the noise is isotropic with ``σ = kappa ·
    RMS(δ)`` per tensor (a zero tensor stays zero). Keys are processed in sorted order so the
    draws from ``generator`` do not depend on mapping order. Returns new tensors of each
    input's shape, dtype and device (``kappa = 0``: clones, no draw); inputs are not mutated.
    """
    _check_kappa(kappa)
    out: dict[str, torch.Tensor] = {}
    for key in sorted(delta):
        t = delta[key].detach()
        if not t.is_floating_point():
            raise TensorError(f"{key!r}: adapter delta must be floating, got {t.dtype}")
        if kappa == 0 or t.numel() == 0:
            out[key] = t.clone()
            continue
        tf = t.to(torch.float64 if t.dtype == torch.float64 else torch.float32)
        sigma = kappa * tf.pow(2).mean().sqrt()
        xi = torch.randn(t.shape, generator=generator, device=generator.device, dtype=torch.float32)
        out[key] = (tf + sigma * xi.to(device=t.device, dtype=tf.dtype)).to(t.dtype)
    return out
