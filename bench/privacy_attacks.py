"""Benchmark: token recovery of ELSA's attacks on its own cut activations vs κ and rank (DESIGN §7.4).

The packaged MiniLM (base model: the initial adapter state, where LoRA is a no-op), the default
run config otherwise. The device's private text is a seeded sample of the BBC News training
split; the attacker's public text a seeded sample of Guardian headlines (the shipped probe set
excluded). For each cut (``head_blocks``) and SS-OP subspace rank r, U is derived from the
base model on the run's public probes exactly as the run does; the received rows are SS-OP'd
and cast to the run's wire dtype (fp16), and for each κ the study runs
(:mod:`elsa.attacks`, via :func:`elsa.runtime.attack_study.attack_cut`):

* ``nn``: nearest word embedding (cosine) of each received row;
* ``lsq`` / ``mlp``: ridge and MLP inversions trained on public activations perturbed with the
  same SS-OP (same U, same κ, the attacker's own noise draws), decoded by cosine nearest
  neighbour in the embedding table;
* ``lsq_u`` / ``mlp_u``: the same attackers on the kept coordinates ``x U`` alone, which SS-OP
  never perturbs: the leakage floor no κ removes.

Recovery is top-1 / top-5 over every non-special private token. ``best`` = the strongest attack
at that κ (by top-1), the number to quote. No timing is asserted; wall time per cut is recorded.

Usage: ``python bench/privacy_attacks.py [--quick] [--threads T] [--public-texts N]
[--private-texts N] [--out bench/results/privacy_attacks.json]``
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchkit import (
    machine_info,
    print_table,
    run_study,
    set_torch_threads,
    study_parser,
)
from elsa.attacks import ATTACKS, InversionParams
from elsa.runtime.attack_study import attack_cut, cut_inputs, prepare_attack_study
from elsa.runtime.config import RunConfig, parse_config

NAME = "privacy_attacks"
KAPPAS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
#: (head_blocks, rank): both ranks at the default cut, the default rank one block deeper
CUTS = ((1, 4), (1, 16), (2, 16))
PUBLIC_TEXTS, PRIVATE_TEXTS = 2000, 150
PARAMS = InversionParams(hidden=1024, epochs=4, seed=0)

QUICK_KAPPAS = (0.0, 4.0, 16.0)
QUICK_CUTS = ((1, 4), (1, 16))
QUICK_PUBLIC_TEXTS, QUICK_PRIVATE_TEXTS = 200, 20
QUICK_PARAMS = InversionParams(hidden=256, epochs=2, seed=0)


def study_config() -> RunConfig:
    """The default run config, named for this study."""
    return parse_config({**RunConfig().model_dump(mode="json"), "name": NAME}, source=f"{NAME} config")


def summary(cuts: list[dict[str, Any]]) -> dict[str, Any]:
    """Per cut and κ: NN top-1 and the strongest attack (by top-1)."""
    out: dict[str, Any] = {}
    for cut in cuts:
        per_kappa: dict[str, Any] = {}
        for row in cut["rows"]:
            entry = per_kappa.setdefault(str(row["kappa"]), {"best_top1": -1.0})
            if row["attack"] == "nn":
                entry["nn_top1"] = row["top1"]
            if row["top1"] > entry["best_top1"]:
                entry.update(best_attack=row["attack"], best_top1=row["top1"], best_top5=row["top5"])
        floor = max(r["top1"] for r in cut["rows"] if r["attack"] in ("lsq_u", "mlp_u"))
        out[f"h{cut['head_blocks']}_r{cut['rank']}"] = {
            "per_kappa": per_kappa,
            "kept_subspace_floor_top1": floor,
        }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every cut and rank in turn; returns the result record."""
    threads = set_torch_threads(args.threads)
    kappas = QUICK_KAPPAS if args.quick else KAPPAS
    cuts = QUICK_CUTS if args.quick else CUTS
    params = QUICK_PARAMS if args.quick else PARAMS
    public_n = args.public_texts or (QUICK_PUBLIC_TEXTS if args.quick else PUBLIC_TEXTS)
    private_n = args.private_texts or (QUICK_PRIVATE_TEXTS if args.quick else PRIVATE_TEXTS)
    config = study_config()
    started = time.perf_counter()
    study = prepare_attack_study(config, public_n, private_n)
    print(f"loaded model and {study.public_texts} public / {study.private_texts} private texts", flush=True)
    results: list[dict[str, Any]] = []
    inputs_by_cut: dict[int, Any] = {}
    for head_blocks, rank in cuts:
        t0 = time.perf_counter()
        if head_blocks not in inputs_by_cut:
            inputs_by_cut = {head_blocks: cut_inputs(study, head_blocks)}  # keep one cut in memory
        got = attack_cut(study, kappas, head_blocks, rank, params=params, inputs=inputs_by_cut[head_blocks])
        record = {**got.as_dict(), "wall_s": time.perf_counter() - t0}
        results.append(record)
        print(f"cut h{head_blocks} rank {rank}: {record['wall_s']:.0f} s", flush=True)
    return {
        "benchmark": NAME,
        "description": "token recovery (top-1 / top-5) of NN, ridge and MLP inversions vs SS-OP kappa and rank",
        "machine": machine_info(),
        "params": {
            "model": "all-MiniLM-L6-v2 (packaged), base model (initial adapter state)",
            "private_dataset": config.data.dataset,
            "public_text": "Guardian headlines, shipped probe set excluded",
            "public_texts": study.public_texts,
            "private_texts": study.private_texts,
            "max_length": config.train.max_length,
            "wire_dtype": config.transport.dtype,
            "num_probes": config.control.num_probes,
            "kappas": list(kappas),
            "cuts": [{"head_blocks": h, "rank": r} for h, r in cuts],
            "attacks": list(ATTACKS),
            "inversion": {
                "ridge_alphas": list(params.ridge_alphas),
                "validation_fraction": params.validation_fraction,
                "mlp_hidden": params.hidden,
                "mlp_epochs": params.epochs,
                "mlp_batch_size": params.batch_size,
                "mlp_learning_rate": params.learning_rate,
                "mlp_temperature": params.temperature,
                "seed": params.seed,
            },
            "threads": threads,
            "quick": args.quick,
            "config": config.model_dump(mode="json"),
        },
        "wall_s": time.perf_counter() - started,
        "summary": summary(results),
        "results": results,
    }


def print_report(record: dict[str, Any]) -> None:
    """One table per cut and rank: κ x attack, top-1 / top-5."""
    for cut in record["results"]:
        cells = {(r["kappa"], r["attack"]): r for r in cut["rows"]}
        best = record["summary"][f"h{cut['head_blocks']}_r{cut['rank']}"]["per_kappa"]
        rows = []
        for kappa in record["params"]["kappas"]:
            b = best[str(kappa)]
            rows.append(
                [
                    f"{kappa:g}",
                    *(f"{cells[kappa, a]['top1']:.3f} / {cells[kappa, a]['top5']:.3f}" for a in ATTACKS),
                    f"{b['best_attack']} {b['best_top1']:.3f}",
                ]
            )
        print_table(
            f"Token recovery top-1 / top-5, cut after {cut['head_blocks']} block(s), rank {cut['rank']} "
            f"({cut['private_tokens']} private tokens; attacker trained on {cut['public_tokens']} public tokens)",
            ["kappa", *ATTACKS, "best"],
            rows,
        )


def main() -> None:
    """Parse arguments, run, print, write JSON."""
    parser = study_parser(__doc__, NAME, "smoke run: 3 kappas, 2 ranks, few texts, small MLP")
    parser.add_argument("--public-texts", type=int, default=None, help=f"default {PUBLIC_TEXTS} (quick: 200)")
    parser.add_argument(
        "--private-texts", type=int, default=None, help=f"default {PRIVATE_TEXTS} (quick: 20)"
    )
    run_study(parser, run, print_report)


if __name__ == "__main__":
    main()
