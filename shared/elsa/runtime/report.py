"""Writing and rendering results: a run's metrics JSON, PNG figures and markdown reports.

Three inputs are rendered (:func:`render_path` picks by content):

* a simulated run's ``metrics.json`` (``elsa simulate --out DIR``, :meth:`RunResult.metrics_dict`):
  :func:`render_run`, a per-round table and two PNGs;
* a service run's ``metrics.json`` (``elsa demo``): :func:`service_report_markdown`;
* a study result JSON with a top-level ``"report"`` key (the benchmark studies in ``bench/``):
  :func:`~elsa.runtime.study_report.render_study` (the contract is documented there).

Nothing here prints; every malformed input raises :class:`~elsa.errors.ConfigError` naming the
field, before any file is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from elsa.errors import ConfigError
from elsa.runtime.study_report import (
    DPI,
    Cell,
    format_cell,
    image_link,
    is_number,
    markdown_table,
    parse_study_report,
    render_study,
)

__all__ = [
    "Cell",
    "format_cell",
    "markdown_table",
    "parse_study_report",
    "plot_bytes_per_round",
    "plot_rounds",
    "plot_service_rounds",
    "render_path",
    "render_run",
    "render_study",
    "service_report_markdown",
    "write_metrics",
]

MB = 1e6


def write_metrics(metrics: dict[str, Any], out_dir: Path) -> Path:
    """Write ``metrics.json`` into ``out_dir`` (created if needed); returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True), encoding="utf-8")
    return path


def plot_rounds(metrics: Mapping[str, Any], out_path: Path) -> Path:
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


# ---------------------------------------------------------------- run reports

_ROUND_KEYS: dict[str, tuple[str, bool]] = {  # key -> (expected, may be null)
    "cloud_round": ("an integer", False),
    "train_loss": ("a number", True),
    "test_loss": ("a number", False),
    "test_accuracy": ("a number", True),
    "wall_s": ("a number", False),
}


def _run_rounds(metrics: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The rounds of a simulated run's metrics, checked for the keys the report reads."""
    rounds = metrics.get("rounds")
    if not isinstance(rounds, list) or not rounds:
        raise ConfigError("metrics.rounds must be a non-empty list (a run's metrics.json)")
    for i, r in enumerate(rounds):
        where = f"metrics.rounds[{i}]"
        if not isinstance(r, Mapping):
            raise ConfigError(f"{where} must be an object")
        for key, (expected, nullable) in _ROUND_KEYS.items():
            value = r.get(key)
            ok = isinstance(value, int) if key == "cloud_round" else is_number(value)
            if not (ok or (nullable and value is None)):
                raise ConfigError(f"{where}.{key} must be {expected}, got {value!r}")
        sent = r.get("bytes", {})
        if not isinstance(sent, Mapping) or not all(is_number(v) for v in sent.values()):
            raise ConfigError(f"{where}.bytes must map a traffic kind to a byte count")
        if not isinstance(r.get("control", {}), Mapping):
            raise ConfigError(f"{where}.control must be an object")
    return rounds


def plot_bytes_per_round(rounds: Sequence[Mapping[str, Any]], out_path: Path, title: str) -> Path:
    """PNG of MB moved per cloud round, stacked by traffic kind (``bytes`` of each round).

    Round 0 (the initial evaluation, no traffic) is left out when later rounds exist."""
    rounds = [r for r in rounds if r["cloud_round"] > 0] or list(rounds)
    kinds = sorted({str(k) for r in rounds for k in r.get("bytes", {})})
    x = [int(r["cloud_round"]) for r in rounds]
    fig = Figure(figsize=(8, 4.2))
    ax = fig.subplots()
    bottom = [0.0] * len(rounds)
    for kind in kinds:
        ys = [r.get("bytes", {}).get(kind, 0) / MB for r in rounds]
        ax.bar(x, ys, bottom=bottom, label=kind)
        bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
    ax.set_title(f"{title}: MB per round by kind")
    ax.set_xlabel("cloud round")
    ax.set_ylabel("MB")
    ax.set_xticks(x)
    ax.grid(alpha=0.3, axis="y")
    if kinds:
        ax.legend(fontsize=7)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=DPI)
    return out_path


def _config_line(config: object) -> str | None:
    if not isinstance(config, Mapping):
        return None

    def get(section: str, key: str) -> Any:
        part = config.get(section)
        return part.get(key) if isinstance(part, Mapping) else None

    edges, per_edge = get("topology", "edges"), get("topology", "devices_per_edge")
    facts = [
        f"model {get('model', 'name')}" if get("model", "name") else "",
        f"data {get('data', 'dataset')}" if get("data", "dataset") else "",
        f"{edges} edges × {per_edge} devices" if edges and per_edge else "",
        f"strategy {get('strategy', 'name')}" if get("strategy", "name") else "",
        f"τ2={get('train', 'edge_rounds')}, τ1={get('train', 'local_steps')}"
        if get("train", "edge_rounds")
        else "",
    ]
    shown = [f for f in facts if f]
    return "- " + ", ".join(shown) if shown else None


def render_run(metrics: Mapping[str, Any], out_dir: Path) -> str:
    """Markdown for a simulated run's ``metrics.json`` (:meth:`RunResult.metrics_dict`).

    Writes ``out_dir/metrics.png`` (:func:`plot_rounds`) and ``out_dir/bytes.png``
    (:func:`plot_bytes_per_round`); returns a summary, a per-round table (losses, accuracy, MB
    moved, wall and emulated communication time, quarantined devices) and the MB per traffic
    kind over the run, with links to both PNGs relative to ``out_dir``. Not mutated.
    """
    rounds = _run_rounds(metrics)
    run_id = str(metrics.get("run_id", "run"))
    plot_rounds(metrics, out_dir / "metrics.png")
    plot_bytes_per_round(rounds, out_dir / "bytes.png", run_id)
    lines = [f"## Run {run_id}", ""]
    config_line = _config_line(metrics.get("config"))
    if config_line:
        lines.append(config_line)
    summary = [f"{len(rounds) - 1} cloud round(s) after the initial evaluation"]
    if is_number(metrics.get("adapter_numel")):
        summary.append(f"{int(metrics['adapter_numel']):,} adapter parameters")
    if is_number(metrics.get("wall_s")):
        summary.append(f"wall time {metrics['wall_s']:.1f} s")
    lines += ["- " + ", ".join(summary), ""]
    columns = ["round", "train loss", "test loss", "accuracy", "MB moved", "MB adapters", "wall s"]
    columns += ["comm s", "quarantined"]
    rows: list[list[Cell]] = []
    for r in rounds:
        sent = r.get("bytes", {})
        adapters = sum(v for k, v in sent.items() if str(k).startswith("adapters_"))
        rows.append(
            [
                r["cloud_round"],
                r.get("train_loss"),
                r["test_loss"],
                r.get("test_accuracy"),
                sum(sent.values()) / MB,
                adapters / MB,
                r["wall_s"],
                r.get("comm_s"),
                len(r.get("control", {}).get("quarantined", [])),
            ]
        )
    lines += [*markdown_table(columns, rows), ""]
    kinds = sorted({str(k) for r in rounds for k in r.get("bytes", {})})
    if kinds:
        total = {k: sum(r.get("bytes", {}).get(k, 0) for r in rounds) for k in kinds}
        moved = sum(total.values()) or 1
        per_kind: list[list[Cell]] = [[k, total[k] / MB, 100 * total[k] / moved] for k in kinds]
        lines += ["### MB moved by kind (whole run)", ""]
        lines += [*markdown_table(["kind", "MB", "% of traffic"], per_kind), ""]
    lines += [
        image_link(f"{run_id}: accuracy and loss", "metrics.png"),
        "",
        image_link(f"{run_id}: MB per round", "bytes.png"),
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- dispatch


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not readable JSON: {exc}") from None


def render_path(path: Path, out_dir: Path | None = None) -> tuple[Path, str]:
    """Render a results file and write the markdown; returns ``(markdown path, markdown)``.

    ``path`` is a run folder holding ``metrics.json``, such a ``metrics.json`` (written by
    ``elsa simulate`` or ``elsa demo``: ``report.md`` plus PNGs), or a study result JSON with a
    top-level ``"report"`` key (``<stem>.md`` plus its figures). Everything goes to ``out_dir``,
    by default the folder of the JSON file. Raises :class:`ConfigError` on a missing file or
    on JSON that is neither.
    """
    if path.is_dir():
        if not (path / "metrics.json").is_file():
            raise ConfigError(f"{path} is a folder without metrics.json (expected a run folder)")
        path = path / "metrics.json"
    data = _load_json(path)
    out = out_dir if out_dir is not None else path.parent
    if isinstance(data, Mapping) and "report" in data:
        markdown = render_study(data["report"], out)
        md_path = out / f"{path.stem}.md"
    elif isinstance(data, Mapping) and "rounds" in data:
        markdown = _render_any_run(data, out)
        md_path = out / "report.md"
    else:
        raise ConfigError(
            f"{path}: expected a run's metrics.json (with 'rounds') or a study result with a "
            "top-level 'report' key"
        )
    out.mkdir(parents=True, exist_ok=True)
    md_path.write_text(markdown, encoding="utf-8")
    return md_path, markdown


def _render_any_run(data: Mapping[str, Any], out_dir: Path) -> str:
    """A simulated run (:func:`render_run`) or a service run of ``elsa demo`` (it has ``state``)."""
    if "state" not in data:
        return render_run(data, out_dir)
    summary = dict(data)
    try:
        markdown = service_report_markdown(summary)
        plot_service_rounds(summary["rounds"], out_dir / "metrics.png", str(summary["run_id"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"metrics.json of a service run lacks or mistypes a field: {exc!r}") from None
    return markdown + "\n![accuracy, loss and MB per round](metrics.png)\n"
