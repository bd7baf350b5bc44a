"""Benchmark: the privacy–utility curve of SS-OP — final accuracy across κ, next to the token
recovery of the attacks (``bench/privacy_attacks.py``) at the same κ.

DESIGN §3. The same simulated run (packaged MiniLM, BBC News, 3 edges x 2 devices, Dirichlet
α = 0.5, count sketches on, reproducible device noise) for κ ∈ {0, 0.5, 1, 2, 4, 8}: every
device→edge activation tensor (training and inference) is perturbed at the device's cut. The
accuracy is the global model's on the held-out split (clean inputs, monolithic). The recovery
columns are read from ``bench/results/privacy_attacks.json`` when it exists (run that script
first; it attacks exactly what leaves a device at the same cut and rank).

Usage: ``python bench/privacy_utility.py [--quick] [--kappas 0 0.5 1 2 4 8] [--rank R] [--seeds 0] [--threads T]
[--out bench/results/privacy_utility.json]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchkit import (
    RESULTS_DIR,
    machine_info,
    merge_sections,
    print_table,
    run_study,
    set_torch_threads,
    study_parser,
)
from elsa.runtime.config import RunConfig, parse_config
from elsa.runtime.simulation import Simulation
from sketch_compression import OVERRIDES, QUICK

NAME = "privacy_utility"
KAPPAS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)


def study_config(kappa: float, seed: int, quick: bool, rank: int | None = None) -> RunConfig:
    """The run config of one κ and seed (the sketch study's run, with SS-OP at κ; ``rank``
    overrides the subspace rank)."""
    raw = merge_sections(RunConfig().model_dump(mode="json"), OVERRIDES)
    if quick:
        raw = merge_sections(raw, QUICK)
    privacy: dict[str, Any] = {"kappa": kappa, "noise_seed": "run"}
    if rank is not None:
        privacy["rank"] = rank
    raw = merge_sections(raw, {"privacy": privacy})
    return parse_config({**raw, "name": f"{NAME}-{kappa}", "seed": seed}, source=f"{NAME} config")


def attack_recovery(path: Path, head_blocks: int, rank: int) -> dict[str, dict[str, float]]:
    """κ (as text) → attack → top-1 token recovery at this cut and rank, from the attack study."""
    if not path.is_file():
        return {}
    record = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, dict[str, float]] = {}
    for cut in record.get("results", []):
        if cut.get("head_blocks") != head_blocks or cut.get("rank") != rank:
            continue
        for row in cut["rows"]:
            out.setdefault(str(float(row["kappa"])), {})[row["attack"]] = float(row["top1"])
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every κ and seed; returns the result record."""
    threads = set_torch_threads(args.threads)
    seeds = args.seeds or [0]
    runs: dict[str, dict[str, Any]] = {}
    for kappa in args.kappas:
        for seed in seeds:
            print(f"kappa {kappa}, seed {seed} ...", flush=True)
            started = time.perf_counter()
            result = Simulation.from_config(
                study_config(kappa, seed, args.quick, args.rank), run_id=NAME
            ).run()
            accuracy = [r.test_accuracy for r in result.rounds]
            runs.setdefault(str(kappa), {})[str(seed)] = {
                "accuracy_per_round": accuracy,
                "final_accuracy": accuracy[-1],
                "wall_s": time.perf_counter() - started,
            }
            print(f"  accuracy {[round(a or 0, 3) for a in accuracy]}", flush=True)
    first = study_config(args.kappas[0], seeds[0], args.quick, args.rank)
    recovery = attack_recovery(args.attacks, first.model.head_blocks, first.privacy.rank)
    base = float(np.mean([r["final_accuracy"] for r in runs[str(args.kappas[0])].values()]))
    summary = {}
    for kappa, by_seed in runs.items():
        acc = float(np.mean([r["final_accuracy"] for r in by_seed.values()]))
        summary[kappa] = {
            "final_accuracy": acc,
            "accuracy_points_vs_first": 100.0 * (acc - base),
            "recovery_top1": recovery.get(str(float(kappa)), {}),
        }
    config = study_config(args.kappas[0], seeds[0], args.quick, args.rank)
    return {
        "benchmark": NAME,
        "description": "final accuracy across SS-OP kappa, with token recovery of the attacks",
        "machine": machine_info(),
        "params": {
            "model": "all-MiniLM-L6-v2 (packaged)",
            "dataset": config.data.dataset,
            "devices": config.num_devices,
            "head_blocks": config.model.head_blocks,
            "rank": config.privacy.rank,
            "kappas": list(args.kappas),
            "cloud_rounds": config.train.cloud_rounds,
            "edge_rounds": config.train.edge_rounds,
            "local_steps": config.train.local_steps,
            "seeds": seeds,
            "threads": threads,
            "quick": args.quick,
            "attacks_from": str(args.attacks) if recovery else None,
        },
        "summary": summary,
        "runs": runs,
    }


def print_report(record: dict[str, Any]) -> None:
    """One row per κ."""
    attacks = sorted({a for s in record["summary"].values() for a in s["recovery_top1"]})
    rows = []
    for kappa, s in record["summary"].items():
        rec = [f"{s['recovery_top1'][a]:.3f}" if a in s["recovery_top1"] else "—" for a in attacks]
        rows.append([kappa, f"{s['final_accuracy']:.3f}", f"{s['accuracy_points_vs_first']:+.1f}", *rec])
    print_table(
        "SS-OP privacy-utility",
        ["kappa", "final accuracy", "points vs kappa 0", *[f"{a} top-1" for a in attacks]],
        rows,
    )


def main() -> None:
    """Parse arguments, run, print, write JSON."""
    parser = study_parser(__doc__, NAME, "tiny runs (smoke test of the script)")
    parser.add_argument("--kappas", type=float, nargs="+", default=list(KAPPAS))
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--rank", type=int, default=None, help="subspace rank (default: the config's)")
    parser.add_argument("--attacks", type=Path, default=RESULTS_DIR / "privacy_attacks.json")
    run_study(parser, run, print_report)


if __name__ == "__main__":
    main()
