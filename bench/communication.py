"""Study: bytes per tier per round, and bytes to a target accuracy, per strategy (DESIGN §7.3).

FedAvg-LoRA, SplitFed-LoRA, HierFL-LoRA, ELSA and ELSA without sketches, derived from
``configs/study.yaml`` (BBC News, α = 0.5, 12 devices on 3 edges; the same data, seeds and step
budget). Every message of a run goes through the wire codec and its encoded size is counted by
kind; kinds are summed into tiers: *device-edge* (cut activations and gradients, inference
activations, probe reports, adapters both ways), *edge-cloud* (adapters both ways) and
*cloud-device* (the global delta each device downloads at the start of a round).

Split strategies pay for cut tensors every step and save the body adapters (the edge keeps
them); ELSA compresses cut tensors to fp16 and adapter deltas to count sketches. Baselines send
fp32 cut tensors and exact fp32 adapters. One-tier strategies aggregate on one server: their
edge-cloud tier is empty and their devices receive the global model once per round.

Reported: MB per cloud round per tier (mean over rounds after the first), total MB of the run,
the final accuracy and the MB spent until the first round at or above ``--target`` accuracy.

Usage: ``python bench/communication.py [--quick] [--seeds 1] [--workers 2] [--target 0.75]
[--resume] [--out bench/results/communication.json]``
"""

from __future__ import annotations

import argparse
from typing import Any

from studykit import (
    TIERS,
    RunSpec,
    Study,
    base_config,
    fmt_mean_sd,
    group,
    mb_per_round,
    run_mb,
    spec,
    study_main,
    to_target,
)

NAME = "communication"
STRATEGIES = ("fedavg", "splitfed", "hierfl", "elsa", "elsa-no-sketch")


def _specs(args: argparse.Namespace) -> list[RunSpec]:
    out: list[RunSpec] = []
    for seed in range(args.seeds):
        base = base_config(args, dataset=args.dataset, alpha=args.alpha, seed=seed)
        out.extend(spec(base, strategy) for strategy in args.strategies)
    return out


def _summary(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    by = group(runs, "strategy")
    tiers = [*TIERS, "total"]
    rows: list[list[Any]] = []
    bars: dict[str, dict[str, list[Any]]] = {}
    lines: dict[str, dict[str, list[Any]]] = {}
    for strategy in args.strategies:
        got = by.get((strategy,), [])
        if not got:
            continue
        per_tier = [fmt_mean_sd((mb_per_round(r, tier) for r in got), "{:.2f}") for tier in tiers]
        reached = [to_target(r, args.target) for r in got]
        hits = [t["bytes"] / 1e6 for t in reached if t["bytes"] is not None]
        rows.append(
            [
                strategy,
                *per_tier,
                fmt_mean_sd((run_mb(r) for r in got), "{:.1f}"),
                fmt_mean_sd(r["final_accuracy"] for r in got),
                f"{len(hits)}/{len(got)}",
                fmt_mean_sd(hits, "{:.1f}"),
            ]
        )
        first = got[0]
        bars[strategy] = {
            "x": list(TIERS),
            "y": [sum(mb_per_round(r, t) for r in got) / len(got) for t in TIERS],
            "err": None,
        }
        total, xs, ys = 0.0, [], []
        for r in first["rounds"][1:]:
            total += r["tiers"]["total"] / 1e6
            xs.append(total)
            ys.append(r["accuracy"])
        lines[strategy] = {"x": xs, "y": ys, "err": None}
    return {
        "title": "Communication per tier and to target accuracy",
        "text": (
            f"{args.dataset}, α = {args.alpha}, {args.seeds} seed(s); MB per cloud round per tier (mean over "
            f"rounds after the first); MB to target = everything sent until the first round with accuracy "
            f">= {args.target} (over the seeds that reach it)."
        ),
        "tables": [
            {
                "title": "MB per round by tier",
                "columns": [
                    "strategy",
                    *(f"{t} MB/round" for t in tiers),
                    "run MB",
                    "final accuracy",
                    "reached target",
                    "MB to target",
                ],
                "rows": rows,
            }
        ],
        "figures": [
            {
                "file": f"{args.out.stem}_tiers.png",
                "title": "MB per cloud round by tier",
                "xlabel": "tier",
                "ylabel": "MB per round",
                "kind": "bar",
                "logy": True,
                "series": bars,
            },
            {
                "file": f"{args.out.stem}_accuracy_vs_mb.png",
                "title": "held-out accuracy vs MB sent (seed 0)",
                "xlabel": "MB sent, all tiers (cumulative)",
                "ylabel": "accuracy",
                "kind": "line",
                "logx": True,
                "series": lines,
            },
        ],
    }


STUDY = Study(NAME, _specs, _summary)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="bbc_news")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--target", type=float, default=0.75)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))


def main() -> None:
    study_main(
        STUDY,
        __doc__,
        seeds=1,
        quick_help="two strategies, smoke-size runs",
        add_arguments=_arguments,
        quick_defaults={"strategies": ["fedavg", "elsa"]},
    )


if __name__ == "__main__":
    main()
