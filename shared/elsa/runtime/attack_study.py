"""The privacy study of a run config (DESIGN §7.4): inputs for :mod:`elsa.attacks`, built here.

:func:`prepare_attack_study` loads what the study needs from a :class:`RunConfig`: the run's
base model (the initial adapter state, in which LoRA is a no-op: what every device transmits
before training and what the attacker holds), its word-embedding table and special token ids,
the public probe set (for the semantic subspace, exactly as the run derives it), the
attacker's public text — a seeded sample of Guardian headlines, the shipped probe set
excluded — and the device's private-like text — a seeded sample of the training split of the
run's dataset. :func:`attack_cut` then runs every attack at one cut and subspace rank against
what actually travels: SS-OP (:func:`elsa.perturb.ssop_perturb`), then the run's wire dtype
(``transport.dtype``; the attacker knows it and simulates both on its training text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from elsa.attacks import ATTACKS, AttackRow, InversionParams, Perturbation, TokenActivations, attack_rows
from elsa.data import load_dataset, load_probe_set, read_guardian_headlines, train_test_split
from elsa.errors import ConfigError
from elsa.model.split import SplitModel
from elsa.model.tokenize import encode_texts
from elsa.perturb import ssop_perturb
from elsa.perturb.cut import cut_activations, cut_subspace
from elsa.runtime.config import RunConfig
from elsa.runtime.nodes import DeviceData
from elsa.runtime.probing import load_probes
from elsa.runtime.simulation import load_run_model

__all__ = [
    "DEFAULT_KAPPAS",
    "AttackStudy",
    "CutResult",
    "attack_cut",
    "cut_inputs",
    "prepare_attack_study",
    "study_kappas",
    "transmitted",
]

#: κ values every study reports (plus the config's own κ)
DEFAULT_KAPPAS: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)
DEFAULT_PUBLIC_TEXTS = 2000
DEFAULT_PRIVATE_TEXTS = 100
_WIRE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def transmitted(wire_dtype: str) -> Perturbation:
    """SS-OP followed by the cast to the wire dtype (``fp32``/``fp16``/``bf16``), back in float32:
    the rows an edge receives from a device."""
    if wire_dtype not in _WIRE_DTYPES:
        raise ConfigError(f"unknown wire dtype {wire_dtype!r}; choose from {sorted(_WIRE_DTYPES)}")
    dtype = _WIRE_DTYPES[wire_dtype]

    def perturb(x: torch.Tensor, u: torch.Tensor, kappa: float, generator: torch.Generator) -> torch.Tensor:
        return ssop_perturb(x, u, kappa, generator).to(dtype).to(torch.float32)

    return perturb


def study_kappas(config: RunConfig, kappas: Sequence[float] | None = None) -> tuple[float, ...]:
    """The κ values to attack, ascending and distinct: ``kappas`` if given, else
    :data:`DEFAULT_KAPPAS` plus the config's ``privacy.kappa``. ConfigError on a bad value."""
    chosen = list(kappas) if kappas else [*DEFAULT_KAPPAS, config.privacy.kappa]
    bad = [k for k in chosen if not (np.isfinite(k) and k >= 0)]
    if bad:
        raise ConfigError(f"kappa values must be finite and >= 0, got {bad}")
    return tuple(sorted({float(k) for k in chosen}))


@dataclass(frozen=True)
class AttackStudy:
    """Everything the attacks need from one run config (tokenised texts, model, probes)."""

    config: RunConfig
    model: SplitModel
    embeddings: torch.Tensor
    special_ids: tuple[int, ...]
    probes: DeviceData
    public: tuple[torch.Tensor, torch.Tensor]
    private: tuple[torch.Tensor, torch.Tensor]
    public_texts: int
    private_texts: int


def _sample(texts: Sequence[str], n: int, seed: int, stream: int) -> list[str]:
    """A seeded sample of ``min(n, len(texts))`` texts, in sample order."""
    rng = np.random.default_rng([seed, stream])
    chosen = rng.choice(len(texts), size=min(n, len(texts)), replace=False)
    return [texts[int(i)] for i in chosen]


def prepare_attack_study(
    config: RunConfig,
    public_texts: int = DEFAULT_PUBLIC_TEXTS,
    private_texts: int = DEFAULT_PRIVATE_TEXTS,
    model: SplitModel | None = None,
) -> AttackStudy:
    """Load the run's model (or use ``model``, which must be the run's) and the study texts.

    Public: ``public_texts`` Guardian headlines not in the shipped probe set; private:
    ``private_texts`` texts of the run's training split (fewer when fewer exist); both
    tokenised at ``train.max_length`` and sampled with the run seed. ConfigError/DataError
    on a config the study cannot serve.
    """
    if public_texts < 2 or private_texts < 1:
        raise ConfigError(f"need >= 2 public and >= 1 private texts, got {public_texts} and {private_texts}")
    split_model = model if model is not None else load_run_model(config, config.resolved_num_labels())
    tokenizer = split_model.task_model.tokenizer
    if tokenizer is None:
        raise ConfigError("the task model has no tokenizer: the attack study needs one")
    probes_text = set(load_probe_set())
    public_pool = [t for t in read_guardian_headlines() if t not in probes_text]
    train, _test = train_test_split(load_dataset(config.data.dataset), config.data.test_fraction, config.seed)
    public = _sample(public_pool, public_texts, config.seed, 1)
    private = _sample(list(train.texts), private_texts, config.seed, 2)
    max_length = config.train.max_length
    embeddings = split_model.task_model.hf_model.get_input_embeddings().weight.detach().to(torch.float32)
    return AttackStudy(
        config=config,
        model=split_model,
        embeddings=embeddings,
        special_ids=tuple(int(i) for i in tokenizer.all_special_ids),
        probes=load_probes(split_model, config),
        public=encode_texts(tokenizer, public, max_length),
        private=encode_texts(tokenizer, private, max_length),
        public_texts=len(public),
        private_texts=len(private),
    )


def cut_inputs(study: AttackStudy, head_blocks: int) -> tuple[TokenActivations, TokenActivations]:
    """(public, private) clean activations of every real token at the cut after ``head_blocks``."""
    public = TokenActivations(*cut_activations(study.model, head_blocks, *study.public))
    private = TokenActivations(*cut_activations(study.model, head_blocks, *study.private))
    return public, private


@dataclass(frozen=True)
class CutResult:
    """The attacks at one cut and subspace rank: one row per (κ, attack)."""

    head_blocks: int
    rank: int
    subspace_digest: str
    public_tokens: int
    private_tokens: int
    rows: list[AttackRow] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "head_blocks": self.head_blocks,
            "rank": self.rank,
            "subspace_digest": self.subspace_digest,
            "public_tokens": self.public_tokens,
            "private_tokens": self.private_tokens,
            "rows": [r.as_dict() for r in self.rows],
        }


def attack_cut(
    study: AttackStudy,
    kappas: Sequence[float],
    head_blocks: int | None = None,
    rank: int | None = None,
    *,
    attacks: Sequence[str] = ATTACKS,
    params: InversionParams | None = None,
    inputs: tuple[TokenActivations, TokenActivations] | None = None,
) -> CutResult:
    """Every attack in ``attacks`` at the cut after ``head_blocks`` (default: the config's) with
    SS-OP of rank ``rank`` (default: ``privacy.rank``), for each κ in ``kappas``.

    U comes from the base model on the run's probes, as in the run; received rows are SS-OP'd
    and cast to ``transport.dtype`` (:func:`transmitted`). ``inputs`` reuses
    :func:`cut_inputs` of the same cut. ``params`` defaults to :class:`InversionParams` seeded
    with the run seed. Special tokens are not scored.
    """
    config = study.config
    h = head_blocks if head_blocks is not None else config.model.head_blocks
    r = rank if rank is not None else config.privacy.rank
    subspace = cut_subspace(study.model, h, study.probes.input_ids, study.probes.attention_mask, r)
    public, private = inputs if inputs is not None else cut_inputs(study, h)
    p = params if params is not None else InversionParams(seed=config.seed)
    rows = attack_rows(
        public,
        private,
        study.embeddings,
        subspace.u,
        kappas,
        transmitted(config.transport.dtype),
        exclude_ids=study.special_ids,
        attacks=attacks,
        params=p,
    )
    return CutResult(
        head_blocks=h,
        rank=r,
        subspace_digest=subspace.digest,
        public_tokens=len(public.without(study.special_ids)),
        private_tokens=len(private.without(study.special_ids)),
        rows=rows,
    )
