"""Writing a run's results: metrics JSON and a PNG of accuracy/loss per round."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def write_metrics(metrics: dict[str, Any], out_dir: Path) -> Path:
    """Write ``metrics.json`` into ``out_dir`` (created if needed); returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True), encoding="utf-8")
    return path


def plot_rounds(metrics: dict[str, Any], out_path: Path) -> Path:
    """PNG with test accuracy (if any) and train/test loss per cloud round."""
    rounds = metrics["rounds"]
    x = [r["cloud_round"] for r in rounds]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    acc = [r.get("test_accuracy") for r in rounds]
    if any(a is not None for a in acc):
        axes[0].plot(x, [a if a is not None else float("nan") for a in acc], marker="o")
        axes[0].set_ylabel("test accuracy")
    axes[0].set_xlabel("cloud round")
    axes[0].set_title(f"{metrics.get('run_id', 'run')}: accuracy")
    axes[0].grid(alpha=0.3)
    axes[1].plot(x, [r["test_loss"] for r in rounds], marker="o", label="test loss")
    train = [(r["cloud_round"], r["train_loss"]) for r in rounds if r.get("train_loss") is not None]
    if train:
        axes[1].plot([t[0] for t in train], [t[1] for t in train], marker="s", label="train loss")
    axes[1].set_xlabel("cloud round")
    axes[1].set_title("loss")
    axes[1].legend()
    axes[1].grid(alpha=0.3)
    for ax in axes:
        ax.set_xticks(x)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def plot_service_rounds(rounds: list[dict[str, Any]], out_path: Path, title: str) -> Path:
    """PNG for a service run: device-mean accuracy/loss per round and bytes per kind per round."""
    x = [r["round"] for r in rounds]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, style in (("eval_accuracy", "o-"), ("start_accuracy", "s--")):
        ys = [r["metrics"].get(name, float("nan")) for r in rounds]
        axes[0].plot(x, ys, style, label=name)
    axes[0].set_title(f"{title}: accuracy (device mean)")
    axes[0].set_xlabel("cloud round")
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    for name in ("train_loss", "eval_loss"):
        axes[1].plot(x, [r["metrics"].get(name, float("nan")) for r in rounds], "o-", label=name)
    axes[1].set_title("loss")
    axes[1].set_xlabel("cloud round")
    axes[1].legend()
    axes[1].grid(alpha=0.3)
    kinds = sorted({k for r in rounds for k in r["bytes"]})
    bottom = [0.0] * len(rounds)
    for kind in kinds:
        ys = [r["bytes"].get(kind, 0) / 1e6 for r in rounds]
        axes[2].bar(x, ys, bottom=bottom, label=kind)
        bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
    axes[2].set_title("MB per round by kind")
    for ax in axes:
        ax.set_xticks(x)
    axes[2].set_xlabel("cloud round")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def service_report_markdown(summary: dict[str, Any]) -> str:
    """Markdown report of a service run (rounds table, bytes, memory, adapter path)."""
    lines = [
        f"# ELSA run {summary['run_id']}",
        "",
        f"- state: **{summary['state']}**, wall time {summary['wall_s']:.1f} s",
        f"- topology: {summary['edges']} edges, {summary['devices']} devices; model {summary['model']}, "
        f"data {summary['dataset']}",
        f"- final adapter (PEFT): `{summary.get('adapter_dir')}`",
        "",
        "| round | train loss | start acc (global) | end acc (edge model) | MB moved |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in summary["rounds"]:
        m = r["metrics"]

        def fmt(name: str, m: dict[str, float] = m) -> str:
            return f"{m[name]:.3f}" if name in m else "-"

        moved = sum(r["bytes"].values()) / 1e6
        lines.append(
            f"| {r['round']} | {fmt('train_loss')} | {fmt('start_accuracy')} | {fmt('eval_accuracy')} | {moved:.1f} |"
        )
    lines += [
        "",
        "## Peak memory per process kind",
        "",
        "| kind | count | max MB | mean MB |",
        "|---|---:|---:|---:|",
    ]
    for kind, v in summary.get("peak_memory", {}).items():
        lines.append(f"| {kind} | {int(v['count'])} | {v['max_mb']:.0f} | {v['mean_mb']:.0f} |")
    return "\n".join(lines) + "\n"
