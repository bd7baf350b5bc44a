"""The privacy study: every attack against SS-OP-perturbed cut activations, per κ (DESIGN §7.4).

Threat model. The attacker sees what a device transmits at the lower cut (the edge does) and
holds everything public: the base model (hence its word-embedding table), the public probe set
(hence the semantic subspace U at that cut), the SS-OP algorithm and κ (configuration), and
public text. It does not see the device's noise draws. For each κ the device's private
activations are perturbed once with the device's generator; the attacker trains on its own
public activations perturbed with *its own* generator (the adaptive attacker of DESIGN §3).

Attacks (names used in rows and tables):

* ``nn`` — cosine nearest neighbour of each received row in the embedding table.
* ``lsq`` — :class:`~elsa.attacks.inversion.RidgeInversion` on :func:`subspace_features`.
* ``mlp`` — :class:`~elsa.attacks.inversion.MlpInversion` on the same features, a fresh noise
  draw per epoch.
* ``lsq_u`` / ``mlp_u`` — the same two attackers on the kept coordinates ``x U`` alone. SS-OP
  never perturbs them, so these rows are the leakage floor no κ can remove (they are trained
  once and applied to each κ's received rows, whose U-coordinates equal the clean ones up to
  float rounding).

The perturbation is passed in (``perturb``, the signature of
:func:`elsa.perturb.ssop_perturb`), so the study measures exactly what the system transmits
while this package stays independent of :mod:`elsa.perturb`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from elsa.attacks.inversion import InversionParams, MlpInversion, RidgeInversion, subspace_features
from elsa.attacks.recovery import TOP_K, Recovery, cosine_top_k, recovery_rate, token_mask
from elsa.errors import ConfigError, TensorError

__all__ = [
    "ATTACKS",
    "AttackRow",
    "Perturbation",
    "TokenActivations",
    "attack_rows",
    "noise_generator",
]

#: ``perturb(x, u, kappa, generator)`` → the transmitted copy of x: :func:`elsa.perturb.ssop_perturb`
Perturbation = Callable[[torch.Tensor, torch.Tensor, float, torch.Generator], torch.Tensor]

#: every attack, in table order
ATTACKS: tuple[str, ...] = ("nn", "lsq", "mlp", "lsq_u", "mlp_u")

_DEVICE, _ATTACKER = 0, 1


@dataclass(frozen=True)
class TokenActivations:
    """Cut activations of real tokens, one row each: ``activations`` (N, d) float, ``token_ids`` (N,) int64."""

    activations: torch.Tensor
    token_ids: torch.Tensor

    def __post_init__(self) -> None:
        a, ids = self.activations, self.token_ids
        if a.dim() != 2 or not a.is_floating_point():
            raise TensorError(f"activations must be a floating (N, d) tensor, got {a.dtype} {tuple(a.shape)}")
        if ids.dim() != 1 or ids.dtype not in (torch.int32, torch.int64) or ids.shape[0] != a.shape[0]:
            raise TensorError(
                f"token_ids must be (N,) integer with N = {int(a.shape[0])}, got {ids.dtype} {tuple(ids.shape)}"
            )

    def __len__(self) -> int:
        return int(self.token_ids.shape[0])

    def without(self, exclude_ids: Collection[int]) -> TokenActivations:
        """The rows whose token is not in ``exclude_ids`` (e.g. special tokens), as a new record."""
        keep = token_mask(self.token_ids, exclude_ids)
        return TokenActivations(self.activations[keep], self.token_ids[keep].to(torch.long))


@dataclass(frozen=True)
class AttackRow:
    """Token recovery of one attack at one κ."""

    kappa: float
    attack: str
    top1: float
    top5: float
    n: int

    def as_dict(self) -> dict[str, float | int | str]:
        """A JSON-ready mapping (kappa, attack, top1, top5, n)."""
        return {"kappa": self.kappa, "attack": self.attack, "top1": self.top1, "top5": self.top5, "n": self.n}


def noise_generator(seed: int, role: int, index: int) -> torch.Generator:
    """A CPU generator for one noise stream: ``role`` 0 = the device, 1 = the attacker; ``index``
    = position of κ in the study. Independent streams derived from ``seed`` by numpy's
    SeedSequence, so the attacker never reuses the device's draws."""
    state = np.random.SeedSequence([seed, role, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def _check_inputs(
    public: TokenActivations,
    private: TokenActivations,
    embeddings: torch.Tensor,
    u: torch.Tensor,
    kappas: Sequence[float],
    attacks: Sequence[str],
) -> None:
    d = int(private.activations.shape[1])
    if int(public.activations.shape[1]) != d:
        raise TensorError(f"public rows have width {int(public.activations.shape[1])}, private rows {d}")
    if embeddings.dim() != 2 or int(embeddings.shape[1]) != d or not embeddings.is_floating_point():
        raise TensorError(f"embeddings must be a floating (V, {d}) table, got {tuple(embeddings.shape)}")
    if u.dim() != 2 or int(u.shape[0]) != d or not 1 <= int(u.shape[1]) <= d:
        raise ConfigError(f"subspace U must have shape ({d}, r) with 1 <= r <= {d}, got {tuple(u.shape)}")
    if not kappas:
        raise ConfigError("no kappa to attack")
    bad = [k for k in kappas if not (math.isfinite(k) and k >= 0)]
    if bad:
        raise ConfigError(f"kappa values must be finite and >= 0, got {bad}")
    unknown = sorted(set(attacks) - set(ATTACKS))
    if unknown or not attacks:
        raise ConfigError(f"unknown or no attacks {unknown}; choose from {list(ATTACKS)}")


def attack_rows(
    public: TokenActivations,
    private: TokenActivations,
    embeddings: torch.Tensor,
    u: torch.Tensor,
    kappas: Sequence[float],
    perturb: Perturbation,
    *,
    exclude_ids: Collection[int] = (),
    attacks: Sequence[str] = ATTACKS,
    params: InversionParams | None = None,
) -> list[AttackRow]:
    """Run ``attacks`` against ``private`` rows perturbed at each κ in ``kappas``.

    ``public``: the attacker's clean cut activations of public text (its training data);
    ``private``: the device's clean cut activations of private text (perturbed here, once per
    κ, with the device's generator); ``embeddings``: the (V, d) word-embedding table; ``u``:
    the public subspace (d, r) the perturbation uses; ``perturb``: the perturbation
    (:func:`elsa.perturb.ssop_perturb`). Rows of tokens in ``exclude_ids`` (special tokens) are
    dropped from training and scoring. Noise streams and fits are seeded by ``params.seed``.
    Returns one row per (κ, attack), κ in the given order, attacks in :data:`ATTACKS` order.
    Inputs are not mutated. Raises ConfigError / TensorError on bad arguments.
    """
    p = params if params is not None else InversionParams()
    _check_inputs(public, private, embeddings, u, kappas, attacks)
    train = public.without(exclude_ids)
    test = private.without(exclude_ids)
    if len(test) == 0 or len(train) < 2:
        raise ConfigError(
            f"too few tokens after excluding special ids: {len(train)} public, {len(test)} private"
        )
    table = embeddings.detach().to(torch.float32)
    k = min(TOP_K, int(table.shape[0]))
    chosen = [a for a in ATTACKS if a in set(attacks)]

    def score(vectors: torch.Tensor) -> Recovery:
        return recovery_rate(cosine_top_k(vectors, table, k), test.token_ids)

    kept_models: dict[str, RidgeInversion | MlpInversion] = {}
    kept_train = subspace_features(train.activations, u)[:, : int(u.shape[1])]
    rows: list[AttackRow] = []
    for index, kappa in enumerate(kappas):
        received = perturb(test.activations, u, kappa, noise_generator(p.seed, _DEVICE, index))
        attacker = noise_generator(p.seed, _ATTACKER, index)
        features = subspace_features(received, u)
        for name in chosen:
            if name == "nn":
                got = score(received)
            elif name == "lsq":
                seen = subspace_features(perturb(train.activations, u, kappa, attacker), u)
                got = score(RidgeInversion.fit(seen, train.token_ids, table, p).predict(features))
            elif name == "mlp":

                def draw(_epoch: int, g: torch.Generator = attacker, kap: float = kappa) -> torch.Tensor:
                    return subspace_features(perturb(train.activations, u, kap, g), u)

                got = score(MlpInversion.fit(draw, train.token_ids, table, p).predict(features))
            else:  # lsq_u / mlp_u: the kept coordinates only, trained once
                if name not in kept_models:
                    fit = RidgeInversion.fit if name == "lsq_u" else MlpInversion.fit
                    kept_models[name] = fit(kept_train, train.token_ids, table, p)
                got = score(kept_models[name].predict(features[:, : int(u.shape[1])]))
            rows.append(AttackRow(float(kappa), name, got.top1, got.top5, got.n))
    return rows
