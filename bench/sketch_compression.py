"""Benchmark: adapter bytes and accuracy with count-sketched adapter exchanges vs uncompressed.

DESIGN §3. The same simulated run (packaged MiniLM, 3 edges x 2 devices, Dirichlet α = 0.5,
SS-OP off so that only the adapter exchange differs; Rotten Tomatoes trains 6 cloud rounds of 5
local steps, BBC News 4 of 3) on BBC News and Rotten Tomatoes, same seeds, in four variants:

* ``dense``: every adapter exchange carries exact fp32 tables (``sketch.enabled: false``);
* ``sketch``: the default sketches (8 elements per cell, fp16 tables, mean decode, no error
  feedback);
* ``sketch+feedback``: the same with sender-side error feedback (least-squares scaled);
* ``sketch-16x``: 16 elements per cell (twice the collision noise).

Adapter bytes are the encoded sizes of every adapter message of a cloud round, all tiers
together (device→edge, edge→device, edge→cloud, cloud→edge, cloud→device); the ratio is
``dense ÷ variant`` of the mean over the rounds after the first (round 1 starts from the shared
initial adapter and sends no global delta). Accuracy is the global model's on the held-out split
after every cloud round.

Usage: ``python bench/sketch_compression.py [--quick] [--seeds 0] [--datasets bbc_news rotten_tomatoes]
[--threads T] [--out bench/results/sketch_compression.json]``
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from benchkit import (
    machine_info,
    merge_sections,
    print_table,
    run_study,
    set_torch_threads,
    study_parser,
)
from elsa.runtime.config import RunConfig, parse_config
from elsa.runtime.simulation import Simulation

NAME = "sketch_compression"
VARIANTS: dict[str, dict[str, Any]] = {
    "dense": {"enabled": False},
    "sketch": {},  # the defaults
    "sketch+feedback": {"error_feedback": True},
    "sketch-16x": {"compression": 16.0},
}
OVERRIDES: dict[str, dict[str, Any]] = {
    "topology": {"edges": 3, "devices_per_edge": 2},
    "data": {"max_train_examples": 900, "max_test_examples": 200},
    "train": {
        "cloud_rounds": 4,
        "edge_rounds": 2,
        "local_steps": 3,
        "batch_size": 16,
        "max_length": 32,
        "learning_rate": 0.004,
    },
    "control": {"num_probes": 32, "basis_dim": 16, "dynamic_split": False},
    "privacy": {"kappa": 0.0},
}
#: per dataset, on top of OVERRIDES: sentiment needs more steps than topics to leave the majority class
DATASET_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "rotten_tomatoes": {"train": {"cloud_rounds": 6, "local_steps": 5}},
}
QUICK: dict[str, dict[str, Any]] = {
    "train": {"cloud_rounds": 2, "edge_rounds": 1, "local_steps": 1},
    "data": {"max_train_examples": 120, "max_test_examples": 24},
    "control": {"num_probes": 8, "basis_dim": 4},
}


def study_config(dataset: str, variant: str, seed: int, quick: bool) -> RunConfig:
    """The run config of one dataset, variant and seed."""
    raw = merge_sections(RunConfig().model_dump(mode="json"), OVERRIDES)
    raw = merge_sections(raw, DATASET_OVERRIDES.get(dataset, {}))
    if quick:
        raw = merge_sections(raw, QUICK)
    raw = merge_sections(raw, {"data": {"dataset": dataset}, "sketch": VARIANTS[variant]})
    return parse_config({**raw, "name": f"{NAME}-{variant}", "seed": seed}, source=f"{NAME} config")


def adapter_bytes(rounds_bytes: list[dict[str, int]]) -> list[int]:
    """Adapter message bytes of each cloud round, all tiers together."""
    return [sum(v for k, v in b.items() if k.startswith("adapters_")) for b in rounds_bytes]


def simulate(config: RunConfig, run_id: str) -> dict[str, Any]:
    """One run: accuracy and adapter bytes per cloud round."""
    started = time.perf_counter()
    result = Simulation.from_config(config, run_id=run_id).run()
    rounds = result.rounds[1:]
    per_round = adapter_bytes([r.bytes for r in rounds])
    return {
        "accuracy_per_round": [r.test_accuracy for r in result.rounds],
        "final_accuracy": result.rounds[-1].test_accuracy,
        "adapter_bytes_per_round": per_round,
        "adapter_bytes_steady": float(np.mean(per_round[1:] or per_round)),
        "bytes_by_kind_per_round": [r.bytes for r in rounds],
        "adapter_numel": result.adapter_numel,
        "wall_s": time.perf_counter() - started,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every dataset, seed and variant; returns the result record."""
    threads = set_torch_threads(args.threads)
    seeds = args.seeds or [0]
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    for dataset in args.datasets:
        for seed in seeds:
            for variant in VARIANTS:
                print(f"{dataset}, seed {seed}, {variant} ...", flush=True)
                got = simulate(study_config(dataset, variant, seed, args.quick), f"{NAME}-{variant}")
                print(
                    f"  accuracy {[round(a or 0, 3) for a in got['accuracy_per_round']]}, adapter bytes/round "
                    f"{got['adapter_bytes_steady'] / 1e6:.2f} MB, {got['wall_s']:.0f} s",
                    flush=True,
                )
                runs.setdefault(dataset, {}).setdefault(variant, {})[str(seed)] = got
    summary: dict[str, dict[str, Any]] = {}
    for dataset, by_variant in runs.items():
        dense_bytes = np.mean([r["adapter_bytes_steady"] for r in by_variant["dense"].values()])
        dense_acc = np.mean([r["final_accuracy"] for r in by_variant["dense"].values()])
        for variant, by_seed in by_variant.items():
            b = float(np.mean([r["adapter_bytes_steady"] for r in by_seed.values()]))
            acc = float(np.mean([r["final_accuracy"] for r in by_seed.values()]))
            summary.setdefault(dataset, {})[variant] = {
                "adapter_bytes_per_round": b,
                "byte_ratio_dense_over_variant": float(dense_bytes / b),
                "final_accuracy": acc,
                "accuracy_points_vs_dense": 100.0 * (acc - float(dense_acc)),
            }
    config = study_config(args.datasets[0], "sketch", seeds[0], args.quick)
    return {
        "benchmark": NAME,
        "description": "adapter bytes per cloud round and final accuracy, count sketch vs uncompressed",
        "machine": machine_info(),
        "params": {
            "model": "all-MiniLM-L6-v2 (packaged)",
            "datasets": list(args.datasets),
            "alpha": config.data.alpha,
            "devices": config.num_devices,
            "edges": config.topology.edges,
            "sketch": config.sketch.model_dump(),
            "cloud_rounds": config.train.cloud_rounds,
            "edge_rounds": config.train.edge_rounds,
            "local_steps": config.train.local_steps,
            "batch_size": config.train.batch_size,
            "max_length": config.train.max_length,
            "learning_rate": config.train.learning_rate,
            "max_train_examples": config.data.max_train_examples,
            "schedule": {
                d: [c.train.cloud_rounds, c.train.edge_rounds, c.train.local_steps]
                for d in args.datasets
                for c in [study_config(d, "sketch", seeds[0], args.quick)]
            },
            "seeds": seeds,
            "threads": threads,
            "quick": args.quick,
        },
        "summary": summary,
        "runs": runs,
    }


def print_report(record: dict[str, Any]) -> None:
    """One row per dataset and variant."""
    rows = []
    for dataset, by_variant in record["summary"].items():
        for variant, s in by_variant.items():
            rows.append(
                [
                    f"{dataset} / {variant}",
                    f"{s['adapter_bytes_per_round'] / 1e6:.2f}",
                    f"{s['byte_ratio_dense_over_variant']:.2f}",
                    f"{s['final_accuracy']:.3f}",
                    f"{s['accuracy_points_vs_dense']:+.1f}",
                ]
            )
    print_table(
        "Count-sketched adapter exchanges vs uncompressed",
        ["dataset / variant", "adapter MB / round", "dense ÷ variant", "final accuracy", "points vs dense"],
        rows,
    )


def main() -> None:
    """Parse arguments, run, print, write JSON."""
    parser = study_parser(__doc__, NAME, "tiny runs (smoke test of the script)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--datasets", nargs="+", default=["bbc_news", "rotten_tomatoes"])
    run_study(parser, run, print_report)


if __name__ == "__main__":
    main()
