"""Resource-aware dynamic split planning (DESIGN §2.2)."""

from __future__ import annotations

from typing import Any

import pytest

from elsa.assign import estimate_step_s, plan_split
from elsa.errors import ConfigError
from elsa.params import SplitParams, SplitPlanParams

MB = 1_000_000
# L = 6 blocks; each block takes 10 MB to train; the base (embeddings, head, cut buffers) 100 MB
COMMON: dict[str, Any] = {
    "num_blocks": 6,
    "cut_bytes": 2 * MB,
    "throughput_bytes_per_s": 10 * MB,
    "block_memory_bytes": 10 * MB,
    "base_memory_bytes": 100 * MB,
}


def test_estimate_hand_computed() -> None:
    # (h + t) = 3 on the device at 0.02 s, 3 on the edge at 0.01 s, 2 cuts of 2 MB at 10 MB/s
    step = estimate_step_s(SplitParams(2, 1), 6, 0.02, 0.01, 2 * MB, 10 * MB)
    assert step == pytest.approx(3 * 0.02 + 3 * 0.01 + 2 * 0.2)
    assert estimate_step_s(
        SplitParams(2, 1), 6, 0.02, 0.01, 2 * MB, 10 * MB, SplitPlanParams(cut_transfers_per_step=4)
    ) == (pytest.approx(3 * 0.02 + 3 * 0.01 + 4 * 0.2))
    with pytest.raises(ConfigError):
        estimate_step_s(SplitParams(3, 3), 6, 0.02, 0.01, 2 * MB, 10 * MB)


def test_a_device_faster_than_its_edge_keeps_as_many_blocks_as_allowed() -> None:
    plan = plan_split(device_block_step_s=0.005, edge_block_step_s=0.01, memory_budget_bytes=10**9, **COMMON)
    assert plan == SplitParams(head_blocks=3, tail_blocks=2)  # h + t = L - 1 = 5, extra block to the head


def test_memory_binds() -> None:
    # budget for exactly 3 blocks: 100 + 3 x 10 = 130 MB (and a byte short of 4)
    plan = plan_split(
        device_block_step_s=0.005, edge_block_step_s=0.01, memory_budget_bytes=140 * MB - 1, **COMMON
    )
    assert plan == SplitParams(head_blocks=2, tail_blocks=1)


def test_a_device_slower_than_its_edge_keeps_the_minimum() -> None:
    plan = plan_split(device_block_step_s=0.05, edge_block_step_s=0.01, memory_budget_bytes=10**9, **COMMON)
    assert plan == SplitParams(head_blocks=1, tail_blocks=1)


def test_equal_speeds_tie_to_the_smaller_device_share() -> None:
    plan = plan_split(device_block_step_s=0.01, edge_block_step_s=0.01, memory_budget_bytes=10**9, **COMMON)
    assert plan == SplitParams(head_blocks=1, tail_blocks=1)


def test_a_weak_device_gets_a_smaller_share_than_a_strong_one() -> None:
    weak = plan_split(
        device_block_step_s=0.008, edge_block_step_s=0.01, memory_budget_bytes=125 * MB, **COMMON
    )
    strong = plan_split(
        device_block_step_s=0.002, edge_block_step_s=0.01, memory_budget_bytes=10**9, **COMMON
    )
    assert weak.head_blocks + weak.tail_blocks < strong.head_blocks + strong.tail_blocks


def test_the_link_does_not_move_the_cut_but_is_in_the_estimate() -> None:
    fast = plan_split(device_block_step_s=0.005, edge_block_step_s=0.01, memory_budget_bytes=10**9, **COMMON)
    slow_link = {**COMMON, "throughput_bytes_per_s": 10_000}
    slow = plan_split(
        device_block_step_s=0.005, edge_block_step_s=0.01, memory_budget_bytes=10**9, **slow_link
    )
    assert fast == slow
    assert estimate_step_s(slow, 6, 0.005, 0.01, 2 * MB, 10_000) > estimate_step_s(
        fast, 6, 0.005, 0.01, 2 * MB, 10 * MB
    )


def test_minimum_block_parameters_are_honoured() -> None:
    plan = plan_split(
        device_block_step_s=0.05,
        edge_block_step_s=0.01,
        memory_budget_bytes=10**9,
        params=SplitPlanParams(min_head_blocks=2, min_tail_blocks=1),
        **COMMON,
    )
    assert plan == SplitParams(head_blocks=2, tail_blocks=1)


def test_infeasible_budgets_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="too small"):
        plan_split(device_block_step_s=0.005, edge_block_step_s=0.01, memory_budget_bytes=119 * MB, **COMMON)
    with pytest.raises(ConfigError, match="too small"):
        plan_split(device_block_step_s=0.005, edge_block_step_s=0.01, memory_budget_bytes=50 * MB, **COMMON)
    with pytest.raises(ConfigError, match="blocks"):
        plan_split(
            device_block_step_s=0.005,
            edge_block_step_s=0.01,
            memory_budget_bytes=10**9,
            **{**COMMON, "num_blocks": 2},
        )
    with pytest.raises(ConfigError):
        plan_split(device_block_step_s=-1.0, edge_block_step_s=0.01, memory_budget_bytes=10**9, **COMMON)
    with pytest.raises(ConfigError):
        plan_split(
            device_block_step_s=0.01,
            edge_block_step_s=0.01,
            memory_budget_bytes=10**9,
            **{**COMMON, "throughput_bytes_per_s": 0},
        )
