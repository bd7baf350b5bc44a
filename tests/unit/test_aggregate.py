"""Weighted means of adapter states, key by key (DESIGN §2.8-2.9)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from elsa.aggregate import weighted_mean
from elsa.errors import AdapterMismatchError, ConfigError
from elsa.model.adapters import block_index, key_from_param_name, state_delta, state_numel


def test_weighted_mean_hand_computed() -> None:
    a = {"blocks.0.q.lora_A.weight": torch.tensor([1.0, 2.0])}
    b = {"blocks.0.q.lora_A.weight": torch.tensor([4.0, 8.0])}
    out = weighted_mean([(a, 1.0), (b, 2.0)])
    torch.testing.assert_close(out["blocks.0.q.lora_A.weight"], torch.tensor([3.0, 6.0]))


def test_keys_held_by_some_states_average_over_their_holders_only() -> None:
    device = {"blocks.0.x": torch.tensor([2.0]), "final.head.weight": torch.tensor([1.0])}
    other = {"blocks.0.x": torch.tensor([4.0]), "blocks.1.x": torch.tensor([10.0])}
    out = weighted_mean([(device, 3.0), (other, 1.0)])
    torch.testing.assert_close(out["blocks.0.x"], torch.tensor([2.5]))
    torch.testing.assert_close(out["blocks.1.x"], torch.tensor([10.0]))
    torch.testing.assert_close(out["final.head.weight"], torch.tensor([1.0]))


def test_all_zero_weights_fall_back_to_plain_mean() -> None:
    out = weighted_mean([({"k": torch.tensor([1.0])}, 0.0), ({"k": torch.tensor([3.0])}, 0.0)])
    torch.testing.assert_close(out["k"], torch.tensor([2.0]))


def test_inputs_are_not_mutated_and_bad_input_is_rejected() -> None:
    a = {"k": torch.tensor([1.0, 1.0])}
    weighted_mean([(a, 1.0), ({"k": torch.tensor([3.0, 3.0])}, 1.0)])
    torch.testing.assert_close(a["k"], torch.tensor([1.0, 1.0]))
    with pytest.raises(ConfigError):
        weighted_mean([])
    with pytest.raises(ConfigError):
        weighted_mean([(a, -1.0)])
    with pytest.raises(AdapterMismatchError):
        weighted_mean([(a, 1.0), ({"k": torch.zeros(3)}, 1.0)])


@given(
    st.lists(st.floats(0.1, 100.0), min_size=1, max_size=6),
    st.lists(st.floats(-10, 10), min_size=4, max_size=4),
)
def test_mean_of_identical_states_is_that_state(weights: list[float], values: list[float]) -> None:
    s = {"k": torch.tensor(values)}
    out = weighted_mean([(s, w) for w in weights])
    torch.testing.assert_close(out["k"], s["k"], rtol=1e-5, atol=1e-5)


def test_adapter_key_helpers() -> None:
    assert key_from_param_name("blocks.3.attention.self.query.lora_A.default.weight") == (
        "blocks.3.attention.self.query.lora_A.weight"
    )
    assert key_from_param_name("final.classifier.modules_to_save.default.bias") == "final.classifier.bias"
    assert block_index("blocks.12.mlp.up_proj.lora_B.weight") == 12
    assert block_index("final.head.weight") is None
    delta = state_delta({"k": torch.tensor([3.0])}, {"k": torch.tensor([1.0])})
    torch.testing.assert_close(delta["k"], torch.tensor([2.0]))
    assert state_numel({"a": torch.zeros(2, 3), "b": torch.zeros(4)}) == 10


def test_norm_bound_scales_bring_outliers_to_a_multiple_of_the_median() -> None:
    from elsa.aggregate import norm_bound_scales

    norms = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 60.0}
    scales = norm_bound_scales(norms, 3.0)
    assert scales["a"] == scales["b"] == scales["c"] == 1.0
    assert scales["d"] == pytest.approx(3.0 * 2.5 / 60.0)
    assert norm_bound_scales(norms, 0.0) == dict.fromkeys(norms, 1.0)  # off
    assert norm_bound_scales({"a": 1.0, "b": 100.0}, 3.0) == {"a": 1.0, "b": 1.0}  # too few peers
    assert norm_bound_scales({"a": 0.0, "b": 0.0, "c": 5.0}, 3.0) == dict.fromkeys("abc", 1.0)
    with pytest.raises(ConfigError):
        norm_bound_scales({"a": float("nan"), "b": 1.0, "c": 1.0}, 3.0)
    with pytest.raises(ConfigError):
        norm_bound_scales(norms, -1.0)
