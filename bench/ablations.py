"""Study: what each part of ELSA contributes — ablations (DESIGN §6, §7).

ELSA as ``configs/study.yaml`` configures it, and ELSA with one part switched off
(``elsa.runtime.strategies``): no clustering (one aggregate per edge), no trust (plain
example-weighted aggregation), no sketch (exact fp32 adapter tables), no SS-OP (κ = 0) and a
static split (the config's cut for every device instead of per-device plans). BBC News,
Dirichlet α ∈ {0.1, 0.5}, seeds 0 and 1, the same data and step budget for every variant.

Reported per (α, variant): final held-out accuracy (mean ± sd over seeds) and its difference
from ELSA, MB per round (all tiers), the emulated device-edge communication time per round
(the topology's link model; it is what the split plan trades against compute) and wall time.

Usage: ``python bench/ablations.py [--quick] [--seeds 2] [--workers 2] [--dataset bbc_news]
[--alphas 0.1 0.5] [--resume] [--out bench/results/ablations.json]``
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from elsa.runtime.strategies import ABLATIONS
from studykit import (
    RunSpec,
    Study,
    base_config,
    curve,
    fmt_mean_sd,
    group,
    mb_per_round,
    mean_sd,
    spec,
    study_main,
)

NAME = "ablations"
VARIANTS = ("elsa", *ABLATIONS)


def _specs(args: argparse.Namespace) -> list[RunSpec]:
    out: list[RunSpec] = []
    for seed in range(args.seeds):
        for alpha in args.alphas:
            base = base_config(args, dataset=args.dataset, alpha=alpha, seed=seed)
            out.extend(spec(base, variant) for variant in args.variants)
    return out


def _comm_s(run: dict[str, Any]) -> float:
    return statistics.fmean(r["comm_s"] for r in run["rounds"][1:])


def _round_s(run: dict[str, Any]) -> float:
    return statistics.fmean(r["wall_s"] for r in run["rounds"][1:])


def _summary(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    by = group(runs, "alpha", "strategy")
    rows: list[list[Any]] = []
    figures: list[dict[str, Any]] = []
    for alpha in args.alphas:
        full, _, _ = mean_sd(r["final_accuracy"] for r in by.get((alpha, "elsa"), []))
        series: dict[str, Any] = {}
        for variant in args.variants:
            got = by.get((alpha, variant), [])
            if not got:
                continue
            mean, _, _ = mean_sd(r["final_accuracy"] for r in got)
            rows.append(
                [
                    alpha,
                    variant,
                    fmt_mean_sd(r["final_accuracy"] for r in got),
                    None if mean is None or full is None else f"{100 * (mean - full):+.1f}",
                    fmt_mean_sd((mb_per_round(r) for r in got), "{:.2f}"),
                    fmt_mean_sd((_comm_s(r) for r in got), "{:.2f}"),
                    fmt_mean_sd((_round_s(r) for r in got), "{:.1f}"),
                ]
            )
            series[variant] = curve(got)
        figures.append(
            {
                "file": f"{args.out.stem}_{args.dataset}_a{alpha}.png",
                "title": f"{args.dataset}, α = {alpha}: ELSA and its ablations (mean ± sd over seeds)",
                "xlabel": "optimizer steps, all devices",
                "ylabel": "accuracy",
                "kind": "line",
                "series": series,
            }
        )
    return {
        "title": "Ablations: ELSA with one part switched off",
        "text": (
            f"{args.dataset}, {args.seeds} seed(s). Points vs ELSA = final accuracy minus ELSA's "
            "(percentage points); comm s/round = emulated device-edge link time of the slowest edge; "
            "wall s/round = this machine's simulation time (two runs sharing two cores)."
        ),
        "tables": [
            {
                "title": "ablations",
                "columns": [
                    "alpha",
                    "variant",
                    "final accuracy",
                    "points vs ELSA",
                    "MB/round",
                    "comm s/round",
                    "wall s/round",
                ],
                "rows": rows,
            }
        ],
        "figures": figures,
    }


STUDY = Study(NAME, _specs, _summary)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="bbc_news")
    parser.add_argument("--alphas", nargs="+", type=float, default=[0.1, 0.5])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))


def main() -> None:
    study_main(
        STUDY,
        __doc__,
        seeds=2,
        quick_help="one seed, one α, two variants, smoke-size runs",
        add_arguments=_arguments,
        quick_defaults={"seeds": 1, "alphas": [0.5], "variants": ["elsa", "elsa-no-sketch"]},
    )


if __name__ == "__main__":
    main()
