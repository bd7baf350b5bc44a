"""What the comparison studies share (accuracy, ablations, communication, robustness).

A study is a list of :class:`RunSpec` (a strategy's config for one dataset, α, seed and
scenario), run by :func:`run_specs` in worker processes (``--workers``, one torch thread each:
on the 2-core benchmark machine two workers keep both cores busy without OpenMP threads
waiting on each other). Every finished run is appended to ``<out>.partial.jsonl`` at once, so
an interrupted study resumes with ``--resume`` instead of starting over (``--resume`` also
reuses the runs stored in a finished study's JSON, e.g. to add a strategy to it; a run is
reused only when its key and config digest match). Summaries group runs
by everything but the seed (mean ± sample sd over seeds).

Every run is a real simulation (packaged MiniLM, real data, every message through the wire
codec). Byte tiers: *device-edge* = cut tensors, probe reports and adapters between devices and
edges; *edge-cloud* = adapters between edges and the cloud; *cloud-device* = the global adapter
delta each device downloads at the start of a round.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchkit import REPO_ROOT, machine_info, merge_sections, print_table, study_parser, write_results
from elsa.runtime.config import RunConfig, load_config, parse_config
from elsa.runtime.report import render_study
from elsa.runtime.strategies import optimizer_steps, steps_per_round, strategy_config
from elsa.runtime.transport import (
    ACTIVATIONS,
    ADAPTERS_DOWN,
    ADAPTERS_UP,
    CLOUD_TO_DEVICE,
    CLOUD_TO_EDGE,
    EDGE_TO_CLOUD,
    GRADIENTS,
    INFERENCE,
    PROBE_REPORTS,
)

STUDY_CONFIG = REPO_ROOT / "configs" / "study.yaml"
#: --quick: the smallest run that still goes through every tier (for the scripts' smoke tests)
QUICK: dict[str, dict[str, Any]] = {
    "topology": {"edges": 2, "devices_per_edge": 2},
    "data": {"max_train_examples": 160, "max_test_examples": 32},
    "train": {"cloud_rounds": 2, "edge_rounds": 1, "local_steps": 1, "batch_size": 8, "max_length": 16},
    "control": {"num_probes": 16, "basis_dim": 8},
}
TIERS: dict[str, tuple[str, ...]] = {
    "device-edge": (ACTIVATIONS, GRADIENTS, INFERENCE, PROBE_REPORTS, ADAPTERS_UP, ADAPTERS_DOWN),
    "edge-cloud": (EDGE_TO_CLOUD, CLOUD_TO_EDGE),
    "cloud-device": (CLOUD_TO_DEVICE,),
}


@dataclass(frozen=True)
class RunSpec:
    """One simulated run of a study: a label, its config (as a mapping) and what it varies."""

    key: str
    config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


def study_arguments(parser: argparse.ArgumentParser, *, seeds: int, workers: int = 2) -> None:
    """The arguments of every comparison study (beside benchkit's --quick/--threads/--out)."""
    parser.add_argument("--seeds", type=int, default=seeds, help=f"seeds 0..N-1 (default {seeds})")
    parser.add_argument("--workers", type=int, default=workers, help="runs in parallel, 1 thread each")
    parser.add_argument("--config", type=Path, default=STUDY_CONFIG, help="the ELSA config to start from")
    parser.add_argument("--resume", action="store_true", help="reuse finished runs of <out>.partial.jsonl")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: rebuild the tables and figures from the runs stored in <out>",
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="cloud rounds of the ELSA config (default: the config's)"
    )


def base_config(
    args: argparse.Namespace, *, dataset: str, alpha: float | None, seed: int, **sections: Any
) -> RunConfig:
    """The study's ELSA config (``args.config``) for one dataset, α and seed; ``args.quick``:
    smoke size; ``args.rounds``: another number of cloud rounds; ``sections``: more overrides."""
    path: Path = args.config
    quick: bool = args.quick
    raw = load_config(path).model_dump(mode="json")
    overrides: dict[str, dict[str, Any]] = {"data": {"dataset": dataset, "alpha": alpha}}
    if args.rounds is not None:
        overrides["train"] = {"cloud_rounds": args.rounds}
    if quick:
        overrides = merge_sections(overrides, QUICK)
        overrides["data"] = {**QUICK["data"], "dataset": dataset, "alpha": alpha}
    for name, values in sections.items():
        overrides[name] = {**overrides.get(name, {}), **values}
    raw = merge_sections(raw, overrides)
    raw["seed"] = seed
    return parse_config(raw, source=str(path))


def spec(base: RunConfig, strategy: str, **meta: Any) -> RunSpec:
    """The run of ``strategy`` derived from ``base`` (an ELSA config), labelled by ``meta``."""
    config = strategy_config(base, strategy)
    meta = {
        "strategy": strategy,
        "dataset": base.data.dataset,
        "alpha": base.data.alpha,
        "seed": base.seed,
        **meta,
    }
    key = "/".join(f"{k}={meta[k]}" for k in sorted(meta))
    return RunSpec(key, config.model_dump(mode="json"), meta)


def _tier_bytes(kinds: dict[str, int]) -> dict[str, int]:
    out = {tier: sum(int(kinds.get(k, 0)) for k in names) for tier, names in TIERS.items()}
    out["total"] = sum(out.values())
    return out


def _execute(key: str, raw: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Run one simulation in this (worker) process; the compact record a study keeps."""
    import logging
    import warnings

    import torch
    from transformers.utils import logging as hf_logging

    from elsa.runtime.simulation import Simulation

    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    config = parse_config(raw, source=key)
    started = time.perf_counter()
    result = Simulation.from_config(config, run_id=key).run()
    per_round = steps_per_round(config)
    rounds = [
        {
            "round": r.cloud_round,
            "steps": r.cloud_round * per_round,
            "accuracy": r.test_accuracy,
            "test_loss": r.test_loss,
            "train_loss": r.train_loss,
            "wall_s": r.wall_s,
            "comm_s": r.comm_s,
            "participants": r.participants,
            "bytes": dict(r.bytes),
            "tiers": _tier_bytes(r.bytes),
            "quarantined": list(r.control.get("quarantined", [])),
        }
        for r in result.rounds
    ]
    return {
        "key": key,
        "meta": meta,
        "optimizer_steps": optimizer_steps(config),
        "rounds": rounds,
        "final_accuracy": rounds[-1]["accuracy"],
        "wall_s": time.perf_counter() - started,
    }


def config_digest(config: dict[str, Any]) -> str:
    """SHA-256 of a run config (canonical JSON): what ``--resume`` checks before reusing a run."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _reusable(specs: Sequence[RunSpec], out: Path) -> dict[str, dict[str, Any]]:
    """Finished runs of these specs, from ``<out>`` (a finished study) and ``<out>.partial.jsonl``
    (an interrupted one), reused only when key and config digest both match."""
    digests = {s.key: config_digest(s.config) for s in specs}
    found: list[dict[str, Any]] = []
    if out.exists():
        found += json.loads(out.read_text(encoding="utf-8")).get("runs", [])
    partial = out.with_suffix(".partial.jsonl")
    if partial.exists():
        for line in partial.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            found.append({**record["result"], "config_sha256": config_digest(record["config"])})
    return {
        r["key"]: r for r in found if r.get("key") in digests and r.get("config_sha256") == digests[r["key"]]
    }


def run_specs(specs: Sequence[RunSpec], workers: int, out: Path, *, resume: bool) -> list[dict[str, Any]]:
    """Run every spec (``workers`` processes); progress on stdout; results in spec order.

    Finished runs are appended to ``<out>.partial.jsonl`` as they finish; with ``resume`` the
    runs already made (:func:`_reusable`) are not run again.
    """
    partial = out.with_suffix(".partial.jsonl")
    done = _reusable(specs, out) if resume else {}
    if partial.exists():
        partial.unlink()
    todo = [s for s in specs if s.key not in done]
    print(f"{len(specs)} runs ({len(done)} reused), {workers} worker(s)", flush=True)
    started = time.perf_counter()
    partial.parent.mkdir(parents=True, exist_ok=True)
    with partial.open("a", encoding="utf-8") as fh:  # what is reused survives another interruption
        for key, result in done.items():
            fh.write(json.dumps({"key": key, "config": configs_of(specs)[key], "result": result}) + "\n")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(workers, 1), mp_context=context) as pool:
        pending: dict[Future[dict[str, Any]], RunSpec] = {
            pool.submit(_execute, s.key, s.config, s.meta): s for s in todo
        }
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                item = pending.pop(future)
                result = {**future.result(), "config_sha256": config_digest(item.config)}
                done[item.key] = result
                with partial.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"key": item.key, "config": item.config, "result": result}) + "\n")
                accuracy = result["final_accuracy"]
                print(
                    f"[{len(done)}/{len(specs)} {time.perf_counter() - started:7.0f}s] {item.key}: "
                    f"accuracy {'-' if accuracy is None else f'{accuracy:.3f}'}, {result['wall_s']:.0f}s",
                    flush=True,
                )
    return [done[s.key] for s in specs]


def configs_of(specs: Sequence[RunSpec]) -> dict[str, dict[str, Any]]:
    """key → config of each spec."""
    return {s.key: s.config for s in specs}


def finish(out: Path) -> None:
    """Drop the partial file once the study's JSON is written."""
    partial = out.with_suffix(".partial.jsonl")
    if partial.exists():
        partial.unlink()


# -- summaries ------------------------------------------------------------------------------------


def mean_sd(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sample sd, n) of the non-None values; (None, None, 0) when there are none."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        return None, None, 0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0), len(xs)


def fmt_mean_sd(values: Iterable[float | None], pattern: str = "{:.3f}") -> str:
    """``mean ± sd`` of the non-None values ('–' when none)."""
    mean, sd, n = mean_sd(values)
    if mean is None or sd is None:
        return "–"
    return pattern.format(mean) if n < 2 else f"{pattern.format(mean)} ± {pattern.format(sd)}"


def group(runs: Iterable[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """Runs grouped by the ``meta`` values of ``keys`` (insertion order kept)."""
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for run in runs:
        out.setdefault(tuple(run["meta"].get(k) for k in keys), []).append(run)
    return out


def to_target(run: dict[str, Any], target: float) -> dict[str, float | None]:
    """The first round at or above ``target`` accuracy: its round, optimizer steps (all
    devices), wall seconds and bytes (all tiers) up to it; None when never reached."""
    wall, sent = 0.0, 0
    for r in run["rounds"][1:]:
        wall += r["wall_s"]
        sent += r["tiers"]["total"]
        if r["accuracy"] is not None and r["accuracy"] >= target:
            return {"round": r["round"], "steps": r["steps"], "wall_s": wall, "bytes": sent}
    return {"round": None, "steps": None, "wall_s": None, "bytes": None}


def mb_per_round(run: dict[str, Any], tier: str = "total") -> float:
    """Mean MB per cloud round of ``tier`` (rounds after the first: round 1 sends no global
    delta), over the rounds of the run."""
    later = run["rounds"][2:] or run["rounds"][1:]
    return statistics.fmean(r["tiers"][tier] for r in later) / 1e6


def run_mb(run: dict[str, Any]) -> float:
    """MB the whole run sent, all tiers."""
    return sum(r["tiers"]["total"] for r in run["rounds"]) / 1e6


def curve(runs: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Mean (± sd) accuracy per round over seeds, x = optimizer steps (all devices)."""
    rounds = min(len(r["rounds"]) for r in runs)
    xs, ys, errs = [], [], []
    for i in range(rounds):
        mean, sd, _ = mean_sd(r["rounds"][i]["accuracy"] for r in runs)
        xs.append(runs[0]["rounds"][i]["steps"] if i else 0)
        ys.append(mean)
        errs.append(sd)
    return {"x": xs, "y": ys, "err": errs}


@dataclass(frozen=True)
class Study:
    """A comparison study: its name, the runs it makes and how it summarises them."""

    name: str
    specs: Callable[[argparse.Namespace], list[RunSpec]]
    summary: Callable[[argparse.Namespace, list[dict[str, Any]]], dict[str, Any]]
    #: parameters to record beside the command line's (e.g. derived device indices)
    extra_params: Callable[[argparse.Namespace], dict[str, Any]] | None = None


def study_main(
    study: Study,
    doc: str | None,
    *,
    seeds: int,
    quick_help: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    quick_defaults: dict[str, Any],
) -> None:
    """A study's command line: benchkit's and :func:`study_arguments`' options, the study's own
    (``add_arguments``), ``quick_defaults`` under ``--quick``; then :func:`run_main`."""
    parser = study_parser(doc, study.name, quick_help)
    study_arguments(parser, seeds=seeds)
    add_arguments(parser)
    if parser.parse_known_args()[0].quick:
        parser.set_defaults(**quick_defaults)
    run_main(parser, study)


def _params(args: argparse.Namespace) -> dict[str, Any]:
    skip = {"out", "resume", "report_only", "threads"}
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in skip}


def run_main(parser: argparse.ArgumentParser, study: Study) -> None:
    """Parse; run the study's specs (or, with ``--report-only``, take the runs stored in
    ``--out`` and the parameters they were made with); print the tables, write the PNGs next
    to ``--out`` and the JSON to it; drop the partial file."""
    args = parser.parse_args()
    machine = machine_info()
    if args.report_only:
        stored = json.loads(args.out.read_text(encoding="utf-8"))
        for key, value in stored["params"].items():
            if hasattr(args, key) and key not in ("config", "out"):
                setattr(args, key, value)
        runs, machine = stored["runs"], stored["machine"]
    else:
        machine = {**machine, "torch_threads": 1, "workers": args.workers}  # every run: 1 thread
        runs = run_specs(study.specs(args), args.workers, args.out, resume=args.resume)
    params = {**_params(args), **(study.extra_params(args) if study.extra_params else {})}
    report = study.summary(args, runs)
    for table in report["tables"]:
        print_table(table["title"], table["columns"], [[_cell(v) for v in row] for row in table["rows"]])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    render_study(report, args.out.parent)
    record = {"study": study.name, "machine": machine, "params": params, "runs": runs, "report": report}
    print(f"wrote {write_results(args.out, record)}")
    finish(args.out)
    sys.stdout.flush()


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
