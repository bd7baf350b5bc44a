"""What every ELSA benchmark script shares: thread setup, machine description, result files, tables.

Scripts in ``bench/`` run as ``python bench/<name>.py``, so this module is imported by its bare
name (``bench/`` is the script's directory, hence on ``sys.path``).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path(__file__).parent / "results"
REPO_ROOT = Path(__file__).parent.parent
#: prefix of the one stdout line in which a measuring child process hands back its JSON result
RESULT_PREFIX = "RESULT "


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity set), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def set_torch_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (default: every usable core); returns the count."""
    count = threads if threads is not None else usable_cores()
    torch.set_num_threads(count)
    return torch.get_num_threads()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """The machine and software a result was measured on (no hostname or user names)."""
    freq = psutil.cpu_freq()
    return {
        "cpu_count_logical": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "usable_cores": usable_cores(),
        "cpu_model": _cpu_model(),
        "cpu_max_mhz": None if freq is None else round(freq.max or freq.current),
        "memory_total_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def write_results(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(values))


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """(25th, 75th) percentile; both equal the value for fewer than two samples."""
    if len(values) < 2:
        return float(values[0]), float(values[0])
    q = statistics.quantiles(values, n=4, method="inclusive")
    return float(q[0]), float(q[2])


def latency_summary_ms(values_s: Sequence[float]) -> dict[str, float | None]:
    """p50, p90, p99 (linear interpolation), mean and max in ms of latencies given in seconds;
    every value None when there are none."""
    if not values_s:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "max": None}
    ms = np.asarray(values_s, dtype=np.float64) * 1000
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return {"p50": p50, "p90": p90, "p99": p99, "mean": float(ms.mean()), "max": float(ms.max())}


def fit_line(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least-squares y = slope * x + intercept, with R² (keys ``slope_bytes_per_device``,
    ``intercept_bytes``, ``r2``: the memory studies fit bytes against device counts)."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    slope, intercept = np.polyfit(xs, ys, 1)
    pred = slope * xs + intercept
    ss_res = float(((ys - pred) ** 2).sum())
    ss_tot = float(((ys - ys.mean()) ** 2).sum())
    return {
        "slope_bytes_per_device": float(slope),
        "intercept_bytes": float(intercept),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0,
    }


def malloc_trim() -> bool:
    """Return freed heap pages to the OS (glibc only); True when it ran."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def process_memory(proc: psutil.Process) -> dict[str, int | None]:
    """This process's memory as the memory studies read it: RSS after ``gc.collect()``, RSS after
    ``malloc_trim(0)`` as well (None where glibc is absent), and USS (bytes)."""
    gc.collect()
    rss = int(proc.memory_info().rss)
    trimmed = int(proc.memory_info().rss) if malloc_trim() else None
    return {"rss_bytes": rss, "rss_bytes_trimmed": trimmed, "uss_bytes": int(proc.memory_full_info().uss)}


def run_result_child(cmd: Sequence[str], label: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run a measuring child process; returns the JSON of its last ``RESULT`` stdout line.

    Exits (SystemExit naming ``label`` with the end of its stderr) if the child fails.
    """
    done = subprocess.run(list(cmd), capture_output=True, text=True, check=False, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"child for {label} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    return result


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A right-aligned rich table on stdout (plain text when stdout is not a terminal)."""
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(file=sys.stdout, width=max(100, Console().width)).print(table)


def quiet_transformers() -> None:
    """No per-load progress bars or warnings from transformers in the bench output."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def merge_sections(base: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``base`` (a run config as a mapping) with each section updated by ``overrides``."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in overrides.items():
        out[section] = {**out.get(section, {}), **values}
    return out


def study_parser(doc: str | None, name: str, quick_help: str) -> argparse.ArgumentParser:
    """The arguments every study takes: ``--quick``, ``--threads`` and ``--out``."""
    parser = argparse.ArgumentParser(description=(doc or name).splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / f"{name}.json")
    return parser


def run_study(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    report: Callable[[dict[str, Any]], None],
) -> None:
    """Parse the arguments, run the study, print its table and write its JSON."""
    args = parser.parse_args()
    quiet_transformers()
    record = run(args)
    report(record)
    print(f"wrote {write_results(args.out, record)}")
