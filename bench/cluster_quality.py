"""Benchmark: does fingerprint clustering recover the planted non-IID groups? (DESIGN §2.3-§2.4)

BBC News over 3 edges x 4 devices with Dirichlet label skew (alpha 0.1, no quantity skew), the
packaged MiniLM. A device's *planted group* is its dominant label (argmax of the label counts of
its training partition). The simulation runs **one cloud round with one edge round**, so every
device trains ``local_steps`` AdamW steps from the shared initial adapter state on its own data
only and then uploads its fingerprint; the control plane clusters the fingerprints at the end of
that round (``k_max`` 6 for the 5 topics). The clusters are read from
``result.rounds[1].control["clusters"]`` and compared with the planted groups by the adjusted
Rand index (ARI), for several seeds (each seed draws another partition and model init).

Diagnostics (no extra training): from the ``device_trained`` progress event, right after each
device's local steps (before the edge aggregates), the script recomputes the device's fingerprint
with the runtime's own :func:`elsa.runtime.probing.probe_report` on the same probes and basis.
From these it records the Laplacian spectrum and eigengaps the K rule saw, the grouping and ARI
at every fixed K (the same row-normalised eigenvector k-means as
:func:`elsa.cluster.spectral_clusters`), and what the rule would give with ``min_eigengap`` 0
(tightness test only). ``diagnostic_matches_run`` says whether clustering the recomputed
fingerprints with the run's parameters gives the run's clusters (ARI 1 between the two).

Usage: ``python bench/cluster_quality.py [--quick] [--seeds 0 1 2] [--threads T]
[--out bench/results/cluster_quality.json]``
"""

from __future__ import annotations

import argparse
import dataclasses
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
from elsa.cluster import (
    Fingerprint,
    adjusted_rand_index,
    affinity,
    cluster_fingerprints,
    kmeans,
    laplacian_spectrum,
    mean_within_affinity,
    skl_matrix,
)
from elsa.runtime.config import RunConfig, parse_config
from elsa.runtime.probing import probe_report
from elsa.runtime.simulation import Simulation, device_name, prepare_data

NAME = "cluster_quality"
NUM_CLASSES = 5  # BBC News topics

#: the study's run config, on top of RunConfig defaults (section -> fields)
OVERRIDES: dict[str, dict[str, Any]] = {
    "topology": {"edges": 3, "devices_per_edge": 4},
    "data": {"dataset": "bbc_news", "alpha": 0.1, "quantity_sigma": 0.0, "max_test_examples": 64},
    "train": {
        "cloud_rounds": 1,
        "edge_rounds": 1,
        "local_steps": 3,
        "batch_size": 8,
        "learning_rate": 1e-3,
        "max_length": 32,
    },
    "control": {"k_max": 6, "num_probes": 128, "basis_dim": 16},
}
QUICK_OVERRIDES: dict[str, dict[str, Any]] = {
    "train": {"local_steps": 2},
    "data": {"max_test_examples": 16},
    "control": {"num_probes": 32, "basis_dim": 8},
}


def study_config(seed: int, quick: bool) -> RunConfig:
    """The run config of one seed."""
    raw = merge_sections(RunConfig().model_dump(mode="json"), OVERRIDES)
    if quick:
        raw = merge_sections(raw, QUICK_OVERRIDES)
    return parse_config({**raw, "name": f"{NAME}-{seed}", "seed": seed}, source=f"{NAME} config")


def planted_groups(config: RunConfig) -> tuple[list[int], list[list[int]]]:
    """(dominant label per device, label counts per device), in device order."""
    parts, _test = prepare_data(config)
    counts = [np.bincount(np.asarray(p.labels), minlength=NUM_CLASSES).tolist() for p in parts]
    return [int(np.argmax(c)) for c in counts], counts


def fixed_k_labels(eigenvectors: np.ndarray, k: int, seed: int) -> list[int]:
    """k-means on the row-normalised first ``k`` Laplacian eigenvectors (as spectral_clusters)."""
    embedding = eigenvectors[:, :k]
    norms = np.linalg.norm(embedding, axis=1, keepdims=True)
    embedding = embedding / np.where(norms > 0, norms, 1.0)
    return [int(v) for v in kmeans(embedding, k, np.random.default_rng(seed), restarts=10)]


def diagnostics(
    fingerprints: list[Fingerprint], planted: list[int], config: RunConfig, run_labels: list[int]
) -> dict[str, Any]:
    """Spectrum, eigengaps, fixed-K groupings and rule variants from the recomputed fingerprints."""
    params = config.clustering_params()
    skl = skl_matrix(fingerprints)
    w = affinity(skl)
    values, vectors = laplacian_spectrum(w)
    recomputed = cluster_fingerprints(fingerprints, params).tolist()
    no_gap_floor = cluster_fingerprints(fingerprints, dataclasses.replace(params, min_eigengap=0.0)).tolist()
    upper = min(params.k_max, len(fingerprints) - 1)
    fixed_k = {}
    for k in range(2, upper + 1):
        labels = fixed_k_labels(vectors, k, params.seed)
        fixed_k[str(k)] = {
            "labels": labels,
            "ari": adjusted_rand_index(labels, planted),
            "mean_within_affinity": mean_within_affinity(w, labels),
            # gap lambda_{k+1} - lambda_k (1-based), the quantity the K rule thresholds
            "eigengap": float(values[k] - values[k - 1]),
        }
    off = skl[~np.eye(len(planted), dtype=bool)]
    same = np.equal.outer(planted, planted) & ~np.eye(len(planted), dtype=bool)
    return {
        "laplacian_eigenvalues": values.tolist(),
        "eigengaps": np.diff(values).tolist(),
        "min_eigengap": params.min_eigengap,
        "min_within_affinity": params.min_within_affinity,
        "skl_median": float(np.median(off)),
        "skl_within_planted_mean": float(skl[same].mean()) if same.any() else None,
        "skl_between_planted_mean": float(skl[~np.equal.outer(planted, planted)].mean()),
        "mean_within_affinity_planted": mean_within_affinity(w, planted),
        "fixed_k": fixed_k,
        "recomputed_labels": recomputed,
        "diagnostic_matches_run": adjusted_rand_index(recomputed, run_labels) == 1.0,
        "no_gap_floor": {
            "labels": no_gap_floor,
            "clusters": len(set(no_gap_floor)),
            "ari": adjusted_rand_index(no_gap_floor, planted),
        },
    }


def run_seed(seed: int, quick: bool) -> dict[str, Any]:
    """One simulated cloud round for ``seed``: clusters vs planted groups, plus diagnostics."""
    config = study_config(seed, quick)
    planted, counts = planted_groups(config)
    started = time.perf_counter()
    sim = Simulation.from_config(config, run_id=f"{NAME}-{seed}")
    by_name = {d.device_id: d for d in sim.devices}
    fingerprints: dict[str, Fingerprint] = {}

    def on_event(name: str, fields: dict[str, Any]) -> None:
        # right after a device's local steps of the last edge round of round 1: its own model
        if name != "device_trained" or fields["cloud_round"] != 1:
            return
        if fields["edge_round"] != config.train.edge_rounds:
            return
        device = by_name[str(fields["device"])]
        fp = probe_report(device, sim.probes, sim.basis, sim.config, fingerprint=True).fingerprint
        if fp is not None:
            fingerprints[device.device_id] = fp

    result = sim.run(on_event)
    wall_s = time.perf_counter() - started
    clusters = result.rounds[1].control["clusters"]
    names = [device_name(i) for i in range(config.num_devices)]
    found = [int(clusters[n]) for n in names]
    ari = adjusted_rand_index(found, planted)
    record: dict[str, Any] = {
        "seed": seed,
        "planted": planted,
        "clusters": found,
        "ari": ari,
        "clusters_found": len(set(found)),
        "groups_planted": len(set(planted)),
        "examples_per_device": [int(sum(c)) for c in counts],
        "label_counts": counts,
        "purity": [max(c) / max(sum(c), 1) for c in counts],
        "test_accuracy_after_round": result.rounds[1].test_accuracy,
        "wall_s": wall_s,
    }
    if len(fingerprints) == len(names):
        record["diagnostics"] = diagnostics([fingerprints[n] for n in names], planted, config, found)
    return record


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every seed in turn; returns the result record."""
    threads = set_torch_threads(args.threads)
    seeds = [0] if args.quick and args.seeds is None else (args.seeds or [0, 1, 2])
    per_seed = []
    for seed in seeds:
        print(f"seed {seed}: simulating one cloud round ...", flush=True)
        got = run_seed(seed, args.quick)
        print(
            f"  ARI {got['ari']:.3f}, {got['clusters_found']} cluster(s) found, "
            f"{got['groups_planted']} planted, {got['wall_s']:.0f} s",
            flush=True,
        )
        per_seed.append(got)
    config = study_config(seeds[0], args.quick)
    aris = [s["ari"] for s in per_seed]
    oracle = [
        s["diagnostics"]["fixed_k"][str(s["groups_planted"])]["ari"]
        for s in per_seed
        if "diagnostics" in s and str(s["groups_planted"]) in s["diagnostics"]["fixed_k"]
    ]
    return {
        "benchmark": NAME,
        "description": "adjusted Rand index of the fingerprint clusters vs the planted (dominant-label) groups",
        "machine": machine_info(),
        "params": {
            "model": "all-MiniLM-L6-v2 (packaged)",
            "dataset": config.data.dataset,
            "devices": config.num_devices,
            "edges": config.topology.edges,
            "alpha": config.data.alpha,
            "quantity_sigma": config.data.quantity_sigma,
            "cloud_rounds": config.train.cloud_rounds,
            "edge_rounds": config.train.edge_rounds,
            "local_steps": config.train.local_steps,
            "batch_size": config.train.batch_size,
            "learning_rate": config.train.learning_rate,
            "max_length": config.train.max_length,
            "num_probes": config.control.num_probes,
            "basis_dim": config.control.basis_dim,
            "k_max": config.control.k_max,
            "min_eigengap": config.control.min_eigengap,
            "min_within_affinity": config.control.min_within_affinity,
            "seeds": seeds,
            "threads": threads,
            "quick": args.quick,
            "config": config.model_dump(mode="json"),
        },
        "summary": {
            "ari_mean": float(np.mean(aris)),
            "ari_min": float(np.min(aris)),
            "ari_max": float(np.max(aris)),
            "ari_fixed_k_planted_mean": float(np.mean(oracle)) if oracle else None,
            "clusters_found": [s["clusters_found"] for s in per_seed],
            "groups_planted": [s["groups_planted"] for s in per_seed],
        },
        "seeds": per_seed,
    }


def print_report(record: dict[str, Any]) -> None:
    """One row per seed."""
    rows = []
    for s in record["seeds"]:
        diag = s.get("diagnostics", {})
        fixed = diag.get("fixed_k", {}).get(str(s["groups_planted"]))
        gaps = {k: v["eigengap"] for k, v in diag.get("fixed_k", {}).items()}
        best = max(gaps.items(), key=lambda kv: kv[1]) if gaps else None
        rows.append(
            [
                str(s["seed"]),
                str(s["groups_planted"]),
                str(s["clusters_found"]),
                f"{s['ari']:.3f}",
                "-" if fixed is None else f"{fixed['ari']:.3f}",
                "-" if best is None else f"K={best[0]}: {best[1]:.2f}",
                "-"
                if not diag
                else f"{diag['no_gap_floor']['clusters']} / {diag['no_gap_floor']['ari']:.3f}",
                f"{s['wall_s']:.0f}",
            ]
        )
    p = record["params"]
    print_table(
        f"Fingerprint clusters vs planted groups ({p['devices']} devices, alpha {p['alpha']}, "
        f"{p['local_steps']} local steps, Q={p['num_probes']}, k={p['basis_dim']})",
        [
            "seed",
            "planted groups",
            "clusters found",
            "ARI",
            "ARI at K = planted",
            "largest gap K>=2",
            "min_eigengap 0: K / ARI",
            "wall s",
        ],
        rows,
    )


def main() -> None:
    """Parse arguments, run, print, write JSON."""
    parser = study_parser(__doc__, NAME, "smoke run: 1 seed, 2 steps, 32 probes")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (quick: 0)")
    run_study(parser, run, print_report)


if __name__ == "__main__":
    main()
