"""The benchmark scripts in ``bench/`` run end to end at smoke size and write sane result files.

Each script runs once with ``--quick`` in a subprocess (about 20-50 s each on 2 cores); no
timing is asserted, only the shape and the plausibility of what they record.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = pytest.mark.slow


def _run_quick(script: str, out: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    record: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return record


def _check_machine(record: dict[str, Any]) -> None:
    machine = record["machine"]
    assert machine["torch_threads"] >= 1
    assert machine["usable_cores"] >= 1
    assert machine["torch"]
    host = socket.gethostname()
    assert len(host) < 4 or host not in json.dumps(record), "the result names the host"


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-results")


@pytest.fixture(scope="module")
def split_overhead(results_dir: Path) -> dict[str, Any]:
    return _run_quick("split_overhead.py", results_dir / "split_overhead.json")


@pytest.fixture(scope="module")
def simulate_default(results_dir: Path) -> dict[str, Any]:
    return _run_quick("simulate_default.py", results_dir / "simulate_default.json")


@pytest.fixture(scope="module")
def device_memory(results_dir: Path) -> dict[str, Any]:
    return _run_quick("device_memory.py", results_dir / "device_memory.json")


def test_split_overhead_quick(split_overhead: dict[str, Any]) -> None:
    r = split_overhead
    _check_machine(r)
    assert r["params"]["quick"] is True
    assert set(r["results"]) == {"monolithic", "split_fp32", "split_fp16"}
    for name, row in r["results"].items():
        assert row["median_ms"] > 0
        assert row["q1_ms"] <= row["median_ms"] <= row["q3_ms"]
        assert row["median_cpu_ms"] > 0
        assert len(r["samples_ms_per_step"][name]) == r["params"]["repeats"] == 2
        if name != "monolithic":
            assert row["ratio_mono_over_split"] > 0
            assert row["paired_ratio_median"] > 0
    for variant in ("split_fp32", "split_fp16"):
        phases = r["phases_median_ms"][variant]
        assert set(phases) >= {"head_fwd", "body_fwd", "tail_fwd", "cut_fwd_codec", "body_bwd_opt"}
        assert all(math.isfinite(v) for v in phases.values())
        assert phases["body_fwd"] > 0
    wire = r["wire_bytes_per_step"]
    assert 0 < wire["fp16"] < wire["fp32"]


def test_simulate_default_quick(simulate_default: dict[str, Any]) -> None:
    r = simulate_default
    _check_machine(r)
    elsa, central = r["runs"]["elsa"], r["runs"]["centralized"]
    assert (
        elsa["devices"]
        == elsa["config"]["topology"]["edges"] * elsa["config"]["topology"]["devices_per_edge"]
    )
    assert central["devices"] == 1
    assert elsa["optimizer_steps_total"] == central["optimizer_steps_total"] > 0
    assert (
        central["config"]["train"]["local_steps"] == elsa["config"]["train"]["local_steps"] * elsa["devices"]
    )
    assert central["config"]["data"]["alpha"] is None
    assert 0 < elsa["examples_seen_total"] <= central["examples_seen_total"]
    for run in (elsa, central):
        assert run["wall_s_median"] > 0
        assert run["cpu_s_median"] > 0
        assert run["peak_rss_bytes_max"] > 50 * 2**20  # a Python process with torch loaded
        accuracies = run["accuracy_per_round"]
        assert len(accuracies) == run["config"]["train"]["cloud_rounds"] + 1
        assert all(0.0 <= a <= 1.0 for a in accuracies)
        assert run["final_accuracy"] == accuracies[-1]
    assert r["summary"]["accuracy_gap_centralized_minus_elsa"] == pytest.approx(
        central["final_accuracy"] - elsa["final_accuracy"]
    )
    assert "optimizer steps" in r["same_steps"]


def test_device_memory_quick(device_memory: dict[str, Any]) -> None:
    r = device_memory
    _check_machine(r)
    assert sorted(s["devices"] for s in r["samples"]) == [1, 2]
    for s in r["samples"]:
        assert s["rss_bytes"] > 0
        assert s["uss_bytes"] > 0
        # measured after every device stepped: one AdamW state per device adapter tensor
        assert s["adam_param_states_devices"] == s["devices"] * s["device_keys"]
    refs = r["references"]
    assert 0 < refs["adapter_bytes"] < refs["adapter_grad_adamw_bytes"] < refs["model_copy_bytes"]
    for fit in r["fits"].values():
        assert math.isfinite(fit["slope_bytes_per_device"])
        assert math.isfinite(fit["slope_over_model_copy"])


def test_render_readme_fills_every_block(
    results_dir: Path,
    split_overhead: dict[str, Any],
    simulate_default: dict[str, Any],
    device_memory: dict[str, Any],
    tmp_path: Path,
) -> None:
    shutil.copy(BENCH / "results" / "wire_frames.json", results_dir / "wire_frames.json")
    readme = tmp_path / "README.md"
    shutil.copy(BENCH / "README.md", readme)
    cmd = [
        sys.executable,
        str(BENCH / "render_readme.py"),
        "--readme",
        str(readme),
        "--results",
        str(results_dir),
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    text = readme.read_text(encoding="utf-8")
    for name in ("split_overhead", "simulate_default", "device_memory", "wire_frames"):
        block = text.split(f"<!-- results:{name} -->")[1].split(f"<!-- /results:{name} -->")[0]
        assert f"bench/results/{name}.json" in block
        assert "| " in block  # a table
    assert f"{simulate_default['runs']['elsa']['final_accuracy']:.3f}" in text
    assert f"{split_overhead['results']['split_fp16']['median_ms']:.1f}" in text
    assert f"{device_memory['references']['adapter_bytes'] / 2**20:.2f}" in text
    # rendering is idempotent: a second pass reports the file up to date
    check = subprocess.run([*cmd, "--check"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout


def test_http_overhead_quick(results_dir: Path) -> None:
    record = _run_quick("http_overhead.py", results_dir / "http_overhead.json")
    _check_machine(record)
    for name in ("monolithic", "http_fp32", "http_fp16"):
        row = record["results"][name]
        assert row["median_ms"] > 0
        assert math.isfinite(row["throughput_ratio_vs_monolithic"])
    fp32, fp16 = record["bytes_per_step"]["fp32"], record["bytes_per_step"]["fp16"]
    # fp16 cut tensors carry half the bytes of fp32 ones (plus small headers)
    assert 0.45 < fp16["activations"] / fp32["activations"] < 0.55
    assert fp32["gradients"] > 0
