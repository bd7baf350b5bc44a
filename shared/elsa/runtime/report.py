"""Writing and rendering results: a run's metrics JSON, PNG figures and markdown reports.

Three inputs are rendered (:func:`render_path` picks by content):

* a simulated run's ``metrics.json`` (``elsa simulate --out DIR``, :meth:`RunResult.metrics_dict`):
  :func:`render_run`, a per-round table and two PNGs;
* a service run's ``metrics.json`` (``elsa demo``): :func:`service_report_markdown`;
* a study result JSON with a top-level ``"report"`` key (the benchmark studies in ``bench/``):
  :func:`render_study`. The report contract::

    {"title": str, "text": str | None,
     "tables": [{"title": str, "columns": [str, ...], "rows": [[str | int | float | None, ...], ...]}],
     "figures": [{"file": "name.png", "title": str, "xlabel": str, "ylabel": str,
                  "kind": "line" | "bar", "logx": bool, "logy": bool,
                  "series": {label: {"x": [num | str, ...], "y": [num | None, ...],
                                     "err": [num | None, ...] | None}}}]}

  ``text``, ``tables``, ``figures``, ``xlabel``, ``ylabel``, ``kind`` (``"line"``), ``logx``,
  ``logy`` and ``err`` may be left out; any other key is an error (so that a typo is not silently
  dropped). ``None`` in ``y`` is a missing point. Bar figures draw grouped bars over the category
  labels of all series (numbers become labels).

Nothing here prints; every malformed input raises :class:`~elsa.errors.ConfigError` naming the
field, before any file is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from elsa.errors import ConfigError

#: PNG resolution of every figure
DPI = 110
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


# ---------------------------------------------------------------- study reports

Cell = str | int | float | None


@dataclass(frozen=True)
class TableSpec:
    """One table of a study report; every row has one cell per column."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]


@dataclass(frozen=True)
class SeriesSpec:
    """One plotted series: ``x``, ``y`` and ``err`` (if any) have the same length."""

    label: str
    x: tuple[float | str, ...]
    y: tuple[float | None, ...]
    err: tuple[float | None, ...] | None


@dataclass(frozen=True)
class FigureSpec:
    """One PNG figure of a study report."""

    file: str
    title: str
    xlabel: str
    ylabel: str
    kind: str
    logx: bool
    logy: bool
    series: tuple[SeriesSpec, ...]


@dataclass(frozen=True)
class StudyReport:
    """A validated study report (see the module docstring for the JSON form)."""

    title: str
    text: str | None
    tables: tuple[TableSpec, ...]
    figures: tuple[FigureSpec, ...]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _object(value: object, where: str, keys: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be an object, got {type(value).__name__}")
    unknown = sorted(str(k) for k in value if k not in keys)
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {unknown}; expected some of {list(keys)}")
    return value


def _text(obj: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = obj.get(key)
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        got = "missing" if key not in obj else f"a {type(value).__name__}"
        raise ConfigError(f"{where}.{key} must be a string, got {got}")
    return value


def _flag(obj: Mapping[str, Any], key: str, where: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be true or false, got {value!r}")
    return value


def _items(obj: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> list[Any]:
    value = obj.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        got = "missing" if key not in obj else f"a {type(value).__name__}"
        raise ConfigError(f"{where}.{key} must be a list, got {got}")
    return value


def _numbers(values: list[Any], where: str) -> tuple[float | None, ...]:
    for i, v in enumerate(values):
        if v is not None and not _is_number(v):
            raise ConfigError(f"{where}[{i}] must be a number or null, got {v!r}")
    return tuple(None if v is None or math.isnan(v) else float(v) for v in values)


def _parse_table(raw: object, where: str) -> TableSpec:
    obj = _object(raw, where, ("title", "columns", "rows"))
    columns = _items(obj, "columns", where, required=True)
    if not columns or not all(isinstance(c, str) for c in columns):
        raise ConfigError(f"{where}.columns must be a non-empty list of strings")
    rows: list[tuple[Cell, ...]] = []
    for i, row in enumerate(_items(obj, "rows", where, required=True)):
        if not isinstance(row, list) or len(row) != len(columns):
            raise ConfigError(f"{where}.rows[{i}] must be a list of {len(columns)} cells (one per column)")
        for j, cell in enumerate(row):
            if not (cell is None or isinstance(cell, str) or _is_number(cell)):
                raise ConfigError(f"{where}.rows[{i}][{j}] must be a string, number or null, got {cell!r}")
        rows.append(tuple(row))
    return TableSpec(_text(obj, "title", where), tuple(columns), tuple(rows))


def _parse_series(label: str, raw: object, where: str) -> SeriesSpec:
    obj = _object(raw, where, ("x", "y", "err"))
    x = _items(obj, "x", where, required=True)
    for i, v in enumerate(x):
        if not (isinstance(v, str) or _is_number(v)):
            raise ConfigError(f"{where}.x[{i}] must be a number or a string, got {v!r}")
    y = _numbers(_items(obj, "y", where, required=True), f"{where}.y")
    if len(y) != len(x):
        raise ConfigError(f"{where}: x has {len(x)} values but y has {len(y)}")
    err = None
    if obj.get("err") is not None:
        err = _numbers(_items(obj, "err", where), f"{where}.err")
        if len(err) != len(y):
            raise ConfigError(f"{where}: y has {len(y)} values but err has {len(err)}")
    return SeriesSpec(label, tuple(x), y, err)


def _parse_figure(raw: object, where: str) -> FigureSpec:
    keys = ("file", "title", "xlabel", "ylabel", "kind", "logx", "logy", "series")
    obj = _object(raw, where, keys)
    file = _text(obj, "file", where)
    if Path(file).name != file or not file.endswith(".png") or file.startswith("."):
        raise ConfigError(f"{where}.file must be a plain PNG file name like 'accuracy.png', got {file!r}")
    kind = _text(obj, "kind", where, default="line")
    if kind not in ("line", "bar"):
        raise ConfigError(f"{where}.kind must be 'line' or 'bar', got {kind!r}")
    raw_series = obj.get("series")
    if not isinstance(raw_series, Mapping) or not raw_series:
        raise ConfigError(f"{where}.series must be a non-empty object of label -> {{x, y, err}}")
    series = tuple(
        _parse_series(str(label), s, f"{where}.series[{str(label)!r}]") for label, s in raw_series.items()
    )
    if kind == "line" and len({isinstance(v, str) for s in series for v in s.x}) > 1:
        raise ConfigError(f"{where}: x values of a line figure are all numbers or all strings")
    logx = _flag(obj, "logx", where)
    if logx and kind == "bar":
        raise ConfigError(f"{where}.logx does not apply to a bar figure (x values are categories)")
    return FigureSpec(
        file,
        _text(obj, "title", where),
        _text(obj, "xlabel", where, default=""),
        _text(obj, "ylabel", where, default=""),
        kind,
        logx,
        _flag(obj, "logy", where),
        series,
    )


def parse_study_report(report: object) -> StudyReport:
    """Validate a study's ``"report"`` dict (module docstring) into a :class:`StudyReport`.

    Raises :class:`ConfigError` naming the first bad field (e.g. ``report.figures[1].kind``).
    The input is not mutated.
    """
    obj = _object(report, "report", ("title", "text", "tables", "figures"))
    text = obj.get("text")
    if text is not None and not isinstance(text, str):
        raise ConfigError(f"report.text must be a string or null, got a {type(text).__name__}")
    tables = tuple(
        _parse_table(t, f"report.tables[{i}]") for i, t in enumerate(_items(obj, "tables", "report"))
    )
    figures = tuple(
        _parse_figure(f, f"report.figures[{i}]") for i, f in enumerate(_items(obj, "figures", "report"))
    )
    files = [f.file for f in figures]
    if len(set(files)) != len(files):
        raise ConfigError(f"report.figures: two figures write the same file ({sorted(files)})")
    return StudyReport(_text(obj, "title", "report"), text, tables, figures)


def format_cell(value: Cell) -> str:
    """A table cell as text: ``None``/NaN as "–", floats to about 3-4 significant digits
    (three decimals below 10), integers with thousands separators."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    size = abs(value)
    if math.isinf(value):
        return str(value)
    if 0 < size < 0.001:
        return f"{value:.3g}"
    if size < 10:
        return f"{value:.3f}"
    if size < 100:
        return f"{value:.2f}"
    if size < 1000:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Cell]]) -> list[str]:
    """A GitHub pipe table; columns that hold only numbers (and blanks) are right-aligned."""

    def cell(value: Cell) -> str:
        return format_cell(value).replace("|", "\\|").replace("\n", " ")

    numeric = [
        any(r[i] is not None for r in rows) and all(r[i] is None or _is_number(r[i]) for r in rows)
        for i in range(len(columns))
    ]
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |"]
    lines.append("|" + "|".join("---:" if n else ":---" for n in numeric) + "|")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def _categories(figure: FigureSpec) -> list[str]:
    """Category labels of all series, in first-seen order (numbers as ``{:g}``)."""
    seen = dict.fromkeys(_label(v) for s in figure.series for v in s.x)
    return list(seen)


def _label(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:g}"


def _draw(figure: FigureSpec, out_path: Path) -> None:
    categorical = figure.kind == "bar" or any(isinstance(v, str) for s in figure.series for v in s.x)
    cats = _categories(figure) if categorical else []
    position = {c: i for i, c in enumerate(cats)}
    width = max(6.4, min(14.0, 0.5 * len(cats) * (len(figure.series) if figure.kind == "bar" else 1)))
    fig = Figure(figsize=(width, 4.2))
    ax = fig.subplots()
    bar_width = 0.8 / len(figure.series)
    handles: list[Any] = []  # in series order (matplotlib lists plain lines before error bars)
    for i, s in enumerate(figure.series):
        err = s.err if s.err is not None else (None,) * len(s.y)
        points = [(x, y, e) for x, y, e in zip(s.x, s.y, err, strict=True) if y is not None]
        xs = [position[_label(p[0])] if categorical else float(p[0]) for p in points]
        ys = [p[1] for p in points]
        errs = [math.nan if p[2] is None else p[2] for p in points] if s.err is not None else None
        if figure.kind == "bar":
            shift = (i - (len(figure.series) - 1) / 2) * bar_width
            handles.append(
                ax.bar([x + shift for x in xs], ys, bar_width, yerr=errs, capsize=3, label=s.label)
            )
        elif errs is not None:
            handles.append(ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=s.label))
        else:
            handles += ax.plot(xs, ys, marker="o", label=s.label)
    if categorical:
        long_labels = sum(len(c) for c in cats) > 60
        ax.set_xticks(
            range(len(cats)), cats, rotation=30 if long_labels else 0, ha="right" if long_labels else "center"
        )
    if figure.logx:
        ax.set_xscale("log")
    if figure.logy:
        ax.set_yscale("log")
    ax.set_title(figure.title)
    ax.set_xlabel(figure.xlabel)
    ax.set_ylabel(figure.ylabel)
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=DPI)


def _link(title: str, target: str) -> str:
    return f"![{title.replace('[', '(').replace(']', ')')}]({target})"


def render_study(report: Mapping[str, Any], out_dir: Path, *, image_prefix: str = "") -> str:
    """Markdown for a study report; writes each figure as ``out_dir / figure.file`` (PNG).

    The report is validated first (:func:`parse_study_report`), so on a :class:`ConfigError`
    no file is written. ``image_prefix`` is put before each PNG name in the image links (the
    path from the markdown file to ``out_dir``). ``report`` is not mutated.
    """
    study = parse_study_report(report)
    lines = [f"## {study.title}", ""]
    if study.text:
        lines += [study.text.strip(), ""]
    for table in study.tables:
        lines += [f"### {table.title}", "", *markdown_table(table.columns, table.rows), ""]
    if study.figures:
        out_dir.mkdir(parents=True, exist_ok=True)
    for figure in study.figures:
        _draw(figure, out_dir / figure.file)
        lines += [_link(figure.title, image_prefix + figure.file), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


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
            ok = isinstance(value, int) if key == "cloud_round" else _is_number(value)
            if not (ok or (nullable and value is None)):
                raise ConfigError(f"{where}.{key} must be {expected}, got {value!r}")
        sent = r.get("bytes", {})
        if not isinstance(sent, Mapping) or not all(_is_number(v) for v in sent.values()):
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
    if _is_number(metrics.get("adapter_numel")):
        summary.append(f"{int(metrics['adapter_numel']):,} adapter parameters")
    if _is_number(metrics.get("wall_s")):
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
        _link(f"{run_id}: accuracy and loss", "metrics.png"),
        "",
        _link(f"{run_id}: MB per round", "bytes.png"),
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
