"""Benchmark: per-round communication time of latency-aware vs balanced vs random edge assignment.

DESIGN §2.6. BBC News over 3 edges x 4 devices (each edge serves ``devices_per_edge`` = 4
devices in the simulation), the packaged MiniLM, with emulated uneven device-edge links: every
link gets ``link_rtt_ms`` and ``link_mbps`` scaled by independent seeded log-normal factors of
sigma ``link_spread`` (the same links for every rule, given the seed). Three assignment rules
run on the same seeds and data:

* ``latency``: clusters to edges by the min-bottleneck assignment over the measured link costs;
* ``balanced``: devices spread over the edges in name order (ignores the links);
* ``random``: a seeded random edge per device every round (baseline).

Per cloud round the simulation reports ``comm_s``: the emulated device-edge communication time of
the slowest edge (sum over its devices of one RTT per exchange plus bytes / throughput, cut
tensors of training and of the probe pass). Next to it the script records the planner's own
estimate for each round's assignment (slowest edge of the summed :meth:`ControlPlane.link_cost`,
seconds per edge round, from the full-length cut-tensor size). The script reports its mean over the rounds for
each rule, the ratios random ÷ latency and balanced ÷ latency (ratio of the means over seeds, and
per seed), and the final test accuracy of each rule (the rule moves devices between edges, it
should not change what is learned beyond the per-cluster edge aggregation). ``comm_s`` is
computed from message sizes and the emulated links, not measured with a clock, so it does not
depend on the load of the machine.

Usage: ``python bench/assignment_latency.py [--quick] [--seeds 0 1] [--threads T]
[--out bench/results/assignment_latency.json]``
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

NAME = "assignment_latency"
RULES = ("latency", "balanced", "random")

#: the study's run config, on top of RunConfig defaults (section -> fields)
OVERRIDES: dict[str, dict[str, Any]] = {
    "topology": {
        "edges": 3,
        "devices_per_edge": 4,
        "link_rtt_ms": 20.0,
        "link_mbps": 50.0,
        "link_spread": 1.0,
    },
    "data": {"dataset": "bbc_news", "max_train_examples": 600, "max_test_examples": 100},
    "train": {"cloud_rounds": 2, "edge_rounds": 2, "local_steps": 2, "batch_size": 16, "max_length": 32},
    "control": {"num_probes": 32, "basis_dim": 16},
}
QUICK_OVERRIDES: dict[str, dict[str, Any]] = {
    "train": {"cloud_rounds": 1, "edge_rounds": 1, "local_steps": 1},
    "data": {"max_train_examples": 240, "max_test_examples": 32},
    "control": {"num_probes": 16, "basis_dim": 8},
}


def study_config(rule: str, seed: int, quick: bool) -> RunConfig:
    """The run config of one rule and seed."""
    raw = merge_sections(RunConfig().model_dump(mode="json"), OVERRIDES)
    if quick:
        raw = merge_sections(raw, QUICK_OVERRIDES)
    raw = merge_sections(raw, {"control": {"assignment": rule}})
    return parse_config({**raw, "name": f"{NAME}-{rule}", "seed": seed}, source=f"{NAME} config")


def simulate(config: RunConfig, run_id: str) -> dict[str, Any]:
    """Run ``config``; per-round emulated communication time, assignment, accuracy."""
    started = time.perf_counter()
    sim = Simulation.from_config(config, run_id=run_id)
    links = {
        device: {edge: [link.rtt_s, link.throughput_bytes_per_s] for edge, link in profile.links.items()}
        for device, profile in sorted(sim.profiles.items())
    }
    result = sim.run()
    rounds = result.rounds[1:]
    comm = [r.comm_s for r in rounds]
    estimated = []  # the planner's own cost model of each round's assignment: slowest edge
    for r in rounds:
        load: dict[str, float] = {}
        for device, edge in r.control["assignment"].items():
            cost = sim.control.link_cost(sim.profiles[device], edge, sim.model_profile)
            load[edge] = load.get(edge, 0.0) + cost
        estimated.append(max(load.values()))
    return {
        "comm_s_per_round": comm,
        "comm_s_mean": float(np.mean(comm)),
        "accuracy_per_round": [r.test_accuracy for r in result.rounds],
        "final_accuracy": result.rounds[-1].test_accuracy,
        "planner_bottleneck_s_per_edge_round": estimated,
        "assignment_per_round": [r.control["assignment"] for r in rounds],
        "clusters_per_round": [r.control["clusters"] for r in rounds],
        "cut_bytes_per_round": [
            r.bytes.get("activations", 0) + r.bytes.get("gradients", 0) + r.bytes.get("inference", 0)
            for r in rounds
        ],
        "links": links,
        "wall_s": time.perf_counter() - started,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every seed, the rules in a rotating order; returns the result record."""
    threads = set_torch_threads(args.threads)
    seeds = [0] if args.quick and args.seeds is None else (args.seeds or [0, 1])
    runs: dict[str, dict[str, Any]] = {rule: {} for rule in RULES}
    for i, seed in enumerate(seeds):
        order = RULES[i % len(RULES) :] + RULES[: i % len(RULES)]
        for rule in order:
            config = study_config(rule, seed, args.quick)
            print(f"seed {seed}, {rule} assignment ...", flush=True)
            got = simulate(config, f"{NAME}-{rule}-{seed}")
            print(
                f"  comm_s per round {[round(c, 2) for c in got['comm_s_per_round']]}, "
                f"final accuracy {got['final_accuracy']:.3f}, {got['wall_s']:.0f} s",
                flush=True,
            )
            runs[rule][str(seed)] = got
    summary: dict[str, Any] = {}
    for rule in RULES:
        means = [runs[rule][str(s)]["comm_s_mean"] for s in seeds]
        summary[rule] = {
            "comm_s_mean": float(np.mean(means)),
            "final_accuracy_mean": float(np.mean([runs[rule][str(s)]["final_accuracy"] for s in seeds])),
        }
        if rule != "latency":
            summary[rule]["ratio_over_latency"] = (
                summary[rule]["comm_s_mean"] / summary["latency"]["comm_s_mean"]
            )
            summary[rule]["ratio_over_latency_per_seed"] = [
                runs[rule][str(s)]["comm_s_mean"] / runs["latency"][str(s)]["comm_s_mean"] for s in seeds
            ]
    config = study_config("latency", seeds[0], args.quick)
    topo, train = config.topology, config.train
    return {
        "benchmark": NAME,
        "description": "emulated device-edge communication s per round of the slowest edge, by assignment rule",
        "machine": machine_info(),
        "params": {
            "model": "all-MiniLM-L6-v2 (packaged)",
            "dataset": config.data.dataset,
            "alpha": config.data.alpha,
            "devices": config.num_devices,
            "edges": topo.edges,
            "edge_capacity": topo.devices_per_edge,
            "link_rtt_ms": topo.link_rtt_ms,
            "link_mbps": topo.link_mbps,
            "link_spread": topo.link_spread,
            "transport_dtype": config.transport.dtype,
            "cloud_rounds": train.cloud_rounds,
            "edge_rounds": train.edge_rounds,
            "local_steps": train.local_steps,
            "batch_size": train.batch_size,
            "max_length": train.max_length,
            "max_train_examples": config.data.max_train_examples,
            "num_probes": config.control.num_probes,
            "rules": list(RULES),
            "seeds": seeds,
            "threads": threads,
            "quick": args.quick,
        },
        "summary": summary,
        "runs": runs,
    }


def print_report(record: dict[str, Any]) -> None:
    """One row per rule."""
    seeds = record["params"]["seeds"]
    rows = []
    for rule, s in record["summary"].items():
        per_round = " / ".join(
            " ".join(f"{c:.2f}" for c in record["runs"][rule][str(seed)]["comm_s_per_round"])
            for seed in seeds
        )
        rows.append(
            [
                rule,
                f"{s['comm_s_mean']:.2f}",
                per_round,
                "1.00" if rule == "latency" else f"{s['ratio_over_latency']:.2f}",
                f"{s['final_accuracy_mean']:.3f}",
            ]
        )
    p = record["params"]
    print_table(
        f"Emulated comm s per round, slowest edge ({p['devices']} devices, {p['edges']} edges, RTT "
        f"{p['link_rtt_ms']} ms, {p['link_mbps']} Mbit/s, spread {p['link_spread']}; seeds {seeds})",
        ["rule", "mean comm s/round", "per round (per seed, /)", "÷ latency", "final accuracy"],
        rows,
    )


def main() -> None:
    """Parse arguments, run, print, write JSON."""
    parser = study_parser(__doc__, NAME, "smoke run: 1 seed, 1 round of 1 step")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 (quick: 0)")
    run_study(parser, run, print_report)


if __name__ == "__main__":
    main()
