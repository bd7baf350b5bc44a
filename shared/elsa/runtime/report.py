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
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
