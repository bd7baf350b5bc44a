"""A run's SS-OP (DESIGN §3): the semantic subspace of each cut and each device's noise.

Every node derives U for a cut from the same public probes and the same base model, once per
run and cut (:class:`RunPrivacy` caches it); the digest of U travels with the cloud's tasks so a
device can check it holds the very subspace everyone else holds. Each device perturbs with its
own generator: seeded from the operating system (``privacy.noise_seed: random``, the default:
nobody else can regenerate the noise) or from (run seed, device, cut) for reproducible studies.
"""

from __future__ import annotations

import numpy as np

from elsa.errors import ConfigError
from elsa.model.split import SplitModel
from elsa.perturb import ActivationNoise, CutSubspace, cut_subspace
from elsa.runtime.config import RunConfig
from elsa.runtime.nodes import DeviceData

__all__ = ["RunPrivacy", "derived_seed"]


def derived_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (numpy SeedSequence; stable across platforms)."""
    state = np.random.SeedSequence([abs(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31 | int(state[1]) >> 1) & (2**63 - 1)


class RunPrivacy:
    """SS-OP of one run on one node: subspaces per cut (lazy, cached) and device noise."""

    def __init__(self, model: SplitModel, probes: DeviceData, config: RunConfig) -> None:
        self.model = model
        self.probes = probes
        self.config = config
        self._subspaces: dict[int, CutSubspace] = {}

    @property
    def enabled(self) -> bool:
        """Whether activations are perturbed at all (κ > 0)."""
        return self.config.privacy.kappa > 0

    def subspace(self, head_blocks: int) -> CutSubspace:
        """U at the cut after ``head_blocks`` blocks (computed on first use)."""
        if head_blocks not in self._subspaces:
            self._subspaces[head_blocks] = cut_subspace(
                self.model,
                head_blocks,
                self.probes.input_ids,
                self.probes.attention_mask,
                self.config.privacy.rank,
            )
        return self._subspaces[head_blocks]

    def digest(self, head_blocks: int) -> str | None:
        """The digest of U at a cut, or None when SS-OP is off."""
        return self.subspace(head_blocks).digest if self.enabled else None

    def check(self, head_blocks: int, expected: str | None) -> None:
        """ConfigError when this node's U at a cut differs from the digest the cloud sent."""
        if expected is None or not self.enabled:
            return
        mine = self.subspace(head_blocks).digest
        if mine != expected:
            raise ConfigError(
                f"semantic subspace at cut {head_blocks} differs from the cloud's ({mine} != {expected}): "
                "this node's model or probe set is not the run's"
            )

    def noise(self, head_blocks: int, device_index: int) -> ActivationNoise | None:
        """The SS-OP a device applies at its cut, or None when κ = 0 (exactly off)."""
        if not self.enabled:
            return None
        seed = (
            derived_seed(self.config.seed, device_index, head_blocks)
            if self.config.privacy.noise_seed == "run"
            else None
        )
        return ActivationNoise(self.subspace(head_blocks), self.config.privacy.kappa, seed)
