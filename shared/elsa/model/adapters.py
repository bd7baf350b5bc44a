"""Adapter state keyed by global block index (DESIGN §2.2, §2.7).

An :data:`AdapterState` maps a key to a tensor. Keys name the trainable parameters the same way
on every node, whatever its cut: ``blocks.<i>.<path inside block i>`` for LoRA factors of global
block ``i`` (e.g. ``blocks.3.attention.self.query.lora_A.weight``) and ``final.<module>.<param>``
for the fully-trained task head (e.g. ``final.classifier.weight``). Devices with different cut
points therefore aggregate block by block.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

AdapterState = dict[str, torch.Tensor]

_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")


def block_index(key: str) -> int | None:
    """Global block index a key belongs to, or None for task-head (``final.``) keys."""
    match = _BLOCK_KEY.match(key)
    return int(match.group(1)) if match else None


def key_from_param_name(name: str) -> str:
    """Segment parameter name -> adapter key: drops peft's adapter-name and wrapper levels.

    ``blocks.3.attention.self.query.lora_A.default.weight`` -> ``blocks.3.attention.self.query.lora_A.weight``;
    ``final.classifier.modules_to_save.default.weight`` -> ``final.classifier.weight``.
    """
    return name.replace(".modules_to_save.default.", ".").replace(".default.", ".")


def select(state: Mapping[str, torch.Tensor], keys: Iterable[str]) -> AdapterState:
    """The sub-state with exactly ``keys`` (no copy of tensors). KeyError names missing keys."""
    wanted = list(keys)
    missing = [k for k in wanted if k not in state]
    if missing:
        raise KeyError(f"adapter state lacks {len(missing)} keys, e.g. {missing[:3]}")
    return {k: state[k] for k in wanted}


def clone_state(state: Mapping[str, torch.Tensor]) -> AdapterState:
    """Detached deep copy (float32, contiguous). The input is not mutated."""
    return {k: v.detach().to(torch.float32).clone() for k, v in state.items()}


def state_numel(state: Mapping[str, torch.Tensor]) -> int:
    """Total number of scalars in a state."""
    return sum(int(v.numel()) for v in state.values())


def state_nbytes(state: Mapping[str, torch.Tensor]) -> int:
    """Total bytes of a state's tensors in their current dtype."""
    return sum(int(v.numel() * v.element_size()) for v in state.values())


def state_delta(new: Mapping[str, torch.Tensor], old: Mapping[str, torch.Tensor]) -> AdapterState:
    """``new - old`` key by key over ``new``'s keys (both unchanged)."""
    return {k: (v.detach() - old[k].detach()) for k, v in new.items()}


def max_abs_diff(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Largest absolute elementwise difference over the keys of ``a`` (for tests and reports)."""
    if not a:
        return 0.0
    return max(float((a[k].detach().float() - b[k].detach().float()).abs().max()) for k in a)
