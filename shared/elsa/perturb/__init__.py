"""SS-OP, semantic-subspace orthogonal perturbation (DESIGN §3).

The semantic subspace U (rank r) at a cut is estimated from public probe activations of the
base model, identically on every node; transmitted activations get noise only in the
directions orthogonal to U, scaled by κ × RMS of their orthogonal component; adapter deltas get
isotropic noise before sketching. κ = 0 is exactly off.
"""

from elsa.params import PerturbParams
from elsa.perturb.cut import ActivationNoise, CutSubspace, cut_activations, cut_subspace
from elsa.perturb.ssop import orthogonal_component, perturb_state_delta, ssop_perturb
from elsa.perturb.subspace import semantic_subspace, subspace_digest

__all__ = [
    "ActivationNoise",
    "CutSubspace",
    "PerturbParams",
    "cut_activations",
    "cut_subspace",
    "orthogonal_component",
    "perturb_state_delta",
    "semantic_subspace",
    "ssop_perturb",
    "subspace_digest",
]
