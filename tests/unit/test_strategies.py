"""Baselines and ablations as configurations of the one engine (DESIGN §6).

Config derivation is checked directly; the engine paths the baselines add (devices that hold the
whole model, one aggregation tier, dropout) run for real on MiniLM (marked slow).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from elsa.errors import ConfigError
from elsa.runtime.config import RunConfig, load_config, parse_config
from elsa.runtime.simulation import Simulation
from elsa.runtime.strategies import ABLATIONS, STRATEGIES, optimizer_steps, strategy_config

ROOT = Path(__file__).resolve().parents[2]
STUDY = load_config(ROOT / "configs" / "study.yaml")


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_has_the_same_data_seed_model_and_step_budget(name: str) -> None:
    config = strategy_config(STUDY, name)
    assert config.strategy.name == name
    assert config.seed == STUDY.seed and config.model == STUDY.model
    assert config.data.dataset == STUDY.data.dataset
    assert config.data.max_train_examples == STUDY.data.max_train_examples
    assert config.data.max_test_examples == STUDY.data.max_test_examples
    assert optimizer_steps(config) == optimizer_steps(STUDY)
    t, s = config.train, STUDY.train
    assert (t.batch_size, t.max_length) == (s.batch_size, s.max_length)
    # centralized takes every step on one optimizer: half the rate (it diverged at the federated one)
    assert t.learning_rate == s.learning_rate / (2 if name == "centralized" else 1)
    if name == "centralized":
        assert config.num_devices == 1 and config.data.alpha is None
    else:
        assert config.num_devices == STUDY.num_devices
        assert config.data.alpha == STUDY.data.alpha and t.local_steps == s.local_steps


def test_baselines_switch_off_what_defines_elsa() -> None:
    fedavg, splitfed, hierfl = (strategy_config(STUDY, n) for n in ("fedavg", "splitfed", "hierfl"))
    assert (fedavg.strategy.split, fedavg.strategy.tiers, fedavg.topology.edges) == (False, 1, 1)
    assert (splitfed.strategy.split, splitfed.strategy.tiers, splitfed.topology.edges) == (True, 1, 1)
    assert (hierfl.strategy.split, hierfl.strategy.tiers, hierfl.topology.edges) == (
        False,
        2,
        STUDY.topology.edges,
    )
    for config in (fedavg, splitfed, hierfl):
        assert not config.sketch.enabled and config.privacy.kappa == 0
        assert not config.control.trust and not config.control.clustering and not config.control.dynamic_split
        assert config.transport.dtype == "fp32"
    # one tier: as many aggregations as ELSA has edge rounds
    assert fedavg.train.cloud_rounds == STUDY.train.cloud_rounds * STUDY.train.edge_rounds
    assert fedavg.train.edge_rounds == 1


@pytest.mark.parametrize("name", ABLATIONS)
def test_an_ablation_changes_one_part_of_elsa(name: str) -> None:
    full = STUDY.model_dump(mode="json")
    ablated = strategy_config(STUDY, name).model_dump(mode="json")
    changed = {
        (section, key)
        for section, values in full.items()
        if isinstance(values, dict) and section != "strategy"
        for key, value in values.items()
        if ablated[section][key] != value
    }
    expected = {
        "elsa-no-clustering": {("control", "clustering")},
        "elsa-no-trust": {("control", "trust")},
        "elsa-no-sketch": {("sketch", "enabled")},
        "elsa-no-ssop": {("privacy", "kappa")},
        "elsa-static-split": {("control", "dynamic_split")},
    }
    assert changed == expected[name]


def test_unknown_strategies_and_non_elsa_starting_points_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown strategy"):
        strategy_config(STUDY, "fedprox")
    with pytest.raises(ConfigError, match="starts from an ELSA config"):
        strategy_config(strategy_config(STUDY, "fedavg"), "elsa")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"strategy": {"split": False}}, "sketch.enabled false"),
        ({"strategy": {"split": False}, "sketch": {"enabled": False}, "privacy": {"kappa": 1.0}}, "kappa"),
        ({"strategy": {"tiers": 1}}, "tiers 1 needs"),
    ],
)
def test_inconsistent_strategy_switches_are_config_errors(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(overrides)


def test_the_services_refuse_simulation_only_strategies() -> None:
    RunConfig().check_service_runtime()
    for name in ("fedavg", "splitfed", "hierfl", "centralized"):
        with pytest.raises(ConfigError, match="simulation-only"):
            strategy_config(STUDY, name).check_service_runtime()
    with pytest.raises(ConfigError, match="simulation-only"):
        parse_config({"faults": {"dropout": 0.2}}).check_service_runtime()


# -- the engine paths, on the real model -----------------------------------------------------------

TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 3,
    "data": {"alpha": 0.5, "max_train_examples": 96, "max_test_examples": 24},
    "topology": {"edges": 2, "devices_per_edge": 2},
    "train": {"cloud_rounds": 2, "edge_rounds": 1, "local_steps": 2, "batch_size": 8, "max_length": 16},
    "control": {"num_probes": 16, "basis_dim": 8, "dynamic_split": False},
}


def _run(config: RunConfig) -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return Simulation.from_config(config).run()
    finally:
        torch.set_num_threads(threads)


def _bytes(result: Any, kind: str) -> int:
    return sum(int(r.bytes.get(kind, 0)) for r in result.rounds)


@pytest.mark.slow
def test_a_device_holding_the_whole_model_trains_exactly_like_an_fp32_split() -> None:
    """FedAvg (no split) and SplitFed (split, fp32 cuts, no noise) compute the same gradients:
    the same global adapter; only what travels differs (no cut tensors; body adapters instead)."""
    base = parse_config(TINY)
    fedavg, splitfed = _run(strategy_config(base, "fedavg")), _run(strategy_config(base, "splitfed"))
    for key, value in splitfed.global_state.items():
        torch.testing.assert_close(fedavg.global_state[key], value, rtol=0, atol=1e-6)
    assert _bytes(fedavg, "activations") == _bytes(fedavg, "gradients") == 0
    assert _bytes(splitfed, "activations") > 0 and _bytes(splitfed, "gradients") > 0
    # body adapters travel with the no-split device's updates: more adapter bytes up
    assert _bytes(fedavg, "adapters_device_to_edge") > _bytes(splitfed, "adapters_device_to_edge") > 0
    # one tier: nothing between edge and cloud
    for result in (fedavg, splitfed):
        assert _bytes(result, "adapters_edge_to_cloud") == _bytes(result, "adapters_cloud_to_edge") == 0
        assert _bytes(result, "adapters_edge_to_device") == 0  # the next round's global model instead
        assert _bytes(result, "adapters_cloud_to_device") > 0
    hierfl = _run(strategy_config(base, "hierfl"))
    assert _bytes(hierfl, "activations") == 0 and _bytes(hierfl, "adapters_edge_to_cloud") > 0


@pytest.mark.slow
def test_dropout_leaves_devices_out_of_rounds_reproducibly() -> None:
    config = parse_config({**TINY, "faults": {"dropout": 0.5}, "train": {**TINY["train"], "cloud_rounds": 3}})
    sim = Simulation.from_config(config)
    present = [sim.present(r) for r in range(1, 40)]
    assert all(len(p) >= 1 for p in present)
    assert present == [sim.present(r) for r in range(1, 40)]  # seeded by (seed, round)
    share = sum(len(p) for p in present) / (len(present) * config.num_devices)
    assert 0.35 < share < 0.65
    result = sim.run()
    assert [r.participants for r in result.rounds[1:]] == [len(sim.present(r)) for r in (1, 2, 3)]
    assert result.rounds[-1].test_accuracy is not None


def test_elsa_simulate_refuses_an_unknown_strategy_before_loading_anything(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from elsa.cli import app

    result = CliRunner().invoke(app, ["simulate", "--strategy", "fedprox", "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "unknown strategy 'fedprox'" in result.output and "fedavg" in result.output
    assert not any(tmp_path.iterdir())
