"""Study: robustness to hostile and unreliable devices, per strategy (DESIGN §2.5, §7.5).

The study's ELSA config (``configs/study.yaml``, BBC News, α = 0.5, 12 devices on 3 edges) and
the baselines derived from it run in four scenarios:

* ``clean``: every device honest and present;
* ``label-flip``: 25 % of the devices (3 of 12: devices 2, 6 and 10, spread over the device
  indices) train on shifted labels (y + 1 mod C);
* ``noise``: the same 25 % replace their update with Gaussian noise of 20× the RMS of the
  honest update they would have sent;
* ``dropout``: each device misses each cloud round with probability 0.2 (seeded by run seed and
  round, so every strategy loses the same devices in the same rounds).

Reported: final held-out accuracy (mean ± sd over seeds) and its difference from the same
strategy's clean run, and for ELSA the devices quarantined at the end. The centralized upper
bound has no devices to attack and is not run here (see bench/accuracy.py).

Usage: ``python bench/robustness.py [--quick] [--seeds 2] [--workers 2] [--resume]
[--out bench/results/robustness.json]``
"""

from __future__ import annotations

import argparse
from typing import Any

from elsa.runtime.simulation import device_name
from studykit import (
    RunSpec,
    Study,
    base_config,
    fmt_mean_sd,
    group,
    mean_sd,
    spec,
    study_main,
)

NAME = "robustness"
#: SplitFed computes exactly what FedAvg computes (tests/unit/test_strategies.py): not run twice
STRATEGIES = ("fedavg", "hierfl", "elsa", "elsa-no-trust")
HOSTILE_FRACTION = 0.25
DROPOUT = 0.2


def _hostile(num_devices: int) -> list[int]:
    """A quarter of the devices, spread evenly over the device indices."""
    count = max(1, round(HOSTILE_FRACTION * num_devices))
    step = num_devices / count
    return sorted({int(step * i + step / 2) for i in range(count)})


def _scenarios(num_devices: int) -> dict[str, dict[str, Any]]:
    hostile = _hostile(num_devices)
    return {
        "clean": {},
        "label-flip": {"label_flip": hostile},
        "noise": {"noise": hostile},
        "dropout": {"dropout": DROPOUT},
    }


def _specs(args: argparse.Namespace) -> list[RunSpec]:
    out: list[RunSpec] = []
    for seed in range(args.seeds):
        plain = base_config(args, dataset=args.dataset, alpha=args.alpha, seed=seed)
        for scenario, faults in _scenarios(plain.num_devices).items():
            base = base_config(args, dataset=args.dataset, alpha=args.alpha, seed=seed, faults=faults)
            for strategy in args.strategies:
                out.append(spec(base, strategy, scenario=scenario))
    return out


def _num_devices(args: argparse.Namespace) -> int:
    return base_config(args, dataset=args.dataset, alpha=args.alpha, seed=0).num_devices


def _extra(args: argparse.Namespace) -> dict[str, Any]:
    return {"hostile": [device_name(i) for i in _hostile(_num_devices(args))]}


def _summary(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    num_devices = _num_devices(args)
    by = group(runs, "strategy", "scenario")
    scenarios = list(_scenarios(num_devices))
    hostile = {device_name(i) for i in _hostile(num_devices)}
    rows: list[list[Any]] = []
    bars: dict[str, dict[str, list[Any]]] = {}
    for strategy in args.strategies:
        clean, _, _ = mean_sd(r["final_accuracy"] for r in by.get((strategy, "clean"), []))
        for scenario in scenarios:
            got = by.get((strategy, scenario), [])
            if not got:
                continue
            mean, sd, _ = mean_sd(r["final_accuracy"] for r in got)
            quarantined = [set(r["rounds"][-1]["quarantined"]) for r in got]
            caught = [len(q & hostile) for q in quarantined]
            wrong = [len(q - hostile) for q in quarantined]
            rows.append(
                [
                    strategy,
                    scenario,
                    fmt_mean_sd(r["final_accuracy"] for r in got),
                    None if mean is None or clean is None else f"{100 * (mean - clean):+.1f}",
                    "–" if scenario in ("clean", "dropout") else fmt_mean_sd(caught, "{:.1f}"),
                    fmt_mean_sd(wrong, "{:.1f}"),
                ]
            )
            bar = bars.setdefault(strategy, {"x": [], "y": [], "err": []})
            bar["x"].append(scenario)
            bar["y"].append(mean)
            bar["err"].append(sd)
    return {
        "title": "Robustness: accuracy under hostile and unreliable devices",
        "text": (
            f"{args.dataset}, α = {args.alpha}, {args.seeds} seed(s); hostile devices: "
            f"{', '.join(sorted(hostile))} ({HOSTILE_FRACTION:.0%}); dropout p = {DROPOUT}. "
            "Points vs clean = final accuracy minus the same strategy's clean run (percentage points). "
            "Quarantined at the end: hostile devices caught / honest devices quarantined (mean over seeds; "
            "strategies without trust quarantine nobody)."
        ),
        "tables": [
            {
                "title": "final accuracy per strategy and scenario",
                "columns": [
                    "strategy",
                    "scenario",
                    "final accuracy",
                    "points vs clean",
                    "hostile quarantined",
                    "honest quarantined",
                ],
                "rows": rows,
            }
        ],
        "figures": [
            {
                "file": f"{args.out.stem}.png",
                "title": "final accuracy per scenario (mean ± sd over seeds)",
                "xlabel": "scenario",
                "ylabel": "accuracy",
                "kind": "bar",
                "series": bars,
            }
        ],
    }


STUDY = Study(NAME, _specs, _summary, _extra)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="bbc_news")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))


def main() -> None:
    study_main(
        STUDY,
        __doc__,
        seeds=2,
        quick_help="one seed, two strategies, smoke-size runs",
        add_arguments=_arguments,
        quick_defaults={"seeds": 1, "strategies": ["fedavg", "elsa"]},
    )


if __name__ == "__main__":
    main()
