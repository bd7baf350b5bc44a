"""Rendering results: study reports and run metrics to markdown + PNG, and `elsa report`."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from elsa.errors import ConfigError
from elsa.runtime.report import format_cell, render_path, render_run, render_study

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5_000, f"{path} is only {len(data)} bytes"  # a drawn figure, not an empty stub


def study_report() -> dict[str, Any]:
    return {
        "title": "Privacy vs utility",
        "text": "SS-OP noise against **accuracy**.",
        "tables": [
            {
                "title": "Accuracy per kappa",
                "columns": ["method", "kappa", "accuracy", "MB moved"],
                "rows": [
                    ["elsa", 0, 0.91234, 12345678],
                    ["elsa", 0.5, 0.8876, None],
                    ["fedavg | dense", 2.0, 123.456, 1024],
                ],
            }
        ],
        "figures": [
            {
                "file": "accuracy_bbc_news.png",
                "title": "Accuracy vs kappa",
                "xlabel": "kappa",
                "ylabel": "accuracy",
                "logx": False,
                "series": {
                    "elsa": {
                        "x": [0, 0.5, 1, 2],
                        "y": [0.91, 0.89, None, 0.80],
                        "err": [0.01, 0.02, None, 0.015],
                    },
                    "split only": {"x": [0, 0.5, 1, 2], "y": [0.90, 0.85, 0.82, 0.7], "err": None},
                },
            },
            {
                "file": "bytes.png",
                "title": "MB per round",
                "xlabel": "method",
                "ylabel": "MB",
                "kind": "bar",
                "logy": True,
                "series": {
                    "up": {
                        "x": ["elsa", "fedavg", "splitfed"],
                        "y": [1.5, 40.0, 12.0],
                        "err": [0.1, 2.0, None],
                    },
                    "down": {"x": ["elsa", "fedavg"], "y": [3.0, None]},
                },
            },
        ],
    }


def run_metrics() -> dict[str, Any]:
    """A two-round run as `elsa simulate --out` writes it (RunResult.metrics_dict)."""
    control = {
        "clusters": {"d0": 1, "d1": 1, "d2": 2},
        "trust": {"d0": 0.9, "d1": 0.95, "d2": 0.3},
        "quarantined": ["d2"],
        "assignment": {"d0": "e0", "d1": "e0", "d2": "e1"},
        "split_plans": {"d0": [1, 1], "d1": [1, 1], "d2": [2, 1]},
        "next_cluster_id": 3,
    }
    traffic = {
        "activations": 2_400_000,
        "gradients": 2_400_000,
        "adapters_device_to_edge": 300_000,
        "adapters_edge_to_cloud": 120_000,
        "probe_reports": 8_000,
    }
    return {
        "run_id": "default-test",
        "config": {
            "name": "default",
            "model": {"name": "minilm", "head_blocks": 1, "tail_blocks": 1},
            "data": {"dataset": "bbc_news"},
            "topology": {"edges": 2, "devices_per_edge": 3},
            "train": {"edge_rounds": 2, "local_steps": 5, "cloud_rounds": 2},
            "strategy": {"name": "elsa"},
        },
        "adapter_numel": 73_728,
        "wall_s": 41.5,
        "rounds": [
            {
                "cloud_round": 0,
                "train_loss": None,
                "test_loss": 1.61,
                "test_accuracy": 0.21,
                "bytes": {},
                "wall_s": 0.0,
                "comm_s": 0.0,
                "control": {},
            },
            {
                "cloud_round": 1,
                "train_loss": 1.4,
                "test_loss": 1.2,
                "test_accuracy": 0.55,
                "bytes": traffic,
                "wall_s": 20.2,
                "comm_s": 1.3,
                "control": {**control, "quarantined": []},
            },
            {
                "cloud_round": 2,
                "train_loss": 0.9,
                "test_loss": 0.8,
                "test_accuracy": 0.77,
                "bytes": traffic,
                "wall_s": 21.3,
                "comm_s": 1.2,
                "control": control,
            },
        ],
    }


# ---------------------------------------------------------------- study reports


def test_render_study_writes_pngs_and_markdown(tmp_path: Path) -> None:
    report = study_report()
    before = copy.deepcopy(report)
    markdown = render_study(report, tmp_path / "figs", image_prefix="figs/")
    assert report == before  # not mutated
    assert_png(tmp_path / "figs" / "accuracy_bbc_news.png")
    assert_png(tmp_path / "figs" / "bytes.png")
    assert markdown.startswith("## Privacy vs utility\n")
    assert "SS-OP noise against **accuracy**." in markdown
    assert "### Accuracy per kappa" in markdown
    assert "| method | kappa | accuracy | MB moved |" in markdown
    assert "|:---|---:|---:|---:|" in markdown  # text left, numbers right
    assert "| elsa | 0 | 0.912 | 12,345,678 |" in markdown
    assert "| elsa | 0.500 | 0.888 | – |" in markdown
    assert "| fedavg \\| dense | 2.000 | 123.5 | 1,024 |" in markdown  # pipes escaped
    assert "![Accuracy vs kappa](figs/accuracy_bbc_news.png)" in markdown
    assert "![MB per round](figs/bytes.png)" in markdown


def test_render_study_minimal_report_writes_nothing(tmp_path: Path) -> None:
    assert render_study({"title": "Empty"}, tmp_path / "out") == "## Empty\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "–"),
        (float("nan"), "–"),
        (0.12345, "0.123"),
        (9.99949, "9.999"),
        (42.123, "42.12"),
        (123.456, "123.5"),
        (98765.4, "98,765"),
        (0.0000123, "1.23e-05"),
        (1234567, "1,234,567"),
        (0.0, "0.000"),
        (-0.5, "-0.500"),
        (7, "7"),
        ("kappa", "kappa"),
    ],
)
def test_format_cell(value: str | float | None, text: str) -> None:
    assert format_cell(value) == text


def _broken(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    report = study_report()
    node: Any = report
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return report


@pytest.mark.parametrize(
    ("report", "fragment"),
    [
        (_broken(("title",), KeyError), "report.title"),
        (_broken(("title",), 3), "report.title"),
        (_broken(("figures", 0, "series", "elsa", "y"), [0.9, 0.8]), "x has 4 values but y has 2"),
        (_broken(("figures", 0, "series", "elsa", "err"), [0.1]), "err has 1"),
        (_broken(("figures", 1, "kind"), "pie"), "report.figures[1].kind"),
        (_broken(("figures", 1, "logx"), True), "report.figures[1].logx"),
        (_broken(("figures", 0, "logy"), "yes"), "report.figures[0].logy"),
        (_broken(("figures", 0, "file"), "../escape.png"), "report.figures[0].file"),
        (_broken(("figures", 0, "file"), "plot.svg"), "report.figures[0].file"),
        (_broken(("figures", 1, "file"), "accuracy_bbc_news.png"), "same file"),
        (_broken(("figures", 0, "series"), {}), "report.figures[0].series"),
        (_broken(("figures", 0, "series", "elsa", "y", 0), "high"), "series['elsa'].y[0]"),
        (_broken(("figures", 0, "colour"), "red"), "unknown key(s) ['colour']"),
        (_broken(("tables", 0, "rows", 1), ["elsa", 0.5]), "report.tables[0].rows[1]"),
        (_broken(("tables", 0, "rows", 0, 2), [0.9]), "report.tables[0].rows[0][2]"),
        (_broken(("tables", 0, "columns"), []), "report.tables[0].columns"),
        (_broken(("figures",), {"file": "a.png"}), "report.figures must be a list"),
        (_broken(("figure",), []), "unknown key(s) ['figure']"),
    ],
)
def test_malformed_study_report_is_a_config_error(
    tmp_path: Path, report: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        render_study(report, tmp_path)
    assert fragment in caught.value.detail
    assert list(tmp_path.iterdir()) == []  # validated before anything is written


def test_line_figure_x_must_not_mix_numbers_and_strings(tmp_path: Path) -> None:
    report = _broken(("figures", 0, "series", "split only", "x"), ["a", "b", "c", "d"])
    with pytest.raises(ConfigError, match="all numbers or all strings"):
        render_study(report, tmp_path)


def test_render_study_rejects_a_non_object() -> None:
    with pytest.raises(ConfigError, match="report must be an object"):
        render_study([1, 2], Path("unused"))  # type: ignore[arg-type]


# ---------------------------------------------------------------- run reports


def test_render_run_writes_pngs_and_a_round_table(tmp_path: Path) -> None:
    metrics = run_metrics()
    before = copy.deepcopy(metrics)
    markdown = render_run(metrics, tmp_path)
    assert metrics == before
    assert_png(tmp_path / "metrics.png")
    assert_png(tmp_path / "bytes.png")
    assert markdown.startswith("## Run default-test\n")
    assert "model minilm, data bbc_news, 2 edges × 3 devices" in markdown
    assert "73,728 adapter parameters" in markdown
    header = "| round | train loss | test loss | accuracy | MB moved | MB adapters | wall s | comm s | quarantined |"
    assert header in markdown
    assert "| 0 | – | 1.610 | 0.210 | 0.000 | 0.000 | 0.000 | 0.000 | 0 |" in markdown
    # 5.228 MB per round, 0.42 of it adapters; d2 quarantined after round 2
    assert "| 1 | 1.400 | 1.200 | 0.550 | 5.228 | 0.420 | 20.20 | 1.300 | 0 |" in markdown
    assert "| 2 | 0.900 | 0.800 | 0.770 | 5.228 | 0.420 | 21.30 | 1.200 | 1 |" in markdown
    assert "| activations | 4.800 | 45.91 |" in markdown  # 4.8 of 10.456 MB
    assert "![default-test: accuracy and loss](metrics.png)" in markdown
    assert "(bytes.png)" in markdown


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"rounds": []}, "metrics.rounds"),
        ({"rounds": [{"cloud_round": 0, "test_loss": "x", "wall_s": 0.0}]}, "metrics.rounds[0].test_loss"),
        ({"rounds": [{"cloud_round": 0, "test_loss": 1.0}]}, "metrics.rounds[0].wall_s"),
        (
            {"rounds": [{"cloud_round": 0, "test_loss": 1.0, "wall_s": 0.0, "bytes": {"a": "many"}}]},
            "metrics.rounds[0].bytes",
        ),
    ],
)
def test_malformed_run_metrics_is_a_config_error(
    tmp_path: Path, change: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        render_run({**run_metrics(), **change}, tmp_path)
    assert fragment in caught.value.detail
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- dispatch and `elsa report`


def write_json(path: Path, payload: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_render_path_dispatches_on_content(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "default-test"
    write_json(run_dir / "metrics.json", run_metrics())
    md_path, markdown = render_path(run_dir)
    assert md_path == run_dir / "report.md"
    assert md_path.read_text(encoding="utf-8") == markdown
    assert_png(run_dir / "bytes.png")
    study = write_json(tmp_path / "results" / "privacy.json", {"params": {}, "report": study_report()})
    md_path, markdown = render_path(study, tmp_path / "rendered")
    assert md_path == tmp_path / "rendered" / "privacy.md"
    assert "## Privacy vs utility" in md_path.read_text(encoding="utf-8")
    assert_png(tmp_path / "rendered" / "accuracy_bbc_news.png")


def test_render_path_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        render_path(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match=r"without metrics\.json"):
        render_path(tmp_path)
    with pytest.raises(ConfigError, match="not readable JSON"):
        render_path(write_text(tmp_path / "broken.json", "{not json"))
    with pytest.raises(ConfigError, match="top-level 'report' key"):
        render_path(write_json(tmp_path / "other.json", {"results": [1, 2]}))


def test_cli_report_on_a_study_json_and_a_run_dir(tmp_path: Path) -> None:
    from elsa.cli import app

    runner = CliRunner()
    study = write_json(tmp_path / "privacy.json", {"report": study_report()})
    done = runner.invoke(app, ["report", str(study), "--out", str(tmp_path / "md")])
    assert done.exit_code == 0, done.output
    assert "| elsa | 0 | 0.912 | 12,345,678 |" in done.output
    assert "![Accuracy vs kappa](accuracy_bbc_news.png)" in done.output
    assert (tmp_path / "md" / "privacy.md").is_file()
    assert_png(tmp_path / "md" / "bytes.png")

    run_dir = tmp_path / "run"
    write_json(run_dir / "metrics.json", run_metrics())
    done = runner.invoke(app, ["report", str(run_dir)])
    assert done.exit_code == 0, done.output
    assert "## Run default-test" in done.output
    assert (run_dir / "report.md").is_file()
    assert_png(run_dir / "metrics.png")


def test_cli_report_errors_exit_2_with_a_message(tmp_path: Path) -> None:
    from elsa.cli import app

    runner = CliRunner()
    bogus = write_json(tmp_path / "bogus.json", {"anything": 1})
    done = runner.invoke(app, ["report", str(bogus)])
    assert done.exit_code == 2
    assert "invalid_config" in done.output
    assert "top-level 'report' key" in done.output
    bad = write_json(tmp_path / "bad.json", {"report": _broken(("figures", 1, "kind"), "pie")})
    done = runner.invoke(app, ["report", str(bad)])
    assert done.exit_code == 2
    assert "report.figures[1].kind" in done.output
    done = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert done.exit_code == 2
    assert "does not exist" in done.output
