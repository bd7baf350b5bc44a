"""Rewrite the results blocks of ``bench/README.md`` from the JSON files in ``bench/results/``.

Each study has a marked block in the README::

    <!-- results:NAME -->
    ... generated, never edited by hand ...
    <!-- /results:NAME -->

and this script replaces the inside of every block whose ``results/NAME.json`` exists with
tables rendered from it. Blocks without a result file are left as they are.

Usage: ``python bench/render_readme.py [--readme bench/README.md] [--results bench/results]
[--check]`` (``--check`` exits with status 1 when the README is not up to date, writing nothing).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from elsa.runtime.report import render_study

HERE = Path(__file__).parent
MIB = 2**20

Renderer = Callable[[dict[str, Any]], list[str]]


def md_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A GitHub-flavoured markdown table (first column left-aligned, the rest right-aligned)."""
    lines = ["| " + " | ".join(columns) + " |"]
    lines.append("|" + "|".join([":---", *(["---:"] * (len(columns) - 1))]) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def machine_line(record: dict[str, Any]) -> str:
    """One line naming the hardware and software of a result."""
    m = record.get("machine")
    if not isinstance(m, dict):  # older result files (e.g. wire_frames) carry two flat keys
        return f"Machine: {record.get('machine', '?')}, torch {record.get('torch', '?')}."
    load = m.get("load_avg_1m_at_start")
    return (
        f"Machine: {m.get('cpu_model') or m.get('arch')}, {m['usable_cores']} usable cores "
        f"({m['cpu_count_logical']} logical), {m['memory_total_gib']} GiB RAM, {m['os']}; "
        f"Python {m['python']}, torch {m['torch']} with {m['torch_threads']} thread(s), "
        f"transformers {m['transformers']}, peft {m['peft']}"
        + (f"; 1-min load average {load} at start (shared machine)." if load is not None else ".")
    )


def render_split_overhead(r: dict[str, Any]) -> list[str]:
    p = r["params"]
    fastest = {name: min(values) for name, values in r["samples_ms_per_step"].items()}
    rows = []
    for name, row in r["results"].items():
        ratio = row.get("ratio_mono_over_split")
        min_ratio = fastest["monolithic"] / fastest[name]
        rows.append(
            [
                name,
                f"{row['median_ms']:.1f}",
                f"{row['q1_ms']:.1f} – {row['q3_ms']:.1f}",
                "–" if ratio is None else f"**{ratio:.3f}**",
                "–" if ratio is None else f"{row['paired_ratio_median']:.3f}",
                f"{row['median_cpu_ms']:.1f}" if "median_cpu_ms" in row else "–",
                f"{row['cpu_ratio_mono_over_split']:.3f}" if "cpu_ratio_mono_over_split" in row else "–",
                f"{fastest[name]:.1f}",
                "–" if ratio is None else f"{min_ratio:.3f}",
            ]
        )
    lines = [
        f"Batch {p['batch_size']} × {p['seq_len']} tokens, cut h{p['split']['head_blocks']}/t{p['split']['tail_blocks']}, "
        f"LoRA rank {p['lora']['rank']}; {p['warmup_steps']} warm-up steps per variant, then {p['repeats']} "
        f"interleaved repeats × {p['steps_per_repeat']} steps (medians over repeats). "
        f"Target: mono/split ≥ {r['target']['ratio_mono_over_split_min']}.",
        "",
        *md_table(
            [
                "variant",
                "median ms/step",
                "IQR ms",
                "mono/split (ratio of medians)",
                "paired ratio (median)",
                "CPU ms/step",
                "CPU mono/split",
                "fastest ms/step",
                "mono/split (fastest)",
            ],
            rows,
        ),
    ]
    phases: dict[str, dict[str, float]] = r.get("phases_median_ms") or {}
    if phases:
        variants = list(phases)
        names = list(next(iter(phases.values())))
        lines += [
            "",
            f"Split step by phase (median ms over {p['repeats'] * p.get('phase_steps_per_repeat', 1)} "
            "instrumented steps; *codec* = cast + msgpack encode + decode of both messages of the exchange):",
            "",
            *md_table(
                ["phase", *variants],
                [[n, *(f"{phases[v][n]:.1f}" for v in variants)] for n in names]
                + [["sum", *(f"{sum(phases[v].values()):.1f}" for v in variants)]],
            ),
        ]
    wire = r.get("wire_bytes_per_step")
    if wire:
        lines += [
            "",
            "Wire bytes per step (4 messages): " + ", ".join(f"{k} {v:,}" for k, v in wire.items()) + ".",
        ]
    return lines


def render_simulate_default(r: dict[str, Any]) -> list[str]:
    e, c = r["runs"]["elsa"], r["runs"]["centralized"]
    rows = [
        ["devices", str(e["devices"]), str(c["devices"])],
        ["optimizer steps (total)", str(e["optimizer_steps_total"]), str(c["optimizer_steps_total"])],
        ["examples seen (total)", str(e["examples_seen_total"]), str(c["examples_seen_total"])],
        ["wall time s", f"{e['wall_s_median']:.1f}", f"{c['wall_s_median']:.1f}"],
        *(
            [["CPU time s (user+sys)", f"{e['cpu_s_median']:.1f}", f"{c['cpu_s_median']:.1f}"]]
            if "cpu_s_median" in e
            else []
        ),
        [
            "wall time s per cloud round",
            *(" / ".join(f"{w:.0f}" for w in x["attempts"][-1]["round_wall_s"][1:]) for x in (e, c)),
        ],
        ["peak RSS MiB", f"{e['peak_rss_bytes_max'] / MIB:.0f}", f"{c['peak_rss_bytes_max'] / MIB:.0f}"],
        ["**final accuracy**", f"**{e['final_accuracy']:.3f}**", f"**{c['final_accuracy']:.3f}**"],
    ]
    rows += [
        [f"accuracy after cloud round {i}", f"{a:.3f}", f"{b:.3f}"]
        for i, (a, b) in enumerate(zip(e["accuracy_per_round"], c["accuracy_per_round"], strict=True))
    ]
    p = r["params"]
    return [
        f"Config `{p['config']}`{' with the --quick overrides' if p['quick'] else ''}; {p['threads']} torch "
        f"thread(s); {p['repeats']} run(s) of each. Wall time = CLI process start to exit (model load "
        "included); CPU time = the process's user + sys time; peak RSS = the process's kernel high-water mark (`wait4`). Centralized = "
        + "; ".join(f"{k}: {v}" for k, v in r["centralized_changes"].items())
        + ".",
        "",
        *md_table(["", "ELSA (default config)", "centralized LoRA"], rows),
        "",
        f"Same steps: {r['same_steps']}",
    ]


def render_device_memory(r: dict[str, Any]) -> list[str]:
    by_n: dict[int, list[dict[str, Any]]] = {}
    for s in r["samples"]:
        by_n.setdefault(int(s["devices"]), []).append(s)

    def mib_list(samples: list[dict[str, Any]], key: str) -> str:
        values = [s[key] for s in samples if s[key] is not None]
        return " / ".join(f"{v / MIB:.1f}" for v in values) if values else "–"

    sample_rows = [
        [str(n), mib_list(ss, "rss_bytes"), mib_list(ss, "rss_bytes_trimmed"), mib_list(ss, "uss_bytes")]
        for n, ss in sorted(by_n.items())
    ]
    refs = r["references"]
    fit_rows = [
        [
            f"slope of {name} (R² {fit['r2']:.3f})",
            f"{fit['slope_bytes_per_device'] / MIB:.2f}",
            f"{fit['slope_over_adapter']:.2f}",
            f"{fit['slope_over_adapter_grad_adamw']:.2f}",
            f"{fit['slope_over_model_copy']:.3f}",
        ]
        for name, fit in r["fits"].items()
    ]
    ref_rows = [
        [
            name,
            f"{value / MIB:.2f}",
            f"{value / refs['adapter_bytes']:.2f}",
            f"{value / refs['adapter_grad_adamw_bytes']:.2f}",
            f"{value / refs['model_copy_bytes']:.3f}",
        ]
        for name, value in refs.items()
    ]
    p, m = r["params"], r["model"]
    return [
        f"1 edge, N devices, IID, {p['examples_per_device']} training examples per device, "
        f"{p['local_steps_before_measure']} step per device before measuring, {p['repeats']} process(es) per N "
        f"(values separated by /). Adapter = {m['device_adapter_numel']:,} device + "
        f"{m['session_adapter_numel']:,} edge-session parameters; the task model has "
        f"{m['params_total']:,} parameters."
        + (f" Measured processes ran with `{' '.join(p['child_env'])}`." if p.get("child_env") else ""),
        "",
        *md_table(["devices N", "RSS MiB", "RSS after malloc_trim MiB", "USS MiB"], sample_rows),
        "",
        *md_table(
            ["per extra device", "MiB", "÷ adapter", "÷ adapter+grad+AdamW", "÷ model copy"],
            fit_rows + ref_rows,
        ),
    ]


def render_wire_frames(r: dict[str, Any]) -> list[str]:
    rows = [
        [
            name,
            f"{row['encode_ms']:.2f}",
            f"{row['decode_ms']:.2f}",
            f"{row['total_ms']:.2f}",
            f"{row['speedup_vs_msgpack_bin']:.1f}×",
        ]
        for name, row in r["results"].items()
    ]
    return [
        f"A `ForwardRequest` with {r['tensor_bytes'] / 1e6:.1f} MB of fp32 activations "
        f"(msgpack document {r['msgpack_bytes']:,} B, frame stream {r['frames_bytes']:,} B); "
        f"median of {r['repeats']} repeats.",
        "",
        *md_table(["path", "encode ms", "decode ms", "total ms", "speed-up vs msgpack bin"], rows),
    ]


def render_http_overhead(r: dict[str, Any]) -> list[str]:
    rows = [
        [name, f"{row['median_ms']:.1f}", f"{row['throughput_ratio_vs_monolithic']:.3f}"]
        for name, row in r["results"].items()
    ]
    p = r["params"]
    byte_rows = [
        [dtype, f"{kinds.get('activations', 0) / 1e6:.2f}", f"{kinds.get('gradients', 0) / 1e6:.2f}"]
        for dtype, kinds in r["bytes_per_step"].items()
    ]
    return [
        f"MiniLM, batch {p['batch']} x {p['seq']}, {p['threads']} torch thread(s) in the device and the edge "
        f"process, {p['repeats']} interleaved repeats x {p['steps']} steps; median ms per step.",
        "",
        *md_table(["variant", "ms/step", "throughput ÷ monolithic"], rows),
        "",
        *md_table(
            ["wire dtype", "MB/step activations (fwd req+resp)", "MB/step gradients (bwd req+resp)"],
            byte_rows,
        ),
    ]


def _never(value: int | None) -> str:
    return "never" if value is None else str(value)


def render_cluster_quality(r: dict[str, Any]) -> list[str]:
    p = r["params"]
    rows = []
    for s in r["seeds"]:
        diag = s.get("diagnostics") or {}
        fixed = diag.get("fixed_k", {})
        at_planted = fixed.get(str(s["groups_planted"]))
        gaps = {int(k): v["eigengap"] for k, v in fixed.items()}
        best = max(gaps.items(), key=lambda kv: kv[1]) if gaps else None
        no_floor = diag.get("no_gap_floor")
        rows.append(
            [
                str(s["seed"]),
                str(s["groups_planted"]),
                str(s["clusters_found"]),
                f"**{s['ari']:.3f}**",
                "–" if at_planted is None else f"{at_planted['ari']:.3f}",
                "–" if at_planted is None else f"{at_planted['eigengap']:.2f}",
                "–" if best is None else f"{best[1]:.2f} (K={best[0]})",
                f"{diag['mean_within_affinity_planted']:.2f}" if diag else "–",
                "–" if no_floor is None else f"{no_floor['clusters']} / {no_floor['ari']:.3f}",
                f"{min(s['purity']):.2f} – {max(s['purity']):.2f}",
            ]
        )
    summary = r["summary"]
    oracle = summary.get("ari_fixed_k_planted_mean")
    return [
        f"{p['dataset']}, {p['devices']} devices on {p['edges']} edges, Dirichlet α = {p['alpha']}, "
        f"quantity σ = {p['quantity_sigma']}; {p['cloud_rounds']} cloud round of {p['edge_rounds']} edge "
        f"round × {p['local_steps']} AdamW step(s) (lr {p['learning_rate']}, batch {p['batch_size']}, "
        f"{p['max_length']} tokens) from the shared initial state; Q = {p['num_probes']} probes, "
        f"basis k = {p['basis_dim']}, K_max = {p['k_max']}, K rule: eigengap ≥ {p['min_eigengap']} and "
        f"mean within-cluster affinity ≥ {p['min_within_affinity']}. Planted group = the device's "
        "dominant label. *ARI* = the run's clusters (control snapshot after round 1) vs the planted "
        "groups; the other columns come from the same fingerprints, recomputed after each device's "
        "local steps: the grouping at K fixed to the planted count, the eigengap λ_{K+1} − λ_K the "
        "rule thresholds, the mean affinity within the planted groups, and the rule with no eigengap "
        "floor (K / ARI).",
        "",
        *md_table(
            [
                "seed",
                "planted groups",
                "clusters found",
                "ARI",
                "ARI at K = planted",
                "eigengap at K = planted",
                "largest eigengap K ≥ 2",
                "within-affinity of planted groups",
                "min_eigengap 0: K / ARI",
                "device purity",
            ],
            rows,
        ),
        "",
        f"Mean ARI {summary['ari_mean']:.3f} (min {summary['ari_min']:.3f}, max {summary['ari_max']:.3f})"
        + (f"; at K = planted count: {oracle:.3f}." if oracle is not None else "."),
    ]


def render_trust_quarantine(r: dict[str, Any]) -> list[str]:
    p = r["params"]
    settings = r["settings"]
    names = list(settings)
    first = settings[names[0]]["malicious"]["summary"]["malicious"]
    rows = [
        [
            f"{d} ({info['kind']}): first quarantined in round",
            *(
                _never(settings[n]["malicious"]["summary"]["malicious"][d]["first_quarantined_round"])
                for n in names
            ),
        ]
        for d, info in first.items()
    ]
    rows += [
        [
            f"{d}: trust after the last round",
            *(f"{settings[n]['malicious']['summary']['malicious'][d]['final_trust']:.2f}" for n in names),
        ]
        for d in first
    ]
    rows += [
        [
            "honest devices ever quarantined (false-quarantine rate)",
            *(
                f"{len(settings[n]['malicious']['summary']['honest_ever_quarantined'])} "
                f"({settings[n]['malicious']['summary']['false_quarantine_rate']:.2f})"
                for n in names
            ),
        ],
        [
            "lowest honest trust after the last round",
            *(f"{settings[n]['malicious']['summary']['min_honest_final_trust']:.2f}" for n in names),
        ],
        [
            "**final accuracy**, 25 % malicious",
            *(f"**{settings[n]['malicious']['summary']['final_accuracy']:.3f}**" for n in names),
        ],
    ]
    if all("clean" in settings[n] for n in names):
        rows.append(
            [
                "final accuracy, no malicious devices",
                *(f"{settings[n]['clean']['accuracy_per_round'][-1]:.3f}" for n in names),
            ]
        )
        rows.append(
            [
                "devices ever quarantined, no malicious devices",
                *(
                    str(len({d for q in settings[n]["clean"]["quarantined_per_round"] for d in q}))
                    for n in names
                ),
            ]
        )
    rows.append(
        [
            "accuracy per round, 25 % malicious",
            *(" / ".join(f"{a:.2f}" for a in settings[n]["malicious"]["accuracy_per_round"]) for n in names),
        ]
    )
    alpha = {
        n: "IID" if settings[n]["alpha"] is None else f"Dirichlet α = {settings[n]['alpha']}" for n in names
    }
    return [
        f"{p['dataset']}, {p['devices']} devices on {p['edges']} edges, seed {p['seed']}; malicious "
        f"({p['malicious_fraction']:.0%}): label flip {', '.join(p['label_flip'])}; random noise "
        f"{', '.join(p['noise'])} (update replaced by noise of {p['noise_scale']} × its RMS). {p['cloud_rounds']} cloud rounds of "
        f"{p['edge_rounds']} edge round(s) × {p['local_steps']} local step(s) (lr {p.get('learning_rate', '?')}, batch {p['batch_size']}, "
        f"{p['max_length']} tokens), quantity σ = {p['quantity_sigma']}; Q = {p['num_probes']} probes; "
        f"trust EMA β = {p['trust_beta']}, τ_min = {p['tau_min']}, temperature {p['trust_temperature']}. "
        "Trust starts at 1, so with β = 0.7 the earliest possible quarantine is round 2 "
        "(evidence ≈ 0 twice).",
        "",
        *md_table(["", *(alpha[n] for n in names)], rows),
    ]


def render_assignment_latency(r: dict[str, Any]) -> list[str]:
    p = r["params"]
    seeds = p["seeds"]
    rows = []
    for rule, s in r["summary"].items():
        runs = [r["runs"][rule][str(seed)] for seed in seeds]
        rows.append(
            [
                rule,
                f"{s['comm_s_mean']:.2f}",
                " / ".join(" ".join(f"{c:.2f}" for c in x["comm_s_per_round"]) for x in runs),
                "1.00" if rule == "latency" else f"**{s['ratio_over_latency']:.2f}**",
                "–"
                if rule == "latency"
                else " / ".join(f"{v:.2f}" for v in s["ratio_over_latency_per_seed"]),
                " / ".join(
                    " ".join(f"{c:.2f}" for c in x["planner_bottleneck_s_per_edge_round"]) for x in runs
                ),
                " / ".join(
                    " ".join(
                        f"{c / (p['edge_rounds'] * e):.2f}"
                        for c, e in zip(
                            x["comm_s_per_round"], x["planner_bottleneck_s_per_edge_round"], strict=True
                        )
                    )
                    for x in runs
                ),
                f"{s['final_accuracy_mean']:.3f}",
            ]
        )
    return [
        f"{p['dataset']} (first {p['max_train_examples']} training examples, Dirichlet α = {p['alpha']}), "
        f"{p['devices']} devices, {p['edges']} edges of capacity {p['edge_capacity']}; links: RTT "
        f"{p['link_rtt_ms']} ms, {p['link_mbps']} Mbit/s, each scaled by a seeded log-normal factor of σ = "
        f"{p['link_spread']}; {p['cloud_rounds']} cloud rounds × {p['edge_rounds']} edge rounds × "
        f"{p['local_steps']} steps, batch {p['batch_size']} × {p['max_length']} tokens, {p['transport_dtype']} "
        f"cuts; seeds {', '.join(str(s) for s in seeds)} (values per seed separated by /). comm s = emulated "
        "device-edge communication time of the slowest edge in the round (RTT per exchange + bytes ÷ "
        "throughput, training and probe passes), computed from message sizes, not timed. Planner "
        "estimate = the control plane's cost model of the same assignment (slowest edge, s per edge round).",
        "",
        *md_table(
            [
                "rule",
                "mean comm s / round",
                "comm s per round",
                "÷ latency (means)",
                "÷ latency per seed",
                "planner estimate s / edge round",
                "comm s ÷ (edge rounds × planner estimate)",
                "final accuracy (mean)",
            ],
            rows,
        ),
    ]


def render_sketch_compression(r: dict[str, Any]) -> list[str]:
    p = r["params"]
    rows = []
    for dataset, by_variant in r["summary"].items():
        for variant, s in by_variant.items():
            runs = r["runs"][dataset][variant]
            curve = " / ".join(
                " ".join(f"{a:.2f}" for a in runs[str(seed)]["accuracy_per_round"][1:]) for seed in p["seeds"]
            )
            ratio = s["byte_ratio_dense_over_variant"]
            rows.append(
                [
                    f"{dataset} / {variant}",
                    f"{s['adapter_bytes_per_round'] / 1e6:.2f}",
                    f"**{ratio:.1f}**" if variant == "sketch" else f"{ratio:.1f}",
                    curve,
                    f"{s['final_accuracy']:.3f}",
                    f"{s['accuracy_points_vs_dense']:+.1f}",
                ]
            )
    sk = p["sketch"]
    return [
        f"{p['devices']} devices, {p['edges']} edges, Dirichlet α = {p['alpha']}, first "
        f"{p['max_train_examples']} training examples; "
        + "; ".join(
            f"{d}: {c} cloud rounds × {e} edge rounds × {s} steps" for d, (c, e, s) in p["schedule"].items()
        )
        + f", batch {p['batch_size']} × {p['max_length']} tokens, lr "
        f"{p['learning_rate']}; SS-OP off; seeds {', '.join(str(x) for x in p['seeds'])}. Default sketch: "
        f"{sk['rows']} rows, {sk['compression']:g} elements per cell, {sk['dtype']} tables, {sk['estimator']} "
        f"decode, error feedback {'on' if sk['error_feedback'] else 'off'}. Adapter bytes = every adapter "
        "message of a cloud round, all tiers (mean over rounds 2+).",
        "",
        *md_table(
            [
                "dataset / variant",
                "adapter MB / round",
                "dense ÷ variant",
                "accuracy per round",
                "final accuracy",
                "points vs dense",
            ],
            rows,
        ),
        "",
        machine_line(r),
    ]


def render_privacy_attacks(r: dict[str, Any]) -> list[str]:
    p = r["params"]
    columns = ["κ"]
    cells: dict[float, list[str]] = {k: [f"{k:g}"] for k in p["kappas"]}
    for cut in r["results"]:
        by = {(row["kappa"], row["attack"]): row for row in cut["rows"]}
        for attack in p["attacks"]:
            columns.append(f"{attack} h{cut['head_blocks']} r{cut['rank']}")
            for k in p["kappas"]:
                row = by[k, attack]
                cells[k].append(f"{row['top1']:.3f} / {row['top5']:.3f}")
    return [
        f"Attacker trained on {p['public_texts']} {p['public_text']}; evaluated on {p['private_texts']} "
        f"{p['private_dataset']} texts (top-1 / top-5 token recovery, special tokens excluded); what "
        f"leaves a device: SS-OP at cut h with subspace rank r, then the {p['wire_dtype']} wire cast. nn = "
        "nearest word embedding; lsq / mlp = ridge / MLP inversion trained on perturbed public activations "
        "(the attacker adapts and knows U); lsq_u / mlp_u read only the kept coordinates xU.",
        "",
        *md_table(columns, [cells[k] for k in p["kappas"]]),
        "",
        machine_line(r),
    ]


def render_privacy_utility(r: dict[str, Any]) -> list[str]:
    p = r["params"]
    attacks = sorted({a for s in r["summary"].values() for a in s["recovery_top1"]})
    rows = []
    for kappa, s in r["summary"].items():
        curve = " / ".join(
            " ".join(f"{a:.2f}" for a in run["accuracy_per_round"][1:]) for run in r["runs"][kappa].values()
        )
        rec = [f"{s['recovery_top1'][a]:.3f}" if a in s["recovery_top1"] else "–" for a in attacks]
        rows.append(
            [
                f"{float(kappa):g}",
                curve,
                f"{s['final_accuracy']:.3f}",
                f"{s['accuracy_points_vs_first']:+.1f}",
                *rec,
            ]
        )
    return [
        f"{p['dataset']}, {p['devices']} devices, the sketch study's run with SS-OP at cut h = "
        f"{p['head_blocks']}, rank r = {p['rank']}; {p['cloud_rounds']} cloud rounds × {p['edge_rounds']} edge "
        f"rounds × {p['local_steps']} steps; seeds {', '.join(str(x) for x in p['seeds'])}. Recovery "
        "(top-1) from the attack study at the same cut and rank.",
        "",
        *md_table(
            [
                "κ",
                "accuracy per round",
                "final accuracy",
                "points vs κ = 0",
                *[f"{a} top-1" for a in attacks],
            ],
            rows,
        ),
        "",
        machine_line(r),
    ]


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _report_columns(r: dict[str, Any], title: str) -> list[str]:
    """The columns of the table ``title`` in the record's own ``report`` (as its script wrote them)."""
    columns: list[str] = next(t["columns"] for t in r["report"]["tables"] if t["title"] == title)
    return columns


def render_scale(r: dict[str, Any]) -> list[str]:
    d, s = r["devices"], r["sessions"]
    dp, sp = d["params"], s["params"]
    ref = d["reference"]
    device_rows = [
        [
            "1 (reference)",
            str(ref["edges"]),
            str(len(ref["round_s"])),
            f"{ref['rss_bytes'] / MIB:.1f}",
            "–",
            " / ".join(f"{x:.1f}" for x in ref["round_s"]),
            f"{statistics.median(ref['round_s']):.2f}",
            "–",
        ]
    ]
    for row, sample in zip(d["rows"], d["samples"], strict=True):
        device_rows.append(
            [
                str(row["devices"]),
                str(row["edges"]),
                str(row["rounds_timed"]),
                f"{row['rss_mib']:.1f}",
                f"**{_num(row['mib_per_device'], '.2f')}**",
                " / ".join(f"{x:.1f}" for x in sample["round_s"]),
                f"{row['s_per_round']:.2f}",
                f"**{row['s_per_device_step']:.3f}**",
            ]
        )
    fits = d["fits"]
    session_rows = [
        [
            str(lv["clients"]),
            str(lv["steps"]),
            _num(lv["step_ms"]["p50"], ".0f"),
            _num(lv["step_ms"]["p99"], ".0f"),
            _num(lv["http_ms"]["p50"], ".0f"),
            _num(lv["http_ms"]["p99"], ".0f"),
            f"{lv['steps_per_s']:.2f}",
            f"**{lv['errors']}**",
            f"{lv['edge_rss_bytes'] / MIB:.0f}",
            f"{100 * lv['edge_cpu_s'] / lv['wall_s']:.0f}" if lv["wall_s"] > 0 else "–",
        ]
        for lv in s["levels"]
    ]
    requests = sum(lv["requests"] for lv in s["levels"])
    truncated = sum(lv["truncated_clients"] for lv in s["levels"])
    figures = (r.get("report") or {}).get("figures", [])
    return [
        f"**Devices in one process.** {dp['devices_per_edge']} devices per edge (1 edge below 10 devices), "
        f"IID, {dp['examples_per_device']} training examples per device; per cloud round "
        f"{dp['edge_rounds']} edge round × {dp['local_steps']} local step of batch {dp['batch_size']} × "
        f"{dp['max_length']} tokens per device, control plane on ({dp['num_probes']} probe sentences per "
        "device report), no evaluation. One process per N; RSS read after `gc.collect()` right after the "
        "last device's step of cloud round 1; *MiB per added device* = (RSS(N) − RSS(1)) ÷ (N − 1). Round "
        f"time = wall time of `Simulation.run_cloud_round` (medians over the rounds timed; at most "
        f"{dp['rounds']} per N within a {dp['budget_s']:.0f} s budget for this part); *s per device-step* "
        "= s per round ÷ (N × steps per device): training, probe report, sketching and aggregation.",
        "",
        *md_table(
            [
                "devices N",
                "edges",
                "rounds timed",
                "RSS MiB",
                "MiB per added device",
                "s per round (each)",
                "s per round (median)",
                "s per device-step",
            ],
            device_rows,
        ),
        "",
        f"Least-squares fits over every N: RSS {fits['rss']['slope_bytes_per_device'] / MIB:.2f} MiB per device "
        f"(R² {fits['rss']['r2']:.3f}; after malloc_trim {fits['rss_trimmed']['slope_bytes_per_device'] / MIB:.2f}); "
        f"round time {fits['round_s']['s_per_added_device']:.3f} s per added device + "
        f"{fits['round_s']['fixed_s']:.2f} s (R² {fits['round_s']['r2']:.3f}).",
        "",
        f"**Concurrent split sessions on one edge.** A real cloud and one edge process on loopback "
        f"({r['machine']['torch_threads']} torch thread(s) in the edge and in this process); C client threads "
        f"in this process each open a split session and run {sp['warmup_steps']} warm-up + "
        f"{sp['steps_per_client']} timed steps of `DeviceStepper.step` through `HttpCutLink` (batch "
        f"{sp['batch_size']} × {sp['max_length']}, cut h{sp['split'][0]}/t{sp['split'][1]}, "
        f"{sp['transport_dtype']} cut tensors). *Step* = the whole split step as the device sees it (its own "
        "head/tail compute included); *HTTP* = its forward + backward exchanges. Errors = non-2xx answers "
        f"+ requests without an answer; {requests:,} requests in all, {truncated} client(s) stopped by the "
        f"{sp['max_level_s']:.0f} s cap per level. Steps/s = timed steps ÷ the time from all clients' start "
        "to the last one's end; edge CPU % = the edge process's CPU time over that time.",
        "",
        *md_table(_report_columns(r, "Concurrent split sessions on one edge"), session_rows),
        *([""] + [f"![{f['title']}](results/{f['file']})" for f in figures] if figures else []),
    ]


def render_decoder_llm(r: dict[str, Any]) -> list[str]:
    p, s = r["params"], r["summary"]
    before, after = s["held_out_before"], s["held_out_after"]
    loss_rows = [
        ["held-out loss, all answers", f"{before['loss']:.3f}", f"**{after['loss']:.3f}**"],
        [
            "held-out answer-token accuracy",
            f"{before['token_accuracy']:.3f}",
            f"{after['token_accuracy']:.3f}",
        ],
    ]
    for kind, k in before["per_kind"].items():
        a = after["per_kind"][kind]
        loss_rows.append([f"held-out loss, {kind} answers", f"{k['loss']:.3f}", f"{a['loss']:.3f}"])
        loss_rows.append(
            [
                f"held-out token accuracy, {kind} answers",
                f"{k['token_accuracy']:.3f}",
                f"{a['token_accuracy']:.3f}",
            ]
        )
    loss_rows.append(
        [
            "training loss, mean of first / last quarter of steps",
            f"{s['loss_first_quarter_mean']:.3f}",
            f"{s['loss_last_quarter_mean']:.3f}",
        ]
    )
    step = s["step_ms_median"]
    phases = s["phases_median_ms"]
    time_rows = [[name, f"{ms:.1f}", f"{100 * ms / step:.1f}"] for name, ms in phases.items()]
    time_rows += [
        [f"*{name}*", f"{ms:.1f}", f"{100 * ms / step:.1f}"] for name, ms in s["segments_median_ms"].items()
    ]
    time_rows.append(["**step** (median)", f"**{step:.1f}**", "100.0"])
    wire = sum(r["wire_bytes_per_step"].values())
    figures = r.get("report", {}).get("figures", [])
    return [
        f"{p['model']}, cut h{p['split']['head_blocks']}/t{p['split']['tail_blocks']} of {p['num_blocks']} blocks, "
        f"LoRA rank {p['lora']['rank']}, {p['wire_dtype']} cut tensors through the wire codec; {p['steps']} steps "
        f"of batch {p['batch_size']} × {p['seq_len']} tokens (training examples: "
        + ", ".join(f"{n} {k}" for k, n in p["train_examples_by_kind"].items())
        + f"), AdamW lr {p['learning_rate']}. Loss = causal-LM cross-entropy on the answer tokens + EOS; "
        f"held-out = {before['examples']} examples from unseen articles ({before['answer_tokens']} answer tokens).",
        "",
        *md_table(["measure", "before training", "after training"], loss_rows),
        "",
        f"Split step by phase (median ms over steps {p['warmup_steps_excluded_from_timing'] + 1}–{p['steps']}; "
        "*codec* = cast + msgpack encode + decode of the exchange's two messages; the phase medians need "
        "not add up to the step median):",
        "",
        *md_table(["phase", "median ms", "% of step"], time_rows),
        "",
        f"Throughput: {s['token_positions_per_s']:.0f} token positions/s, {s['real_tokens_per_s']:.0f} real "
        f"(non-padding) tokens/s ({100 * s['real_token_fraction']:.0f} % of positions); "
        f"{wire / 1e6:.2f} MB on the wire per step; training {s['train_wall_s']:.0f} s in all.",
        "",
        "Training loss per step: " + " ".join(f"{x['loss']:.2f}" for x in r["steps"]) + ".",
        *([""] + [f"![{f['title']}](results/{f['file']})" for f in figures] if figures else []),
    ]


def render_gpu(r: dict[str, Any]) -> list[str]:
    d = r["device"]
    lines = []
    if not r.get("gpu_measurement"):
        lines += [f"**{r['measurement']}** — the numbers below say nothing about GPU throughput.", ""]
    else:
        lines += [
            f"GPU: {d['name']} ({d['memory_gib']} GiB, compute capability {d['capability']}, CUDA {d['cuda']}).",
            "",
        ]
    models = r["models"]
    rows = []
    for name, m in models.items():
        res = m["results"]
        target = m.get("target")
        met = "–" if m.get("meets_target") is None else ("yes" if m["meets_target"] else "**no**")
        rows.append(
            [
                name,
                f"{m['batch_size']} × {m['seq_len']}",
                f"{res['monolithic']['median_ms']:.1f}",
                f"{res['split_http']['median_ms']:.1f}",
                f"**{m['throughput_ratio_split_over_monolithic']:.3f}**",
                "–" if target is None else f"≥ {target:.2f}",
                met,
            ]
        )
    p = r["params"]
    lines += [
        f"Cut h1/t1, LoRA rank {p['lora_rank']}, {p['precision']}, {p['wire_dtype']} cut tensors; "
        f"{p['warmup_steps']} warm-up steps per variant, then {p['repeats']} interleaved repeats × "
        f"{p['steps_per_repeat']} steps (medians).",
        "",
        *md_table(
            [
                "model",
                "batch",
                "monolithic ms/step",
                "split over HTTP ms/step",
                "split ÷ mono throughput",
                "target",
                "met",
            ],
            rows,
        ),
        "",
        "Split step breakdown (median ms over the instrumented steps; transfers summed over both sides of both "
        "exchanges; *http* = round trips minus the edge's own work):",
        "",
    ]
    first = next(iter(models.values()))
    parts = [k for k in first["phases_median_ms"] if "." not in k]
    lines += md_table(
        ["part", *models], [[k, *(f"{m['phases_median_ms'][k]:.2f}" for m in models.values())] for k in parts]
    )
    return lines


def render_gpu_missing() -> list[str]:
    return [
        "_Generated by `bench/render_readme.py`: `bench/results/gpu.json` does not exist._",
        "",
        "Not measured on this machine (no CUDA device). Run `bench/gpu.py` on a GPU machine and re-render.",
    ]


def render_study_report(r: dict[str, Any]) -> list[str]:
    """A comparison study's own ``report`` (tables and figures, see ``elsa report``), headings
    demoted below the README section's; the PNGs are the ones the study wrote to results/."""
    with tempfile.TemporaryDirectory() as tmp:
        markdown = render_study(r["report"], Path(tmp), image_prefix="results/")
    lines = markdown.splitlines()[1:]  # the section has its own title
    while lines and not lines[0].strip():
        lines.pop(0)
    return [f"#{line}" if line.startswith("###") else line for line in lines]


RENDERERS: dict[str, Renderer] = {
    "http_overhead": render_http_overhead,
    "split_overhead": render_split_overhead,
    "simulate_default": render_simulate_default,
    "device_memory": render_device_memory,
    "device_memory_mmap_threshold": render_device_memory,
    "wire_frames": render_wire_frames,
    "cluster_quality": render_cluster_quality,
    "trust_quarantine": render_trust_quarantine,
    "assignment_latency": render_assignment_latency,
    "sketch_compression": render_sketch_compression,
    "privacy_attacks": render_privacy_attacks,
    "privacy_utility": render_privacy_utility,
    "scale": render_scale,
    "load": render_study_report,
    "decoder_llm": render_decoder_llm,
    "gpu": render_gpu,
    "accuracy": render_study_report,
    "accuracy_rt_long": render_study_report,
    "ablations": render_study_report,
    "communication": render_study_report,
    "robustness": render_study_report,
}

#: what a block shows when its result file does not exist (blocks not listed are left as they are)
MISSING_RENDERERS: dict[str, Callable[[], list[str]]] = {"gpu": render_gpu_missing}


def render_block(name: str, record: dict[str, Any]) -> str:
    """The generated inside of one results block (leading and trailing newline included)."""
    lines = [
        f"_Generated by `bench/render_readme.py` from `bench/results/{name}.json`; do not edit by hand._",
        "",
        machine_line(record),
        "",
        *RENDERERS[name](record),
    ]
    return "\n" + "\n".join(lines) + "\n"


def render_readme(text: str, results_dir: Path) -> tuple[str, list[str]]:
    """``text`` with every block that has a result file re-rendered; returns (text, names rendered)."""
    rendered: list[str] = []
    for name in RENDERERS:
        path = results_dir / f"{name}.json"
        pattern = re.compile(rf"(<!-- results:{name} -->)(.*?)(<!-- /results:{name} -->)", re.DOTALL)
        match = pattern.search(text)
        if match is None:
            continue
        if path.is_file():
            block = render_block(name, json.loads(path.read_text(encoding="utf-8")))
        elif name in MISSING_RENDERERS:
            block = "\n" + "\n".join(MISSING_RENDERERS[name]()) + "\n"
        else:
            continue
        text = text[: match.start(2)] + block + text[match.end(2) :]
        rendered.append(name)
    return text, rendered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=HERE / "README.md")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--check", action="store_true", help="exit 1 if the README is out of date")
    args = parser.parse_args()
    old = args.readme.read_text(encoding="utf-8")
    new, rendered = render_readme(old, args.results)
    missing = [n for n in RENDERERS if n not in rendered]
    if args.check:
        if new != old:
            print(f"{args.readme} is out of date; run python bench/render_readme.py")
            sys.exit(1)
        print(f"{args.readme} is up to date")
        return
    args.readme.write_text(new, encoding="utf-8")
    print(f"rendered {', '.join(rendered) or 'nothing'} into {args.readme}")
    if missing:
        print(f"no result file or no marked block for: {', '.join(missing)}")


if __name__ == "__main__":
    main()
