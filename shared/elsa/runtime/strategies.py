"""ELSA and its baselines as configurations of the one engine (DESIGN §6, §7).

:func:`strategy_config` turns an ELSA run config into the config of another strategy on the
*same data, model, seeds and step budget*: the same devices (Dirichlet partition of the same
seed), the same LoRA, batch size, learning rate and sequence length, and the same number of
optimizer steps summed over devices. What changes is only what defines each system:

========================  ======  =====  ==========  =====  =======  ======  ====================
strategy                  split   tiers  clustering  trust  sketch   SS-OP   split plan
========================  ======  =====  ==========  =====  =======  ======  ====================
``centralized``           no      1      no          no     no       no      (one device, IID)
``fedavg``                no      1      no          no     no       no      –
``splitfed``              yes     1      no          no     no       no      static, fp32 cuts
``hierfl``                no      2      no          no     no       no      –
``elsa``                  yes     2      as given    yes    yes      as set  as given
``elsa-no-<part>``        ELSA with one part switched off (clustering, trust, sketch, ssop)
``elsa-static-split``     ELSA with the config's fixed cut for every device
========================  ======  =====  ==========  =====  =======  ======  ====================

One-tier strategies have one aggregation server: one edge holding every device, and as many
aggregation rounds as ELSA has edge rounds in total (``cloud_rounds × edge_rounds`` rounds of
one edge round each), so every strategy aggregates after the same number of local steps.
*Centralized* is the upper bound: one device holding the whole training split (IID), running
the sum of every device's local steps per round, without faults (it has no one to distrust), at
half the learning rate: one optimizer taking every step in a row at the federated rate diverged
(measured on BBC News at 4e-3: 0.79 after 48 steps, then back to chance at 120; at 2e-3 it
stays at 0.83-0.89).
Baselines send exact fp32 adapters and fp32 cut tensors: the compression is part of ELSA.
"""

from __future__ import annotations

from typing import Any

from elsa.errors import ConfigError
from elsa.runtime.config import RunConfig, parse_config

#: the baselines, then ELSA, then its ablations (the order of every study's tables)
BASELINES = ("centralized", "fedavg", "splitfed", "hierfl")
ABLATIONS = ("elsa-no-clustering", "elsa-no-trust", "elsa-no-sketch", "elsa-no-ssop", "elsa-static-split")
STRATEGIES = (*BASELINES, "elsa", *ABLATIONS)

_PLAIN: dict[str, dict[str, Any]] = {
    "control": {"clustering": False, "trust": False, "dynamic_split": False},
    "sketch": {"enabled": False},
    "privacy": {"kappa": 0.0, "adapter_kappa": 0.0},
    "transport": {"dtype": "fp32"},
}

_ABLATION: dict[str, dict[str, dict[str, Any]]] = {
    "elsa-no-clustering": {"control": {"clustering": False}},
    "elsa-no-trust": {"control": {"trust": False}},
    "elsa-no-sketch": {"sketch": {"enabled": False}},
    "elsa-no-ssop": {"privacy": {"kappa": 0.0, "adapter_kappa": 0.0}},
    "elsa-static-split": {"control": {"dynamic_split": False}},
}


def _merged(raw: dict[str, Any], *overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = dict(raw)
    for override in overrides:
        for section, values in override.items():
            out[section] = {**out.get(section, {}), **values}
    return out


def strategy_config(config: RunConfig, name: str) -> RunConfig:
    """The config of strategy ``name`` for the ELSA config ``config`` (module docstring).

    ``config`` must describe ELSA itself (``strategy.split`` true, two tiers); ConfigError for
    an unknown strategy or another starting point. The result's ``strategy.name`` is ``name``.
    """
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")
    if not config.strategy.split or config.strategy.tiers != 2:
        raise ConfigError("strategy_config starts from an ELSA config (strategy.split true, tiers 2)")
    raw = config.model_dump(mode="json")
    raw["name"] = f"{config.name}-{name}"
    train = config.train
    devices = config.num_devices
    one_tier = {
        "topology": {"edges": 1, "devices_per_edge": devices},
        "train": {"cloud_rounds": train.cloud_rounds * train.edge_rounds, "edge_rounds": 1},
    }
    if name == "elsa":
        out = _merged(raw)
    elif name in _ABLATION:
        out = _merged(raw, _ABLATION[name])
    elif name == "hierfl":
        out = _merged(raw, _PLAIN, {"strategy": {"split": False}})
    elif name == "fedavg":
        out = _merged(raw, _PLAIN, one_tier, {"strategy": {"split": False, "tiers": 1}})
    elif name == "splitfed":
        out = _merged(raw, _PLAIN, one_tier, {"strategy": {"tiers": 1}})
    else:  # centralized
        out = _merged(
            raw,
            _PLAIN,
            one_tier,
            {
                "topology": {"edges": 1, "devices_per_edge": 1},
                "train": {
                    "local_steps": train.local_steps * devices,
                    "learning_rate": train.learning_rate / 2,
                },
                "data": {"alpha": None, "quantity_sigma": 0.0},
                "faults": {"label_flip": [], "noise": [], "dropout": 0.0},
                "strategy": {"split": False, "tiers": 1},
            },
        )
    out["strategy"] = {**out.get("strategy", {}), "name": name}
    return parse_config(out, source=f"strategy {name}")


def optimizer_steps(config: RunConfig) -> int:
    """Optimizer steps of a run summed over its devices (every device present every round)."""
    t = config.train
    return config.num_devices * t.cloud_rounds * t.edge_rounds * t.local_steps


def steps_per_round(config: RunConfig) -> int:
    """Optimizer steps per cloud round summed over devices (the x axis of convergence plots:
    ``round × steps_per_round`` is comparable across strategies)."""
    return config.num_devices * config.train.edge_rounds * config.train.local_steps
