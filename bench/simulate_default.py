"""Benchmark: ``elsa simulate`` on the default config vs centralized LoRA on the same data and steps.

Runs two simulations through the CLI, each as its own subprocess, and measures for each its
wall time (process start to exit), CPU time (user + sys from ``os.wait4``; less sensitive than
wall time to other load on a shared machine), peak RSS (the kernel's high-water mark for the
process from ``os.wait4``, plus the process tree's RSS sampled with psutil every ``--poll-s``
seconds) and the test accuracy after every cloud round (from the run's ``metrics.json``).

* **ELSA**: ``configs/default.yaml`` as is (MiniLM, BBC News, 2 edges x 3 devices, Dirichlet 0.5,
  quantity skew 0.3, fp16 cuts).
* **Centralized LoRA**: the same config with one edge and one device holding the whole training
  split (``data.alpha: null``, ``data.quantity_sigma: 0``), ``train.local_steps`` multiplied by
  the number of devices of the ELSA run, same ``edge_rounds``, ``cloud_rounds``, batch size,
  learning rate, seed, LoRA and cut, and fp32 cuts (split training with fp32 cuts computes the
  monolithic model's gradients exactly, so this is plain LoRA fine-tuning on pooled data).

"Same steps": per cloud round, ELSA runs ``edge_rounds x local_steps`` optimizer steps on each of
its D devices (D x edge_rounds x local_steps batches of ``batch_size``); the centralized run runs
``edge_rounds x (local_steps x D)`` steps on one device, i.e. the same number of optimizer steps
as the sum over ELSA's devices and, when every device holds at least ``batch_size`` examples,
the same number of training examples seen. Both counts are computed and written to the JSON.

Usage: ``python bench/simulate_default.py [--quick] [--config configs/default.yaml] [--threads T]
[--repeats N] [--out bench/results/simulate_default.json]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from benchkit import (
    REPO_ROOT,
    RESULTS_DIR,
    machine_info,
    median,
    print_table,
    set_torch_threads,
    write_results,
)
from elsa.runtime.config import RunConfig, load_config, parse_config
from elsa.runtime.simulation import prepare_data

NAME = "simulate_default"
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"
QUICK_OVERRIDES: dict[str, dict[str, Any]] = {
    "train": {"cloud_rounds": 1, "edge_rounds": 1, "local_steps": 1, "max_length": 32},
    "data": {"max_test_examples": 32, "max_train_examples": 200},
}
SAME_STEPS = (
    "Per cloud round, ELSA runs edge_rounds x local_steps optimizer steps on each of its D devices "
    "(batch_size examples each, or the device's whole partition if smaller); the centralized run "
    "runs edge_rounds x (local_steps x D) steps on one device holding the whole training split. "
    "Same number of optimizer steps as the sum over ELSA's devices, same batch size, so the same "
    "number of training examples seen when every device holds >= batch_size examples "
    "(optimizer_steps_total and examples_seen_total below are the exact counts)."
)


def _override(raw: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for section, values in overrides.items():
        out[section] = {**out[section], **values}
    return out


def centralized_config(cfg: RunConfig) -> RunConfig:
    """One device with all the data, local_steps x D, IID, fp32 cuts; everything else unchanged."""
    return parse_config(
        _override(
            cfg.model_dump(mode="json"),
            {
                "topology": {"edges": 1, "devices_per_edge": 1},
                "data": {"alpha": None, "quantity_sigma": 0.0},
                "train": {"local_steps": cfg.train.local_steps * cfg.num_devices},
                "transport": {"dtype": "fp32"},
            },
        )
        | {"name": f"{cfg.name}-centralized"},
        source="centralized config",
    )


def device_example_counts(cfg: RunConfig) -> list[int]:
    """Training examples per device, from the simulation's own partitioning (no model load)."""
    parts, _test = prepare_data(cfg)
    return [len(p) for p in parts]


def step_accounting(cfg: RunConfig) -> dict[str, Any]:
    """Optimizer steps and examples seen over the whole run, from the partition sizes."""
    t = cfg.train
    sizes = device_example_counts(cfg)
    steps_per_device = t.cloud_rounds * t.edge_rounds * t.local_steps
    return {
        "devices": len(sizes),
        "examples_per_device": sizes,
        "optimizer_steps_per_device": steps_per_device,
        "optimizer_steps_total": steps_per_device * len(sizes),
        "examples_seen_total": sum(steps_per_device * min(t.batch_size, n) for n in sizes),
    }


# --------------------------------------------------------------------------- measured subprocess


@dataclass
class RssSampler:
    """Samples the RSS of a process and all its descendants every ``period_s`` in a thread."""

    pid: int
    period_s: float
    peak_bytes: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                total = 0
                for proc in procs:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                return
            self.peak_bytes = max(self.peak_bytes, total)
            self.samples += 1
            self._stop.wait(self.period_s)


@dataclass(frozen=True)
class Measured:
    """Wall time and memory of one finished subprocess."""

    returncode: int
    wall_s: float
    peak_rss_bytes: int
    peak_rss_tree_sampled_bytes: int
    rss_samples: int
    cpu_s: float


def run_measured(cmd: list[str], log_path: Path, poll_s: float) -> Measured:
    """Run ``cmd`` (output to ``log_path``); wall time, kernel peak RSS (wait4), sampled tree RSS."""
    with log_path.open("wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        sampler = RssSampler(proc.pid, poll_s)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop()
    return Measured(
        returncode=proc.returncode,
        wall_s=wall,
        peak_rss_bytes=usage.ru_maxrss * 1024,  # Linux reports KiB
        peak_rss_tree_sampled_bytes=sampler.peak_bytes,
        rss_samples=sampler.samples,
        cpu_s=usage.ru_utime + usage.ru_stime,
    )


def elsa_command() -> list[str]:
    """The ``elsa`` console script of this interpreter's environment."""
    exe = Path(sys.executable).parent / "elsa"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("elsa")
    if found is None:
        raise SystemExit("the `elsa` command is not installed in this environment")
    return [found]


def simulate(config_path: Path, out_dir: Path, run_id: str, threads: int, poll_s: float) -> dict[str, Any]:
    """``elsa simulate`` one config; returns the measurements and the per-round metrics."""
    cmd = [
        *elsa_command(),
        "simulate",
        "--config",
        str(config_path),
        "--out",
        str(out_dir),
        "--run-id",
        run_id,
        "--threads",
        str(threads),
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / f"{run_id}.log"
    measured = run_measured(cmd, log_path, poll_s)
    if measured.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"`{' '.join(cmd)}` exited with {measured.returncode}:\n{tail}")
    metrics = json.loads((out_dir / run_id / "metrics.json").read_text(encoding="utf-8"))
    rounds = metrics["rounds"]
    return {
        "command": " ".join(["elsa", *cmd[1:]]),
        "wall_s": measured.wall_s,
        "peak_rss_bytes": measured.peak_rss_bytes,
        "peak_rss_tree_sampled_bytes": measured.peak_rss_tree_sampled_bytes,
        "rss_samples": measured.rss_samples,
        "cpu_s": measured.cpu_s,
        "sim_wall_s": metrics["wall_s"],
        "adapter_numel": metrics["adapter_numel"],
        "accuracy_per_round": [r["test_accuracy"] for r in rounds],
        "test_loss_per_round": [r["test_loss"] for r in rounds],
        "train_loss_per_round": [r["train_loss"] for r in rounds],
        "round_wall_s": [r["wall_s"] for r in rounds],
        "bytes_per_round": [sum(r["bytes"].values()) for r in rounds],
    }


# ------------------------------------------------------------------------------------- driver


def _display(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run both simulations (interleaved when repeated); returns the result record."""
    threads = set_torch_threads(args.threads)
    args.config = Path(args.config).resolve()
    base = load_config(args.config)
    if args.quick:
        base = parse_config(_override(base.model_dump(mode="json"), QUICK_OVERRIDES), source="quick config")
    configs = {"elsa": base, "centralized": centralized_config(base)}
    work = Path(tempfile.mkdtemp(prefix="elsa-bench-sim-")) if args.work_dir is None else args.work_dir
    paths: dict[str, Path] = {}
    for name, cfg in configs.items():
        if name == "elsa" and not args.quick:
            paths[name] = args.config  # the default config file itself
        else:
            paths[name] = work / f"{name}.yaml"
            paths[name].parent.mkdir(parents=True, exist_ok=True)
            paths[name].write_text(
                yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
            )

    attempts: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    order = list(configs)
    try:
        for rep in range(args.repeats):
            for name in order if rep % 2 == 0 else order[::-1]:
                print(
                    f"repeat {rep + 1}/{args.repeats}: elsa simulate {name} ({paths[name]}) ...", flush=True
                )
                got = simulate(paths[name], work / "runs", f"{name}-{rep}", threads, args.poll_s)
                print(
                    f"  {got['wall_s']:.1f} s wall, {got['cpu_s']:.1f} s CPU, "
                    f"peak RSS {got['peak_rss_bytes'] / 2**20:.0f} MiB, "
                    f"final accuracy {got['accuracy_per_round'][-1]:.3f}",
                    flush=True,
                )
                attempts[name].append(got)
    finally:
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)

    runs: dict[str, dict[str, Any]] = {}
    for name, cfg in configs.items():
        tries = attempts[name]
        runs[name] = {
            "config": cfg.model_dump(mode="json"),
            "config_file": _display(paths[name]) if name == "elsa" and not args.quick else "(temporary YAML)",
            **step_accounting(cfg),
            "wall_s_median": median([t["wall_s"] for t in tries]),
            "cpu_s_median": median([t["cpu_s"] for t in tries]),
            "peak_rss_bytes_max": max(t["peak_rss_bytes"] for t in tries),
            "final_accuracy": tries[-1]["accuracy_per_round"][-1],
            "accuracy_per_round": tries[-1]["accuracy_per_round"],
            "attempts": tries,
        }
    elsa, central = runs["elsa"], runs["centralized"]
    return {
        "benchmark": NAME,
        "description": "elsa simulate default config vs centralized LoRA on the same data and steps",
        "machine": machine_info(),
        "params": {
            "config": _display(args.config),
            "quick": args.quick,
            "quick_overrides": QUICK_OVERRIDES if args.quick else None,
            "threads": threads,
            "repeats": args.repeats,
            "rss_poll_s": args.poll_s,
        },
        "same_steps": SAME_STEPS,
        "centralized_changes": {
            "topology": "edges=1, devices_per_edge=1",
            "data": "alpha=null (IID), quantity_sigma=0",
            "train.local_steps": f"{base.train.local_steps} x {base.num_devices} devices = "
            f"{configs['centralized'].train.local_steps}",
            "transport.dtype": "fp32 (split with fp32 cuts == monolithic gradients)",
        },
        "summary": {
            "final_accuracy_elsa": elsa["final_accuracy"],
            "final_accuracy_centralized": central["final_accuracy"],
            "accuracy_gap_centralized_minus_elsa": central["final_accuracy"] - elsa["final_accuracy"],
            "wall_ratio_elsa_over_centralized": elsa["wall_s_median"] / central["wall_s_median"],
            "cpu_ratio_elsa_over_centralized": elsa["cpu_s_median"] / central["cpu_s_median"],
            "peak_rss_ratio_elsa_over_centralized": elsa["peak_rss_bytes_max"]
            / central["peak_rss_bytes_max"],
        },
        "runs": runs,
    }


def print_report(record: dict[str, Any]) -> None:
    """Comparison table and accuracy per round."""
    e, c = record["runs"]["elsa"], record["runs"]["centralized"]

    def both(key: str, fmt: str) -> list[str]:
        return [fmt.format(e[key]), fmt.format(c[key])]

    rows = [
        ["devices", *both("devices", "{}")],
        ["optimizer steps (total)", *both("optimizer_steps_total", "{}")],
        ["examples seen (total)", *both("examples_seen_total", "{}")],
        ["wall time s (median)", *both("wall_s_median", "{:.1f}")],
        ["CPU time s (user+sys, median)", *both("cpu_s_median", "{:.1f}")],
        ["peak RSS MiB", f"{e['peak_rss_bytes_max'] / 2**20:.0f}", f"{c['peak_rss_bytes_max'] / 2**20:.0f}"],
        ["final accuracy", *both("final_accuracy", "{:.3f}")],
    ]
    rows += [
        [f"accuracy after round {i}", f"{a:.3f}", f"{b:.3f}"]
        for i, (a, b) in enumerate(zip(e["accuracy_per_round"], c["accuracy_per_round"], strict=True))
    ]
    print_table(
        f"elsa simulate {record['params']['config']}{' (quick)' if record['params']['quick'] else ''}, "
        f"{record['params']['threads']} torch thread(s)",
        ["", "ELSA", "centralized LoRA"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 round of 1 step, 200 train / 32 test examples"
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each config, interleaved")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--poll-s", type=float, default=0.2, help="RSS sampling period")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep configs and runs here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / f"{NAME}.json")
    args = parser.parse_args()
    record = run(args)
    print_report(record)
    print(f"wrote {write_results(args.out, record)}")


if __name__ == "__main__":
    main()
