"""Benchmark: how fast trust quarantines malicious devices, and at what cost (DESIGN §2.5, §7.5).

BBC News over 3 edges x 4 devices with the packaged MiniLM; 25 % of the devices are malicious:
two label-flippers (``faults.label_flip``: they train on labels shifted by one class) and one
random-noise device (``faults.noise``: each round its local update is replaced by Gaussian noise
of ``noise_scale`` x the update's RMS), one on each edge in name order. Everything else of the
control plane and the fault model is at the run defaults (clustering on; trust EMA beta, tau_min,
the prediction temperature and ``noise_scale`` as recorded in the result file). Training is 5
local steps per round at lr 5e-3 (as in ``tests/e2e/test_trust_simulation.py``): the evidence
compares the devices' probe predictions, which separate hostile from honest devices only once the
models are confident (at lr 1e-3 with 3 steps per round and temperature 0.25, every device kept
evidence >= 0.75 for 6 rounds and nothing was quarantined; ``--learning-rate``/``--local-steps``
rerun such variants).

For IID data (``alpha: null``) and non-IID data (Dirichlet ``alpha: 0.5``) it runs the
simulation for ``cloud_rounds`` rounds and records, from the control plane's per-round
``control`` events and snapshots: the cloud round at which each malicious device was first
quarantined (or never), whether it was still quarantined at the end, the honest devices that
were ever quarantined (false-quarantine rate = their fraction of the honest devices), the
trust and evidence of every device after every round, and the test accuracy after every round.
Unless ``--no-clean``, the same config without malicious devices runs too, as the accuracy
reference.

Usage: ``python bench/trust_quarantine.py [--quick] [--seed 0] [--cloud-rounds 6] [--local-steps 5]
[--edge-rounds 1] [--learning-rate 5e-3] [--no-clean] [--threads T]
[--out bench/results/trust_quarantine.json]``
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchkit import (
    machine_info,
    merge_sections,
    print_table,
    run_study,
    set_torch_threads,
    study_parser,
)
from elsa.runtime.config import RunConfig, parse_config
from elsa.runtime.simulation import Simulation, device_name

NAME = "trust_quarantine"
LABEL_FLIP = (1, 6)
NOISE = (10,)
SETTINGS: dict[str, float | None] = {"iid": None, "non_iid": 0.5}

#: the study's run config, on top of RunConfig defaults (section -> fields)
OVERRIDES: dict[str, dict[str, Any]] = {
    "topology": {"edges": 3, "devices_per_edge": 4},
    "data": {"dataset": "bbc_news", "max_test_examples": 200},
    "train": {
        "cloud_rounds": 6,
        "edge_rounds": 1,
        "local_steps": 5,
        "learning_rate": 5e-3,
        "batch_size": 16,
        "max_length": 32,
    },
    "control": {"num_probes": 64, "basis_dim": 16},
}
QUICK_OVERRIDES: dict[str, dict[str, Any]] = {
    "train": {"cloud_rounds": 3, "local_steps": 1},
    "data": {"max_test_examples": 32, "max_train_examples": 480},
    "control": {"num_probes": 32, "basis_dim": 8},
}


def study_config(
    alpha: float | None, *, seed: int, quick: bool, malicious: bool, train: dict[str, Any] | None = None
) -> RunConfig:
    """The run config of one setting (with or without the malicious devices).

    ``train``: overrides of the train section (e.g. from the command line), applied last.
    """
    raw = merge_sections(RunConfig().model_dump(mode="json"), OVERRIDES)
    if quick:
        raw = merge_sections(raw, QUICK_OVERRIDES)
    extra: dict[str, dict[str, Any]] = {"data": {"alpha": alpha}, "train": dict(train or {})}
    if malicious:
        extra["faults"] = {"label_flip": list(LABEL_FLIP), "noise": list(NOISE)}
    raw = merge_sections(raw, extra)
    return parse_config({**raw, "name": NAME, "seed": seed}, source=f"{NAME} config")


def simulate(config: RunConfig, run_id: str) -> dict[str, Any]:
    """Run ``config``; per-round accuracy, control observations and snapshots."""
    observations: list[dict[str, Any]] = []

    def on_event(name: str, fields: dict[str, Any]) -> None:
        if name == "control":
            observations.append(
                {
                    "cloud_round": int(fields["cloud_round"]),
                    "evidence": dict(fields["evidence"]),
                    "newly_quarantined": list(fields["newly_quarantined"]),
                    "recovered": list(fields["recovered"]),
                }
            )

    started = time.perf_counter()
    result = Simulation.from_config(config, run_id=run_id).run(on_event)
    rounds = result.rounds[1:]
    return {
        "wall_s": time.perf_counter() - started,
        "accuracy_per_round": [r.test_accuracy for r in result.rounds],
        "test_loss_per_round": [r.test_loss for r in result.rounds],
        "trust_per_round": [r.control["trust"] for r in rounds],
        "quarantined_per_round": [r.control["quarantined"] for r in rounds],
        "clusters_per_round": [r.control["clusters"] for r in rounds],
        "observations": observations,
    }


def quarantine_summary(config: RunConfig, run: dict[str, Any]) -> dict[str, Any]:
    """First-quarantine round per malicious device, false quarantines of honest devices."""
    names = [device_name(i) for i in range(config.num_devices)]
    flip = {device_name(i) for i in config.faults.label_flip}
    noise = {device_name(i) for i in config.faults.noise}
    malicious = sorted(flip | noise)
    honest = [n for n in names if n not in flip | noise]
    first: dict[str, int | None] = dict.fromkeys(names)
    for cloud_round, quarantined in enumerate(run["quarantined_per_round"], start=1):
        for device in quarantined:
            if first[device] is None:
                first[device] = cloud_round
    final = set(run["quarantined_per_round"][-1]) if run["quarantined_per_round"] else set()
    falsely = [n for n in honest if first[n] is not None]
    return {
        "malicious": {
            d: {
                "kind": "label_flip" if d in flip else "noise",
                "first_quarantined_round": first[d],
                "quarantined_at_end": d in final,
                "final_trust": run["trust_per_round"][-1].get(d),
            }
            for d in malicious
        },
        "honest_ever_quarantined": {d: first[d] for d in falsely},
        "false_quarantine_rate": len(falsely) / len(honest) if honest else 0.0,
        "min_honest_final_trust": min(run["trust_per_round"][-1].get(d, 1.0) for d in honest),
        "final_accuracy": run["accuracy_per_round"][-1],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Each setting (malicious run, then the clean reference); returns the result record."""
    threads = set_torch_threads(args.threads)
    clean = not (args.no_clean or args.quick)
    train = {
        key: value
        for key, value in {
            "cloud_rounds": args.cloud_rounds,
            "local_steps": args.local_steps,
            "edge_rounds": args.edge_rounds,
            "learning_rate": args.learning_rate,
        }.items()
        if value is not None
    }
    settings: dict[str, Any] = {}
    for setting, alpha in SETTINGS.items():
        entry: dict[str, Any] = {"alpha": alpha}
        for variant in ("malicious", "clean") if clean else ("malicious",):
            config = study_config(
                alpha,
                seed=args.seed,
                quick=args.quick,
                malicious=variant == "malicious",
                train=train,
            )
            print(f"{setting} {variant}: {config.train.cloud_rounds} cloud rounds ...", flush=True)
            got = simulate(config, f"{NAME}-{setting}-{variant}")
            got["config"] = config.model_dump(mode="json")
            if variant == "malicious":
                got["summary"] = quarantine_summary(config, got)
                firsts = {d: m["first_quarantined_round"] for d, m in got["summary"]["malicious"].items()}
                print(
                    f"  first quarantined: {firsts}; false-quarantine rate "
                    f"{got['summary']['false_quarantine_rate']:.2f}",
                    flush=True,
                )
            print(f"  final accuracy {got['accuracy_per_round'][-1]:.3f}, {got['wall_s']:.0f} s", flush=True)
            entry[variant] = got
        settings[setting] = entry
    first = study_config(None, seed=args.seed, quick=args.quick, malicious=True, train=train)
    return {
        "benchmark": NAME,
        "description": "rounds to quarantine malicious devices, false quarantines and accuracy, IID vs non-IID",
        "machine": machine_info(),
        "params": {
            "model": "all-MiniLM-L6-v2 (packaged)",
            "dataset": first.data.dataset,
            "devices": first.num_devices,
            "edges": first.topology.edges,
            "label_flip": [device_name(i) for i in first.faults.label_flip],
            "noise": [device_name(i) for i in first.faults.noise],
            "noise_scale": first.faults.noise_scale,
            "malicious_fraction": (len(first.faults.label_flip) + len(first.faults.noise))
            / first.num_devices,
            "cloud_rounds": first.train.cloud_rounds,
            "edge_rounds": first.train.edge_rounds,
            "local_steps": first.train.local_steps,
            "learning_rate": first.train.learning_rate,
            "batch_size": first.train.batch_size,
            "max_length": first.train.max_length,
            "quantity_sigma": first.data.quantity_sigma,
            "num_probes": first.control.num_probes,
            "basis_dim": first.control.basis_dim,
            "trust_beta": first.control.trust_beta,
            "tau_min": first.control.tau_min,
            "trust_temperature": first.control.trust_temperature,
            "trust_singleton": first.control.trust_singleton,
            "seed": args.seed,
            "clean_reference": clean,
            "threads": threads,
            "quick": args.quick,
        },
        "settings": settings,
    }


def _round_or_never(value: int | None) -> str:
    return "never" if value is None else str(value)


def print_report(record: dict[str, Any]) -> None:
    """Per malicious device and setting: first quarantine round; then rates and accuracy."""
    settings = record["settings"]
    names = list(settings)
    devices = list(next(iter(settings.values()))["malicious"]["summary"]["malicious"])
    rows = []
    for d in devices:
        kind = settings[names[0]]["malicious"]["summary"]["malicious"][d]["kind"]
        rows.append(
            [
                f"{d} ({kind})",
                *(
                    _round_or_never(
                        settings[n]["malicious"]["summary"]["malicious"][d]["first_quarantined_round"]
                    )
                    for n in names
                ),
            ]
        )
    rows.append(
        [
            "false-quarantine rate (honest)",
            *(f"{settings[n]['malicious']['summary']['false_quarantine_rate']:.2f}" for n in names),
        ]
    )
    rows.append(
        ["final accuracy", *(f"{settings[n]['malicious']['summary']['final_accuracy']:.3f}" for n in names)]
    )
    if all("clean" in settings[n] for n in names):
        rows.append(
            [
                "final accuracy, no malicious",
                *(f"{settings[n]['clean']['accuracy_per_round'][-1]:.3f}" for n in names),
            ]
        )
    p = record["params"]
    print_table(
        f"Cloud round of first quarantine ({p['devices']} devices, {p['malicious_fraction']:.0%} malicious, "
        f"{p['cloud_rounds']} cloud rounds)",
        ["", *(f"{n} (alpha {settings[n]['alpha']})" for n in names)],
        rows,
    )


def main() -> None:
    """Parse arguments, run, print, write JSON."""
    parser = study_parser(__doc__, NAME, "smoke run: 3 rounds of 1 step, no clean runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cloud-rounds", type=int, default=None, help="default 6 (quick: 3)")
    parser.add_argument("--local-steps", type=int, default=None, help="default 5 (quick: 1)")
    parser.add_argument("--edge-rounds", type=int, default=None, help="default 1")
    parser.add_argument("--learning-rate", type=float, default=None, help="default 5e-3")
    parser.add_argument("--no-clean", action="store_true", help="skip the runs without malicious devices")
    run_study(parser, run, print_report)


if __name__ == "__main__":
    main()
