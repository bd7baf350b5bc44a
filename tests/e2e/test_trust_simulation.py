"""Trust in a real run of the simulation runtime (DESIGN §2.5): MiniLM on BBC News, 6 devices,
one label-flipper and one random-noise device (its update replaced by Gaussian noise 20x the
honest update's RMS).

Each cloud round the devices run the public probes through their freshly trained split models;
the cloud compares each device's tempered probe predictions with its cluster's trust-weighted
consensus. The hostile devices' trust must fall below tau_min within a few rounds (they are then
weighted 0 but keep training), honest devices must stay above it, and the global model must
still learn.
"""

from __future__ import annotations

from typing import Any

import pytest

from elsa.runtime.config import parse_config
from elsa.runtime.simulation import Simulation

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

FLIPPER, NOISY = "device-001", "device-004"


def test_hostile_devices_are_quarantined_and_honest_ones_are_not() -> None:
    config = parse_config(
        {
            "name": "trust",
            "seed": 0,
            "data": {"alpha": None, "max_train_examples": 600, "max_test_examples": 100},
            "topology": {"edges": 2, "devices_per_edge": 3},
            "train": {
                "learning_rate": 0.005,
                "batch_size": 16,
                "max_length": 32,
                "local_steps": 5,
                "edge_rounds": 2,
                "cloud_rounds": 5,
            },
            "control": {
                "num_probes": 64
            },  # trust_temperature 0.05, relative evidence, tau_min 0.75, beta 0.7
            "faults": {"label_flip": [1], "noise": [4]},
            # exact adapter exchanges: merged in sketch space, the noise device's huge delta spreads
            # collision noise over its whole cluster's model and its honest edge-mates lose trust
            # too (measured: devices 3 and 5 quarantined with 8x sketches)
            "sketch": {"enabled": False},
        }
    )
    events: list[dict[str, Any]] = []
    result = Simulation.from_config(config).run(
        lambda name, f: events.append(f) if name == "control" else None
    )

    final = result.rounds[-1].control
    honest = [n for n in final["trust"] if n not in (FLIPPER, NOISY)]
    assert len(honest) == 4
    assert set(final["quarantined"]) == {FLIPPER, NOISY}, final["trust"]
    for name in honest:  # never quarantined, in any round
        assert all(name not in r.control["quarantined"] for r in result.rounds[1:]), name
        assert final["trust"][name] >= config.control.tau_min
    first = {
        n: next(r.cloud_round for r in result.rounds[1:] if n in r.control["quarantined"])
        for n in (FLIPPER, NOISY)
    }
    assert max(first.values()) <= config.train.cloud_rounds
    newly = [n for e in events for n in e["newly_quarantined"]]
    assert sorted(newly) == sorted({FLIPPER, NOISY})
    # quarantined devices kept training (they reported probes every round)
    assert all(set(e["evidence"]) >= {FLIPPER, NOISY} for e in events)
    accuracy = [r.test_accuracy for r in result.rounds]
    assert accuracy[-1] is not None and accuracy[0] is not None
    assert accuracy[-1] >= accuracy[0] + 0.4, accuracy
