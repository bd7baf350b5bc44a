"""Privacy attacks ELSA ships against itself (DESIGN §3, §7.4): token recovery from cut activations.

* :func:`nearest_neighbour_recovery` — each transmitted row vs the word-embedding table.
* :class:`RidgeInversion`, :class:`MlpInversion` — learned inversions trained on public text,
  adapted to SS-OP (same public subspace, same κ, the attacker's own noise draws).
* :func:`attack_rows` — every attack for a list of κ, one :class:`AttackRow` each.

Pure functions of tensors: the model, the texts and the perturbation are passed in
(``elsa.runtime.attack_study`` builds them from a run config).
"""

from elsa.attacks.inversion import InversionParams, MlpInversion, RidgeInversion, subspace_features
from elsa.attacks.recovery import (
    TOP_K,
    Recovery,
    cosine_top_k,
    nearest_neighbour_recovery,
    recovery_rate,
    token_mask,
)
from elsa.attacks.study import (
    ATTACKS,
    AttackRow,
    Perturbation,
    TokenActivations,
    attack_rows,
    noise_generator,
)

__all__ = [
    "ATTACKS",
    "TOP_K",
    "AttackRow",
    "InversionParams",
    "MlpInversion",
    "Perturbation",
    "Recovery",
    "RidgeInversion",
    "TokenActivations",
    "attack_rows",
    "cosine_top_k",
    "nearest_neighbour_recovery",
    "noise_generator",
    "recovery_rate",
    "subspace_features",
    "token_mask",
]
