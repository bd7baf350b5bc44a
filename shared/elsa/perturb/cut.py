"""SS-OP at a cut of the real model (DESIGN §3): public activations, the subspace, the noise.

The semantic subspace at the cut after ``h`` head blocks is estimated from the activations of
the *base* model (the run's initial adapter state, where LoRA is a no-op) on the public probe
set, every real (non-padding) token one sample. Every node holds the same base model and the
same probes, so every node derives the same U; :func:`~elsa.perturb.subspace_digest` lets them
check. :class:`ActivationNoise` is what a device applies to each lower-cut tensor before it
leaves: ``x + σ·(I − UUᵀ)ξ`` with its own generator.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

import torch

from elsa.errors import ConfigError
from elsa.model.adapters import AdapterState
from elsa.model.split import SplitModel
from elsa.params import PerturbParams, SplitParams
from elsa.perturb.ssop import ssop_perturb
from elsa.perturb.subspace import semantic_subspace, subspace_digest

__all__ = ["ActivationNoise", "CutSubspace", "cut_activations", "cut_subspace"]

_BATCH = 64


@torch.no_grad()
def cut_activations(
    model: SplitModel,
    head_blocks: int,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    state: AdapterState | None = None,
    batch_size: int = _BATCH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower-cut activations of every real token: ``(N, d)`` float32 and their ids ``(N,)`` int64.

    Runs embeddings + blocks ``[0, head_blocks)`` with ``state`` (default: the model's initial
    adapter state, i.e. the base model) over ``input_ids``/``attention_mask`` (B x S) in
    batches; padding positions are dropped. Inputs are not mutated.
    """
    if not 1 <= head_blocks < model.num_blocks:
        raise ConfigError(f"a cut needs 1 <= head_blocks < {model.num_blocks}, got {head_blocks}")
    tail = 1 if head_blocks < model.num_blocks - 1 else 0
    head = model.segments(SplitParams(head_blocks=head_blocks, tail_blocks=max(tail, 1))).head
    use = state if state is not None else model.initial_state()
    acts: list[torch.Tensor] = []
    ids: list[torch.Tensor] = []
    for start in range(0, int(input_ids.shape[0]), batch_size):
        batch_ids = input_ids[start : start + batch_size]
        mask = attention_mask[start : start + batch_size]
        hidden = head.run(use, batch_ids, mask).to(torch.float32)
        keep = mask.bool()
        acts.append(hidden[keep])
        ids.append(batch_ids[keep])
    return torch.cat(acts), torch.cat(ids).to(torch.long)


@dataclass(frozen=True)
class CutSubspace:
    """The semantic subspace U (d × r) at the cut after ``head_blocks`` blocks, and its digest."""

    head_blocks: int
    u: torch.Tensor
    digest: str


def cut_subspace(
    model: SplitModel, head_blocks: int, input_ids: torch.Tensor, attention_mask: torch.Tensor, rank: int
) -> CutSubspace:
    """U of rank ``rank`` from the base model's activations on the public probes at this cut."""
    acts, _ = cut_activations(model, head_blocks, input_ids, attention_mask)
    u = semantic_subspace(acts, rank)
    return CutSubspace(head_blocks, u, subspace_digest(u))


@dataclass
class ActivationNoise:
    """SS-OP of one device's lower-cut tensors: ``x + σ·(I − UUᵀ)ξ``, σ = κ × RMS of x's
    orthogonal component (per token).

    ``seed=None`` (the default for real deployments) seeds the noise from the operating
    system's entropy, so no other node can regenerate and subtract it; a fixed seed makes runs
    reproducible (benchmarks, runtime-equivalence tests) and must then stay private to the device.
    Each named stream ("train", "probe", "eval") draws from its own generator, so e.g. a local
    evaluation never shifts the noise of later training steps.
    """

    subspace: CutSubspace
    kappa: float
    seed: int | None = None
    generators: dict[str, torch.Generator] = field(init=False, default_factory=dict)
    _base: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        PerturbParams(kappa=self.kappa)  # validates kappa
        self._base = self.seed if self.seed is not None else secrets.randbits(63)

    def generator(self, stream: str) -> torch.Generator:
        """The generator of a stream (created on first use from the seed and the stream name)."""
        if stream not in self.generators:
            digest = hashlib.blake2b(f"{self._base}/{stream}".encode(), digest_size=8).digest()
            seed = int.from_bytes(digest, "little") & (2**63 - 1)
            self.generators[stream] = torch.Generator().manual_seed(seed)
        return self.generators[stream]

    def __call__(self, x: torch.Tensor, stream: str = "train") -> torch.Tensor:
        """The perturbed copy of ``x`` (..., d); gradients pass through unchanged."""
        return ssop_perturb(x, self.subspace.u, self.kappa, self.generator(stream))
