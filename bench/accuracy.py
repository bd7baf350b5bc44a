"""Study: accuracy and convergence of ELSA against its baselines (DESIGN §6, §7.2).

Strategies (``elsa.runtime.strategies``): centralized LoRA (upper bound), FedAvg-LoRA (no split,
one tier), SplitFed-LoRA (split, one tier), HierFL-LoRA (hierarchy, no split) and ELSA, all
derived from ``configs/study.yaml`` (MiniLM, 3 edges × 4 devices, 2 local steps × 2 edge rounds
× 4 cloud rounds, batch 16 × 32 tokens): same data partition, seeds and optimizer-step budget.
Datasets BBC News and Rotten Tomatoes, Dirichlet α ∈ {0.1, 0.5}, seeds 0..2 (the centralized
run pools the data, so it is run once per dataset and seed and shown under both α).

Reported per (dataset, α, strategy): final held-out accuracy (mean ± sd over seeds), optimizer
steps (all devices) and wall time to a target accuracy, MB sent by the whole run (all tiers). The target is
90 % of the centralized run's final accuracy on that dataset (mean over seeds); a strategy
that never reaches it in any seed shows '–'. Wall time is the simulation's, two runs sharing the
two cores: compare it across strategies only.

Usage: ``python bench/accuracy.py [--quick] [--seeds 3] [--workers 2] [--datasets ...]
[--alphas 0.1 0.5] [--resume] [--out bench/results/accuracy.json]``
"""

from __future__ import annotations

import argparse
from typing import Any

from studykit import (
    RunSpec,
    Study,
    base_config,
    curve,
    fmt_mean_sd,
    group,
    mean_sd,
    run_mb,
    spec,
    study_main,
    to_target,
)

NAME = "accuracy"
STRATEGIES = ("centralized", "fedavg", "splitfed", "hierfl", "elsa")
TARGET_FRACTION = 0.9


def _specs(args: argparse.Namespace) -> list[RunSpec]:
    out: list[RunSpec] = []
    for dataset in args.datasets:
        for seed in range(args.seeds):
            for alpha in args.alphas:
                base = base_config(args, dataset=dataset, alpha=alpha, seed=seed)
                for strategy in args.strategies:
                    if strategy == "centralized" and alpha != args.alphas[0]:
                        continue  # pooled data: α does not apply
                    meta_alpha = "pooled" if strategy == "centralized" else alpha
                    out.append(spec(base, strategy, alpha=meta_alpha))
    return out


def _summary(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    by = group(runs, "dataset", "alpha", "strategy")
    rows: list[list[Any]] = []
    figures: list[dict[str, Any]] = []
    targets: dict[str, float | None] = {}
    for dataset in args.datasets:
        central = by.get((dataset, "pooled", "centralized"), [])
        mean, _, _ = mean_sd(r["final_accuracy"] for r in central)
        targets[dataset] = None if mean is None else TARGET_FRACTION * mean
        for alpha in args.alphas:
            series: dict[str, Any] = {}
            for strategy in args.strategies:
                group_runs = by.get((dataset, "pooled" if strategy == "centralized" else alpha, strategy), [])
                if not group_runs:
                    continue
                target = targets[dataset]
                reached = [to_target(r, target) for r in group_runs] if target is not None else []
                hits = [t for t in reached if t["steps"] is not None]
                rows.append(
                    [
                        dataset,
                        "pooled" if strategy == "centralized" else alpha,
                        strategy,
                        fmt_mean_sd(r["final_accuracy"] for r in group_runs),
                        len(group_runs),
                        f"{len(hits)}/{len(group_runs)}",
                        fmt_mean_sd((t["steps"] for t in hits), "{:.0f}"),
                        fmt_mean_sd((t["wall_s"] for t in hits), "{:.0f}"),
                        fmt_mean_sd((run_mb(r) for r in group_runs), "{:.0f}"),
                    ]
                )
                series[strategy] = curve(group_runs)
            figures.append(
                {
                    "file": f"{args.out.stem}_{dataset}_a{alpha}.png",
                    "title": f"{dataset}, α = {alpha}: held-out accuracy (mean ± sd over seeds)",
                    "xlabel": "optimizer steps, all devices",
                    "ylabel": "accuracy",
                    "kind": "line",
                    "series": series,
                }
            )
    target_text = ", ".join(f"{d}: {'–' if t is None else f'{t:.3f}'}" for d, t in targets.items())
    return {
        "title": "Accuracy and convergence per strategy",
        "text": (
            f"Final held-out accuracy (mean ± sd over {args.seeds} seed(s)); steps and wall seconds "
            f"to the target ({TARGET_FRACTION:.0%} of centralized final accuracy — {target_text}) "
            "over the seeds that reach it; run MB = every byte the run sent, all tiers (the same step budget "
            "for every strategy; a one-tier strategy's round is one edge round, so per-round figures do "
            "not compare)."
        ),
        "tables": [
            {
                "title": "accuracy per strategy",
                "columns": [
                    "dataset",
                    "alpha",
                    "strategy",
                    "final accuracy",
                    "seeds",
                    "reached target",
                    "steps to target",
                    "wall s to target",
                    "run MB",
                ],
                "rows": rows,
            }
        ],
        "figures": figures,
    }


STUDY = Study(NAME, _specs, _summary)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", nargs="+", default=["bbc_news", "rotten_tomatoes"])
    parser.add_argument("--alphas", nargs="+", type=float, default=[0.1, 0.5])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))


def main() -> None:
    study_main(
        STUDY,
        __doc__,
        seeds=3,
        quick_help="one seed, one α, two strategies, smoke-size runs",
        add_arguments=_arguments,
        quick_defaults={
            "seeds": 1,
            "alphas": [0.5],
            "datasets": ["bbc_news"],
            "strategies": ["centralized", "elsa"],
        },
    )


if __name__ == "__main__":
    main()
