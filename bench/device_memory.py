"""Benchmark: resident memory per extra simulated device (DESIGN §7.6; target ≈ adapter size).

For each device count N, a fresh subprocess builds ``Simulation.from_config`` for one edge with N
devices (IID, ``--examples-per-device`` training examples each, a small test split) and runs one
cloud round of one local step per device. Right after the last device's step (from the run's
progress callback), when every device and edge session of the round holds its adapter tensors,
gradients and AdamW state, it collects garbage and reads its RSS with psutil (also after
``malloc_trim(0)``, which hands freed heap pages back to the OS, and the USS). RSS vs N is fitted
by least squares; the slope is the memory one more device costs. It is compared with the adapter
size (4 bytes x numel of the device + edge-session adapter keys), adapter + gradient + AdamW
moments (4 x that) and a full fp32 copy of the MiniLM task model.

Device counts run in separate processes, interleaved across repeats (N1, N2, ... then reversed).

Usage: ``python bench/device_memory.py [--quick] [--devices 2 8 16 32] [--repeats R] [--threads T]
[--out bench/results/device_memory.json]``
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path
from typing import Any

import psutil

from benchkit import (
    RESULT_PREFIX,
    RESULTS_DIR,
    fit_line,
    machine_info,
    print_table,
    process_memory,
    run_result_child,
    set_torch_threads,
    write_results,
)

NAME = "device_memory"
MIB = 2**20


# ----------------------------------------------------------------------------- child process


def measure_child(args: argparse.Namespace) -> dict[str, Any]:
    """Simulate one cloud round of one step on ``args.child`` devices and measure this process.

    The measurement is taken from the run's progress callback right after the last device's
    step, when every device and every edge session of the round holds its adapter tensors,
    gradients and AdamW state (only ``Simulation``'s public API is used).
    """
    from transformers.utils import logging as hf_logging

    from elsa.model.adapters import select, state_numel
    from elsa.runtime.config import RunConfig, parse_config
    from elsa.runtime.simulation import Simulation

    threads = set_torch_threads(args.threads)
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    n = args.child
    defaults = RunConfig().model_dump(mode="json")
    cfg = parse_config(
        {
            **defaults,
            "name": f"device-memory-{n}",
            "topology": {"edges": 1, "devices_per_edge": n},
            "data": {
                **defaults["data"],
                "alpha": None,
                "quantity_sigma": 0.0,
                "max_train_examples": args.examples_per_device * n,
                "max_test_examples": args.test_examples,
            },
            "train": {**defaults["train"], "cloud_rounds": 1, "edge_rounds": 1, "local_steps": 1},
        }
    )
    proc = psutil.Process()
    sim = Simulation.from_config(cfg, run_id=f"mem-{n}")
    gc.collect()
    rss_built = proc.memory_info().rss
    measured: dict[str, Any] = {}
    trained: list[str] = []

    def on_event(name: str, fields: dict[str, Any]) -> None:
        if name != "device_trained":
            return
        trained.append(str(fields["device"]))
        if len(trained) < n:
            return
        measured.update(process_memory(proc))
        measured["adam_param_states_devices"] = sum(len(d.stepper.optimizer.state) for d in sim.devices)

    sim.run(on_event)
    if "rss_bytes" not in measured:
        raise RuntimeError(f"expected {n} device_trained events, got {len(trained)}")

    segments = sim.split_model.segments(cfg.split_params())
    model = sim.split_model.task_model.peft_model
    data_bytes = sum(
        int(t.numel() * t.element_size())
        for d in sim.devices
        for t in (d.data.input_ids, d.data.attention_mask, d.data.labels)
    )
    return {
        "devices": n,
        "rss_bytes_built": rss_built,
        **measured,
        "threads": threads,
        "device_keys": len(segments.device_keys()),
        "edge_keys": len(segments.edge_keys()),
        "device_adapter_numel": state_numel(select(sim.global_state, segments.device_keys())),
        "session_adapter_numel": state_numel(select(sim.global_state, segments.edge_keys())),
        "model_params_total": sum(int(p.numel()) for p in model.parameters()),
        "model_params_frozen": sum(int(p.numel()) for p in model.parameters() if not p.requires_grad),
        "train_data_bytes_per_device": data_bytes / n,
        "examples_per_device": [d.num_examples for d in sim.devices],
    }


# ---------------------------------------------------------------------------------- parent


def run_child(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Measure ``n`` devices in a fresh interpreter."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(n),
        "--examples-per-device",
        str(args.examples_per_device),
        "--test-examples",
        str(args.test_examples),
    ]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    env = {**os.environ, **dict(item.split("=", 1) for item in args.child_env)}
    return run_result_child(cmd, f"N={n}", env)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every N in fresh processes, fit, compare; returns the result record."""
    threads = set_torch_threads(args.threads)
    samples: list[dict[str, Any]] = []
    counts = list(args.devices)
    for rep in range(args.repeats):
        for n in counts if rep % 2 == 0 else counts[::-1]:
            got = run_child(n, args)
            samples.append(got)
            print(
                f"repeat {rep + 1}/{args.repeats} N={n}: RSS {got['rss_bytes'] / MIB:.1f} MiB "
                f"(trimmed {(got['rss_bytes_trimmed'] or 0) / MIB:.1f}, USS {got['uss_bytes'] / MIB:.1f})",
                flush=True,
            )
    first = samples[0]
    adapter_bytes = 4 * (first["device_adapter_numel"] + first["session_adapter_numel"])
    references = {
        "adapter_bytes": adapter_bytes,
        "adapter_grad_adamw_bytes": 4 * adapter_bytes,
        "adapter_grad_adamw_data_bytes": 4 * adapter_bytes + first["train_data_bytes_per_device"],
        "model_copy_bytes": 4 * first["model_params_total"],
    }
    xs = [float(s["devices"]) for s in samples]
    fits = {"rss": fit_line(xs, [float(s["rss_bytes"]) for s in samples])}
    if all(s["rss_bytes_trimmed"] is not None for s in samples):
        fits["rss_trimmed"] = fit_line(xs, [float(s["rss_bytes_trimmed"]) for s in samples])
    fits["uss"] = fit_line(xs, [float(s["uss_bytes"]) for s in samples])
    for fit in fits.values():
        slope = fit["slope_bytes_per_device"]
        fit["slope_over_adapter"] = slope / references["adapter_bytes"]
        fit["slope_over_adapter_grad_adamw"] = slope / references["adapter_grad_adamw_bytes"]
        fit["slope_over_model_copy"] = slope / references["model_copy_bytes"]
    return {
        "benchmark": NAME,
        "description": "RSS growth per extra simulated device vs adapter size and a model copy",
        "machine": machine_info(),
        "params": {
            "model": "all-MiniLM-L6-v2 (packaged), default run config (rank 8, cut h1/t1)",
            "devices": counts,
            "edges": 1,
            "partition": "IID (alpha=null, quantity_sigma=0)",
            "examples_per_device": args.examples_per_device,
            "test_examples": args.test_examples,
            "local_steps_before_measure": 1,
            "repeats": args.repeats,
            "threads": threads,
            "quick": args.quick,
            "child_env": args.child_env,
        },
        "model": {
            "params_total": first["model_params_total"],
            "params_frozen": first["model_params_frozen"],
            "device_adapter_numel": first["device_adapter_numel"],
            "session_adapter_numel": first["session_adapter_numel"],
            "device_keys": first["device_keys"],
            "edge_keys": first["edge_keys"],
        },
        "references": references,
        "fits": fits,
        "samples": samples,
    }


def print_report(record: dict[str, Any]) -> None:
    """Samples, fits and reference sizes."""
    print_table(
        "RSS per device count (one process per row)",
        ["devices", "RSS MiB", "RSS trimmed MiB", "USS MiB", "RSS before steps MiB"],
        [
            [
                str(s["devices"]),
                f"{s['rss_bytes'] / MIB:.1f}",
                "-" if s["rss_bytes_trimmed"] is None else f"{s['rss_bytes_trimmed'] / MIB:.1f}",
                f"{s['uss_bytes'] / MIB:.1f}",
                f"{s['rss_bytes_built'] / MIB:.1f}",
            ]
            for s in record["samples"]
        ],
    )
    refs = record["references"]
    rows = [
        [
            f"slope of {name}",
            f"{fit['slope_bytes_per_device'] / MIB:.3f}",
            f"{fit['slope_over_adapter']:.2f}",
            f"{fit['slope_over_model_copy']:.4f}",
            f"R² {fit['r2']:.3f}",
        ]
        for name, fit in record["fits"].items()
    ]
    rows += [
        [
            name,
            f"{value / MIB:.3f}",
            f"{value / refs['adapter_bytes']:.2f}",
            f"{value / refs['model_copy_bytes']:.4f}",
            "",
        ]
        for name, value in refs.items()
    ]
    print_table("bytes per extra device", ["", "MiB", "÷ adapter", "÷ model copy", ""], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: N in {1, 2}, one repeat")
    parser.add_argument("--devices", type=int, nargs="+", default=[2, 8, 16, 32])
    parser.add_argument("--repeats", type=int, default=2, help="passes over the device counts")
    parser.add_argument("--examples-per-device", type=int, default=40)
    parser.add_argument("--test-examples", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument(
        "--child-env",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the measured processes, e.g. MALLOC_MMAP_THRESHOLD_=131072",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / f"{NAME}.json")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(RESULT_PREFIX + json.dumps(measure_child(args)), flush=True)
        return
    if args.quick:
        args.devices, args.repeats = [1, 2], 1
    record = run(args)
    print_report(record)
    print(f"wrote {write_results(args.out, record)}")


if __name__ == "__main__":
    main()
