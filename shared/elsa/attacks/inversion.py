"""Attack (b): learned inversions of cut activations, trained on public text (DESIGN §3, §7.4).

The attacker (e.g. an honest-but-curious edge) holds the public base model, the public probe
set and therefore the public semantic subspace U, and any amount of public text. It runs
public text through the head, perturbs the activations with the *same* SS-OP (same U, same κ,
its own noise draws), and fits a map from what it would receive to the word embedding of the
token that produced it. At attack time it maps each received row and decodes it by cosine
nearest neighbour in the embedding table (:func:`~elsa.attacks.recovery.cosine_top_k`), so
tokens that never occur in the public text can still be named.

Two attackers share the same features (:func:`subspace_features`: the exact coordinates in U,
which SS-OP never touches, next to the perturbed orthogonal part, each standardised on the
public training rows):

* :class:`RidgeInversion` — least squares with a ridge penalty chosen on a held-out slice of
  the public rows; the optimal *linear* attacker for the noise it was trained on.
* :class:`MlpInversion` — one hidden layer (``f → hidden → d``, GELU). It is trained as a
  *retrieval* model rather than a regressor: its output, normalised, is scored against the
  (normalised, frozen) embeddings of the tokens seen in the public text with a softmax at
  temperature ``τ`` and cross-entropy on the true token. This matches the metric (which token
  is nearest), measured stronger than a cosine-regression MLP at high κ (0.79 vs 0.65 top-1 at
  κ = 4, first cut of MiniLM), and, because the output lives in embedding space and is decoded
  against the *full* table, it is not capped by the public vocabulary as a classifier over a
  restricted vocabulary would be. A fresh noise draw per epoch keeps it from memorising noise.
  Size and epochs are bounded (defaults: 1024 hidden units, 4 epochs: about 25 s for 34k
  public tokens on one CPU thread); initialisation and shuffling come from one seeded
  ``torch.Generator``, so a fit is deterministic for a given seed, data and thread count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from elsa.errors import ConfigError, TensorError

__all__ = ["InversionParams", "MlpInversion", "RidgeInversion", "subspace_features"]

#: features of one training epoch: ``epoch -> (N, f)``
EpochFeatures = Callable[[int], torch.Tensor]


@dataclass(frozen=True)
class InversionParams:
    """Hyper-parameters of the learned inversions (validated on construction, ConfigError).

    ``ridge_alphas``: candidate penalties, relative to the mean eigenvalue of the standardised
    Gram matrix; the one with the best mean cosine on ``validation_fraction`` of the public rows
    is refitted on all of them. ``hidden``, ``epochs``, ``batch_size``, ``learning_rate`` (Adam)
    and ``temperature`` (softmax over cosine similarities) shape the MLP. ``seed`` drives every
    random choice of the fits (validation split, initialisation, shuffling).
    """

    ridge_alphas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    validation_fraction: float = 0.1
    hidden: int = 1024
    epochs: int = 4
    batch_size: int = 256
    learning_rate: float = 1e-3
    temperature: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.ridge_alphas or not all(math.isfinite(a) and a > 0 for a in self.ridge_alphas):
            raise ConfigError(f"ridge_alphas must be non-empty, finite and > 0, got {self.ridge_alphas}")
        if not 0 < self.validation_fraction < 1:
            raise ConfigError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        for name in ("hidden", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("learning_rate", "temperature"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be finite and > 0, got {value}")


def subspace_features(x: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
    """The attacker's features of received rows ``x`` (N, d): ``[x U, x − x U Uᵀ]`` (N, r + d).

    U (d, r) is the public semantic subspace; SS-OP leaves ``x U`` exactly as the device
    computed it and puts all its noise into the second block. ``u=None`` returns ``x`` as
    float32. A new float32 tensor; inputs are not mutated.
    """
    if x.dim() != 2 or not x.is_floating_point():
        raise TensorError(f"received rows must be a floating (N, d) tensor, got {x.dtype} {tuple(x.shape)}")
    xf = x.detach().to(torch.float32)
    if u is None:
        return xf.clone()
    if u.dim() != 2 or u.shape[0] != x.shape[1]:
        raise ConfigError(f"subspace of shape {tuple(u.shape)} does not fit rows of width {x.shape[1]}")
    uf = u.detach().to(device=xf.device, dtype=torch.float32)
    kept = xf @ uf
    return torch.cat([kept, xf - kept @ uf.T], dim=1)


def _check_training(features: torch.Tensor, token_ids: torch.Tensor, embeddings: torch.Tensor) -> None:
    if features.dim() != 2 or not features.is_floating_point():
        raise TensorError(
            f"features must be a floating (N, f) tensor, got {features.dtype} {tuple(features.shape)}"
        )
    if embeddings.dim() != 2 or not embeddings.is_floating_point():
        raise TensorError(f"embeddings must be a floating (V, d) tensor, got {tuple(embeddings.shape)}")
    if token_ids.dim() != 1 or token_ids.shape[0] != features.shape[0]:
        raise TensorError(
            f"token_ids {tuple(token_ids.shape)} do not match {int(features.shape[0])} feature rows"
        )
    if token_ids.dtype not in (torch.int32, torch.int64):
        raise TensorError(f"token_ids must be integer, got {token_ids.dtype}")
    if int(features.shape[0]) < 2:
        raise ConfigError(f"an inversion needs at least 2 training rows, got {int(features.shape[0])}")
    if int(token_ids.min()) < 0 or int(token_ids.max()) >= int(embeddings.shape[0]):
        raise TensorError(f"token ids outside the embedding table [0, {int(embeddings.shape[0])})")


def _standardiser(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column mean and scale (std; 1 where a column is constant), float32."""
    mean = features.mean(dim=0)
    std = features.std(dim=0)
    return mean, torch.where(std > 1e-8, std, torch.ones_like(std))


def _unit_targets(embeddings: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    return F.normalize(embeddings.detach().to(torch.float32)[token_ids.to(torch.long)], dim=1)


@dataclass(frozen=True)
class RidgeInversion:
    """A fitted linear inversion ``features → embedding``: ``((f − mean) / scale) W + bias``."""

    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    alpha: float

    @classmethod
    def fit(
        cls,
        features: torch.Tensor,
        token_ids: torch.Tensor,
        embeddings: torch.Tensor,
        params: InversionParams | None = None,
    ) -> RidgeInversion:
        """Least squares from ``features`` (N, f) to the unit word embedding of ``token_ids`` (N,).

        ``embeddings`` is the (V, d) word-embedding table. The penalty is chosen among
        ``params.ridge_alphas`` by mean cosine on a seeded validation slice, then the model is
        refitted on all rows; solved in float64 through one eigendecomposition per fit. Inputs
        are not mutated.
        """
        p = params if params is not None else InversionParams()
        _check_training(features, token_ids, embeddings)
        x = features.detach().to(torch.float32)
        y = _unit_targets(embeddings, token_ids)
        alpha = p.ridge_alphas[0]
        n_val = int(x.shape[0] * p.validation_fraction)
        if len(p.ridge_alphas) > 1 and n_val >= 1 and x.shape[0] - n_val >= 2:
            order = torch.from_numpy(np.random.default_rng(p.seed).permutation(int(x.shape[0])))
            val, train = order[:n_val], order[n_val:]
            scores = [
                float(F.cosine_similarity(model.predict(x[val]), y[val], dim=1).mean())
                for model in _ridge_path(x[train], y[train], p.ridge_alphas)
            ]
            alpha = p.ridge_alphas[int(np.argmax(scores))]  # the first best on ties
        return _ridge_path(x, y, (alpha,))[0]

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted embeddings ``(N, d)`` float32 of ``features`` (N, f); not mutated."""
        if features.dim() != 2 or features.shape[1] != self.mean.shape[0]:
            raise TensorError(f"expected features (N, {self.mean.shape[0]}), got {tuple(features.shape)}")
        z = (features.detach().to(torch.float32) - self.mean) / self.scale
        return z @ self.weight + self.bias


def _ridge_path(x: torch.Tensor, y: torch.Tensor, alphas: tuple[float, ...]) -> list[RidgeInversion]:
    """Ridge fits of standardised ``x`` to ``y`` for each relative penalty in ``alphas``."""
    mean, scale = _standardiser(x)
    z = ((x - mean) / scale).to(torch.float64)
    y_mean = y.mean(dim=0)
    eigenvalues, q = torch.linalg.eigh(z.T @ z)
    projected = q.T @ (z.T @ (y.to(torch.float64) - y_mean.to(torch.float64)))
    base = float(eigenvalues.clamp_min(0).mean())
    fits = []
    for a in alphas:
        lam = a * base if base > 0 else a
        weight = (q @ (projected / (eigenvalues.clamp_min(0) + lam)[:, None])).to(torch.float32)
        fits.append(RidgeInversion(mean, scale, weight, y_mean, a))
    return fits


@dataclass(frozen=True)
class MlpInversion:
    """A fitted one-hidden-layer inversion ``features → embedding direction`` (see module doc)."""

    mean: torch.Tensor
    scale: torch.Tensor
    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor

    @classmethod
    def fit(
        cls,
        features: torch.Tensor | EpochFeatures,
        token_ids: torch.Tensor,
        embeddings: torch.Tensor,
        params: InversionParams | None = None,
    ) -> MlpInversion:
        """Train on ``features`` (N, f), or on ``features(epoch)`` — a fresh (N, f) draw per
        epoch, rows aligned with ``token_ids`` (N,) — against the word-embedding table (V, d).

        Softmax cross-entropy over the cosine similarities (÷ temperature) between the output
        and the embeddings of the distinct ids in ``token_ids``; Adam, ``params.epochs`` passes
        in seeded random order. Standardisation comes from the epoch-0 features. Deterministic
        for a given seed, inputs and torch thread count; global RNG state is untouched; inputs
        are not mutated.
        """
        p = params if params is not None else InversionParams()
        draw: EpochFeatures = features if callable(features) else (lambda _epoch: features)
        first = draw(0)
        _check_training(first, token_ids, embeddings)
        generator = torch.Generator().manual_seed(p.seed)
        mean, scale = _standardiser(first.detach().to(torch.float32))
        vocab = torch.unique(token_ids.to(torch.long))
        classes = F.normalize(embeddings.detach().to(torch.float32)[vocab], dim=1)
        targets = torch.searchsorted(vocab, token_ids.to(torch.long))
        f, d = int(first.shape[1]), int(embeddings.shape[1])
        params_ = [
            _uniform((p.hidden, f), f, generator),
            _uniform((p.hidden,), f, generator),
            _uniform((d, p.hidden), p.hidden, generator),
            _uniform((d,), p.hidden, generator),
        ]
        optimiser = torch.optim.Adam(params_, lr=p.learning_rate)
        n = int(first.shape[0])
        for epoch in range(p.epochs):
            x = first if epoch == 0 else draw(epoch)
            if tuple(x.shape) != tuple(first.shape):
                raise TensorError(f"epoch {epoch} features {tuple(x.shape)} differ from {tuple(first.shape)}")
            z = (x.detach().to(torch.float32) - mean) / scale
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, p.batch_size):
                rows = order[start : start + p.batch_size]
                out = _forward(z[rows], *params_)
                logits = F.normalize(out, dim=1) @ classes.T / p.temperature
                loss = F.cross_entropy(logits, targets[rows])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimiser.step()
        w1, b1, w2, b2 = (t.detach().clone() for t in params_)
        return cls(mean, scale, w1, b1, w2, b2)

    @torch.no_grad()
    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted embedding directions ``(N, d)`` float32 of ``features`` (N, f); not mutated."""
        if features.dim() != 2 or features.shape[1] != self.mean.shape[0]:
            raise TensorError(f"expected features (N, {self.mean.shape[0]}), got {tuple(features.shape)}")
        z = (features.detach().to(torch.float32) - self.mean) / self.scale
        return _forward(z, self.w1, self.b1, self.w2, self.b2)


def _uniform(shape: tuple[int, ...], fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """``U(−1/√fan_in, 1/√fan_in)`` (the ``nn.Linear`` default) from ``generator``, trainable."""
    bound = 1.0 / math.sqrt(fan_in)
    return torch.empty(shape).uniform_(-bound, bound, generator=generator).requires_grad_(True)


def _forward(
    z: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor
) -> torch.Tensor:
    return F.gelu(z @ w1.T + b1) @ w2.T + b2
