"""Study reports: the ``"report"`` of a benchmark study's result JSON, validated and rendered as
markdown tables and PNG figures (used by ``elsa report`` and by ``bench/``). The contract::

    {"title": str, "text": str | None,
     "tables": [{"title": str, "columns": [str, ...], "rows": [[str | int | float | None, ...], ...]}],
     "figures": [{"file": "name.png", "title": str, "xlabel": str, "ylabel": str,
                  "kind": "line" | "bar", "logx": bool, "logy": bool,
                  "series": {label: {"x": [num | str, ...], "y": [num | None, ...],
                                     "err": [num | None, ...] | None}}}]}

``text``, ``tables``, ``figures``, ``xlabel``, ``ylabel``, ``kind`` (``"line"``), ``logx``,
``logy`` and ``err`` may be left out; any other key is an error (so that a typo is not silently
dropped). ``None`` in ``y`` is a missing point. Bar figures draw grouped bars over the category
labels of all series (numbers become labels). Nothing here prints; a malformed report raises
:class:`~elsa.errors.ConfigError` naming the field, before any file is written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure

from elsa.errors import ConfigError

#: PNG resolution of every figure
DPI = 110

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


def is_number(value: object) -> bool:
    """An int or float, not a bool."""
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
        if v is not None and not is_number(v):
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
            if not (cell is None or isinstance(cell, str) or is_number(cell)):
                raise ConfigError(f"{where}.rows[{i}][{j}] must be a string, number or null, got {cell!r}")
        rows.append(tuple(row))
    return TableSpec(_text(obj, "title", where), tuple(columns), tuple(rows))


def _parse_series(label: str, raw: object, where: str) -> SeriesSpec:
    obj = _object(raw, where, ("x", "y", "err"))
    x = _items(obj, "x", where, required=True)
    for i, v in enumerate(x):
        if not (isinstance(v, str) or is_number(v)):
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
        any(r[i] is not None for r in rows) and all(r[i] is None or is_number(r[i]) for r in rows)
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


def image_link(title: str, target: str) -> str:
    """A markdown image link (brackets in the title become parentheses)."""
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
        lines += [image_link(figure.title, image_prefix + figure.file), ""]
    return "\n".join(lines).rstrip("\n") + "\n"
