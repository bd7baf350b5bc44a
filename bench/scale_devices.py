"""Part 1 of the scale study (``bench/scale.py``): devices simulated in one process.

For each device count N a fresh process (this file run as a script) builds
``Simulation.from_config`` (IID data, ``examples_per_device`` examples each, N/10 edges of 10
devices, or 1 edge below 10) and runs up to ``rounds`` cloud rounds of 1 edge round x 1 local
step per device, batch 8 x 32 tokens, the control plane on (``probes`` probe sentences per
device report), no evaluation. Memory is read as ``bench/device_memory.py`` reads it: right
after the last device's step of cloud round 1, after ``gc.collect()`` (and ``malloc_trim(0)``).
One extra process with a single device is the reference of "MiB per added device" =
(RSS(N) - RSS(1)) / (N - 1). Round time is the wall time of ``Simulation.run_cloud_round``
(training, probe reports, sketching, aggregation; the memory read inside round 1 is
subtracted). The device counts run in increasing order; before each one the time of its rounds
is predicted from the previous count and the rounds are lowered (down to 1, never 0) when the
part's time budget would be exceeded; the rounds timed per N are recorded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from benchkit import (
    RESULT_PREFIX,
    fit_line,
    median,
    merge_sections,
    process_memory,
    quiet_transformers,
    run_result_child,
    set_torch_threads,
)
from elsa.runtime.config import RunConfig, parse_config

MIB = 2**20
BATCH, SEQ = 8, 32
DEVICES_PER_EDGE = 10


def edges_for(devices: int) -> int:
    """N/10 edges of 10 devices when N is a multiple of 10, else one edge."""
    return devices // DEVICES_PER_EDGE if devices % DEVICES_PER_EDGE == 0 else 1


def devices_config(devices: int, rounds: int, examples_per_device: int, probes: int) -> RunConfig:
    """The default run config at N devices, 1 edge round x 1 step of batch 8 x 32, IID."""
    edges = edges_for(devices)
    return parse_config(
        merge_sections(
            RunConfig().model_dump(mode="json"),
            {
                "topology": {"edges": edges, "devices_per_edge": devices // edges},
                "data": {
                    "alpha": None,
                    "quantity_sigma": 0.0,
                    "max_train_examples": examples_per_device * devices,
                    "max_test_examples": 16,
                },
                "train": {
                    "cloud_rounds": rounds,
                    "edge_rounds": 1,
                    "local_steps": 1,
                    "batch_size": BATCH,
                    "max_length": SEQ,
                },
                "control": {"num_probes": probes},
            },
        )
    )


def measure_devices_child(args: argparse.Namespace) -> dict[str, Any]:
    """Build the simulation for ``args.child`` devices, time its cloud rounds, read its memory."""
    from elsa.runtime.simulation import Simulation

    threads = set_torch_threads(args.threads)
    quiet_transformers()
    n = args.child
    cfg = devices_config(n, args.rounds, args.examples_per_device, args.probes)
    proc = psutil.Process()
    started = time.perf_counter()
    sim = Simulation.from_config(cfg, run_id=f"scale-{n}")
    build_s = time.perf_counter() - started
    rss_built = process_memory(proc)["rss_bytes"]
    measured: dict[str, Any] = {}
    trained: list[str] = []

    def on_event(name: str, fields: dict[str, Any]) -> None:
        if name != "device_trained" or fields["cloud_round"] != 1:
            return
        trained.append(str(fields["device"]))
        if len(trained) == n:
            t0 = time.perf_counter()
            measured.update(process_memory(proc))
            measured["adam_param_states_devices"] = sum(len(d.stepper.optimizer.state) for d in sim.devices)
            measured["measure_s"] = time.perf_counter() - t0

    round_s = []
    for cloud_round in range(1, args.rounds + 1):
        t0 = time.perf_counter()
        sim.run_cloud_round(cloud_round, on_event)
        round_s.append(time.perf_counter() - t0 - (measured["measure_s"] if cloud_round == 1 else 0.0))
    if "rss_bytes" not in measured:
        raise RuntimeError(f"expected {n} device_trained events in round 1, got {len(trained)}")
    train = cfg.train
    return {
        "devices": n,
        "edges": cfg.topology.edges,
        "threads": threads,
        "rounds": args.rounds,
        "build_s": build_s,
        "round_s": round_s,
        "device_steps_per_round": n * train.edge_rounds * train.local_steps,
        "examples_per_device": [d.num_examples for d in sim.devices],
        "device_keys": len(sim.devices[0].keys),
        "rss_bytes_built": rss_built,
        "rss_bytes_end": process_memory(proc)["rss_bytes"],
        **measured,
    }


def run_devices_child(n: int, rounds: int, args: argparse.Namespace) -> dict[str, Any]:
    """Measure ``n`` devices in a fresh interpreter; adds the child's wall time."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(n), "--rounds", str(rounds)]
    cmd += ["--examples-per-device", str(args.examples_per_device), "--probes", str(args.probes)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    started = time.perf_counter()
    result = run_result_child(cmd, f"N={n}", dict(os.environ))
    result["process_wall_s"] = time.perf_counter() - started
    return result


def rounds_within(n: int, last: dict[str, Any], wanted: int, left_s: float) -> tuple[int, float]:
    """Rounds to time at ``n`` devices so that the child fits ``left_s`` (at least 1), and the
    predicted seconds per round, extrapolated linearly in N from the last measured count."""
    per_device_s = median(last["round_s"]) / last["devices"]
    round_pred_s = per_device_s * n
    overhead_s = last["process_wall_s"] - sum(last["round_s"])
    fits = math.floor((left_s - overhead_s) / round_pred_s) if round_pred_s > 0 else wanted
    return max(1, min(wanted, fits)), round_pred_s


def devices_study(args: argparse.Namespace) -> dict[str, Any]:
    """The reference (1 device) and every N, in increasing order, within the time budget."""
    deadline = time.monotonic() + args.budget_s
    reference = run_devices_child(1, 1, args)
    print(f"reference N=1: RSS {reference['rss_bytes'] / MIB:.1f} MiB", flush=True)
    samples, last = [], reference
    for n in sorted(args.devices):
        rounds, predicted = rounds_within(n, last, args.rounds, deadline - time.monotonic())
        got = run_devices_child(n, rounds, args)
        got["predicted_round_s"] = predicted
        samples.append(got)
        last = got
        print(
            f"N={n}: RSS {got['rss_bytes'] / MIB:.1f} MiB, rounds {[round(s, 1) for s in got['round_s']]} s "
            f"(predicted {predicted:.1f} s)",
            flush=True,
        )
    rows = []
    for s in samples:
        s_round = median(s["round_s"])
        rows.append(
            {
                "devices": s["devices"],
                "edges": s["edges"],
                "rounds_timed": len(s["round_s"]),
                "rss_mib": s["rss_bytes"] / MIB,
                "mib_per_device": (s["rss_bytes"] - reference["rss_bytes"]) / MIB / (s["devices"] - 1)
                if s["devices"] > 1
                else None,
                "s_per_round": s_round,
                "s_per_device_step": s_round / s["device_steps_per_round"],
            }
        )
    points = [reference, *samples]
    xs = [float(s["devices"]) for s in points]
    time_fit = fit_line([float(s["devices"]) for s in samples], [median(s["round_s"]) for s in samples])
    return {
        "params": {
            "devices": sorted(args.devices),
            "reference_devices": 1,
            "devices_per_edge": DEVICES_PER_EDGE,
            "rounds": args.rounds,
            "edge_rounds": 1,
            "local_steps": 1,
            "batch_size": BATCH,
            "max_length": SEQ,
            "examples_per_device": args.examples_per_device,
            "num_probes": args.probes,
            "partition": "IID (alpha=null, quantity_sigma=0)",
            "budget_s": args.budget_s,
        },
        "rows": rows,
        "fits": {
            "rss": fit_line(xs, [float(s["rss_bytes"]) for s in points]),
            "rss_trimmed": fit_line(xs, [float(s["rss_bytes_trimmed"] or s["rss_bytes"]) for s in points]),
            "round_s": {
                "s_per_added_device": time_fit["slope_bytes_per_device"],
                "fixed_s": time_fit["intercept_bytes"],
                "r2": time_fit["r2"],
            },
        },
        "reference": reference,
        "samples": samples,
    }


def main() -> None:
    """Child entry point: measure one device count, print its ``RESULT`` line."""
    parser = argparse.ArgumentParser(description="one device count of the scale study (a child process)")
    parser.add_argument("--child", type=int, required=True, help="device count N")
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--examples-per-device", type=int, required=True)
    parser.add_argument("--probes", type=int, required=True)
    parser.add_argument("--threads", type=int, default=None)
    print(RESULT_PREFIX + json.dumps(measure_devices_child(parser.parse_args())), flush=True)


if __name__ == "__main__":
    main()
