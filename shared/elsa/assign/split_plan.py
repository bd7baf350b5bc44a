"""Resource-aware dynamic split planning (DESIGN §2.2).

For one device, choose the cut (h, t) — h head blocks and t tail blocks on the device, the
L − h − t blocks between them on the edge — minimising the estimated time of one split step:

    step_s(h, t) = (h + t) × device_block_step_s + (L − h − t) × edge_block_step_s
                   + cut_transfers_per_step × cut_bytes / throughput_bytes_per_s

subject to ``base_memory_bytes + (h + t) × block_memory_bytes <= memory_budget_bytes``,
h >= 1, t >= 1 and h + t <= L − 1 (the edge keeps at least one block).

The transfer term does not depend on the cut (a step always moves the same cut tensors), so the
choice is a trade of compute speed: a device faster per block than its edge keeps as many blocks
as memory allows; a slower one keeps the minimum. Ties (equal estimates) go to the smaller device
share h + t. The device share s is divided as h = ⌈s/2⌉, t = ⌊s/2⌋ (subject to the minimums): the
extra block goes to the head, which moves the transmitted lower cut deeper into the model.
"""

from __future__ import annotations

import math

from elsa.errors import ConfigError
from elsa.params import SplitParams, SplitPlanParams


def _check_nonnegative(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be finite and >= 0, got {value}")


def estimate_step_s(
    split: SplitParams,
    num_blocks: int,
    device_block_step_s: float,
    edge_block_step_s: float,
    cut_bytes: float,
    throughput_bytes_per_s: float,
    params: SplitPlanParams | None = None,
) -> float:
    """Estimated seconds of one split step for cut ``split`` (module docstring formula)."""
    params = params or SplitPlanParams()
    split.check_fits(num_blocks)
    if not throughput_bytes_per_s > 0:
        raise ConfigError(f"throughput_bytes_per_s must be > 0, got {throughput_bytes_per_s}")
    share = split.head_blocks + split.tail_blocks
    return (
        share * device_block_step_s
        + (num_blocks - share) * edge_block_step_s
        + params.cut_transfers_per_step * cut_bytes / throughput_bytes_per_s
    )


def _divide(share: int, params: SplitPlanParams) -> SplitParams:
    head = max(math.ceil(share / 2), params.min_head_blocks)
    tail = share - head
    if tail < params.min_tail_blocks:
        tail = params.min_tail_blocks
        head = share - tail
    return SplitParams(head_blocks=head, tail_blocks=tail)


def plan_split(
    num_blocks: int,
    device_block_step_s: float,
    edge_block_step_s: float,
    cut_bytes: float,
    throughput_bytes_per_s: float,
    memory_budget_bytes: int,
    block_memory_bytes: int,
    base_memory_bytes: int,
    params: SplitPlanParams | None = None,
) -> SplitParams:
    """The cut (h, t) with the smallest estimated step time (DESIGN §2.2; module docstring).

    ``num_blocks``: L; ``device_block_step_s`` / ``edge_block_step_s``: measured seconds per block
    per training step (forward + backward) on the device / on the edge; ``cut_bytes``: bytes of
    one cut tensor per step; ``throughput_bytes_per_s``: the device's link; memory arguments in
    bytes: the device's budget, one block's training footprint, and what the device needs
    whatever the cut (embeddings, task head, optimiser state, activations of the cut). Raises
    ConfigError on invalid numbers and when even the minimum cut does not fit in memory or
    leaves no edge block.
    """
    params = params or SplitPlanParams()
    for name, value in (
        ("device_block_step_s", device_block_step_s),
        ("edge_block_step_s", edge_block_step_s),
        ("cut_bytes", cut_bytes),
        ("memory_budget_bytes", memory_budget_bytes),
        ("block_memory_bytes", block_memory_bytes),
        ("base_memory_bytes", base_memory_bytes),
    ):
        _check_nonnegative(name, value)
    if not throughput_bytes_per_s > 0:
        raise ConfigError(f"throughput_bytes_per_s must be > 0, got {throughput_bytes_per_s}")
    smallest = params.min_head_blocks + params.min_tail_blocks
    if smallest > num_blocks - 1:
        raise ConfigError(
            f"a model of {num_blocks} blocks cannot keep {smallest} blocks on the device "
            f"and at least one on the edge"
        )
    largest = num_blocks - 1
    if block_memory_bytes > 0:
        largest = min(largest, math.floor((memory_budget_bytes - base_memory_bytes) / block_memory_bytes))
    if largest < smallest or base_memory_bytes > memory_budget_bytes:
        need = base_memory_bytes + smallest * block_memory_bytes
        raise ConfigError(
            f"device memory budget {memory_budget_bytes} B is too small: the minimum cut "
            f"(h={params.min_head_blocks}, t={params.min_tail_blocks}) needs {need} B"
        )
    best_share, best_s = smallest, math.inf
    for share in range(smallest, largest + 1):
        step_s = estimate_step_s(
            _divide(share, params),
            num_blocks,
            device_block_step_s,
            edge_block_step_s,
            cut_bytes,
            throughput_bytes_per_s,
            params,
        )
        # strictly better (beyond float noise) only: ties keep the smaller device share
        if not math.isfinite(best_s) or step_s < best_s - 1e-12 * max(abs(best_s), 1.0):
            best_share, best_s = share, step_s
    return _divide(best_share, params)
