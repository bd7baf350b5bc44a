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


def _render_readme(results: Path, tmp_path: Path) -> str:
    """Render a copy of ``bench/README.md`` (in ``tmp_path``) from ``results``; its text.

    Rendering must be idempotent: a second pass with ``--check`` reports the copy up to date.
    """
    readme = tmp_path / "README.md"
    shutil.copy(BENCH / "README.md", readme)
    cmd = [
        sys.executable,
        str(BENCH / "render_readme.py"),
        "--readme",
        str(readme),
        "--results",
        str(results),
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    check = subprocess.run([*cmd, "--check"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout
    return readme.read_text(encoding="utf-8")


def _results_block(text: str, name: str) -> str:
    """What the README's ``results:name`` block holds."""
    return text.split(f"<!-- results:{name} -->")[1].split(f"<!-- /results:{name} -->")[0]


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
    text = _render_readme(results_dir, tmp_path)
    for name in ("split_overhead", "simulate_default", "device_memory", "wire_frames"):
        block = _results_block(text, name)
        assert f"bench/results/{name}.json" in block
        assert "| " in block  # a table
    assert f"{simulate_default['runs']['elsa']['final_accuracy']:.3f}" in text
    assert f"{split_overhead['results']['split_fp16']['median_ms']:.1f}" in text
    assert f"{device_memory['references']['adapter_bytes'] / 2**20:.2f}" in text


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


# ---------------------------------------------------------------- control-plane studies (DESIGN §2.3-§2.6)


def _run_quick_one_thread(script: str, out: Path) -> dict[str, Any]:
    """``--quick`` with one torch thread: 12 simulated devices on small batches gain nothing from a
    second thread, and on a busy 2-core machine OpenMP spin-waiting made the trust study's quick
    run exceed the 600 s limit with two (about 90 s with one)."""
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick", "--threads", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    record: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return record


@pytest.fixture(scope="module")
def cluster_quality(results_dir: Path) -> dict[str, Any]:
    return _run_quick_one_thread("cluster_quality.py", results_dir / "cluster_quality.json")


@pytest.fixture(scope="module")
def trust_quarantine(results_dir: Path) -> dict[str, Any]:
    return _run_quick_one_thread("trust_quarantine.py", results_dir / "trust_quarantine.json")


@pytest.fixture(scope="module")
def assignment_latency(results_dir: Path) -> dict[str, Any]:
    return _run_quick_one_thread("assignment_latency.py", results_dir / "assignment_latency.json")


def test_cluster_quality_quick(cluster_quality: dict[str, Any]) -> None:
    r = cluster_quality
    _check_machine(r)
    p = r["params"]
    assert p["quick"] is True
    assert p["cloud_rounds"] == p["edge_rounds"] == 1
    assert p["k_max"] >= 6
    assert [s["seed"] for s in r["seeds"]] == p["seeds"] == [0]
    for s in r["seeds"]:
        n = p["devices"]
        assert len(s["planted"]) == len(s["clusters"]) == len(s["purity"]) == n == 12
        # planted group = dominant label of the device's own partition
        assert s["planted"] == [counts.index(max(counts)) for counts in s["label_counts"]]
        assert all(0.2 <= v <= 1.0 for v in s["purity"])  # 5 classes: the dominant share is >= 1/5
        assert -1.0 <= s["ari"] <= 1.0
        assert s["clusters_found"] == len(set(s["clusters"])) <= p["k_max"]
        assert 1 <= s["groups_planted"] <= 5
        diag = s["diagnostics"]
        # the recomputed fingerprints are the ones the control plane clustered
        assert diag["diagnostic_matches_run"] is True
        values = diag["laplacian_eigenvalues"]
        assert len(values) == n
        assert values == sorted(values)
        assert all(-1e-9 <= v <= 2.0 + 1e-9 for v in values)
        for k, fixed in diag["fixed_k"].items():
            assert len(set(fixed["labels"])) <= int(k)
            assert -1.0 <= fixed["ari"] <= 1.0
            assert 0.0 <= fixed["mean_within_affinity"] <= 1.0
        assert -1.0 <= diag["no_gap_floor"]["ari"] <= 1.0
    assert r["summary"]["ari_min"] <= r["summary"]["ari_mean"] <= r["summary"]["ari_max"]


def test_trust_quarantine_quick(trust_quarantine: dict[str, Any]) -> None:
    r = trust_quarantine
    _check_machine(r)
    p = r["params"]
    assert p["malicious_fraction"] == pytest.approx(0.25)
    assert set(r["settings"]) == {"iid", "non_iid"}
    assert r["settings"]["iid"]["alpha"] is None
    assert r["settings"]["non_iid"]["alpha"] == 0.5
    for entry in r["settings"].values():
        run = entry["malicious"]
        rounds = run["config"]["train"]["cloud_rounds"]
        assert rounds == p["cloud_rounds"] >= 2
        assert len(run["accuracy_per_round"]) == rounds + 1
        assert all(0.0 <= a <= 1.0 for a in run["accuracy_per_round"])
        assert len(run["trust_per_round"]) == len(run["quarantined_per_round"]) == rounds
        assert [o["cloud_round"] for o in run["observations"]] == list(range(1, rounds + 1))
        for trust in run["trust_per_round"]:
            assert len(trust) == p["devices"]
            assert all(0.0 <= t <= 1.0 for t in trust.values())
        summary = run["summary"]
        assert sorted(summary["malicious"]) == sorted(p["label_flip"] + p["noise"])
        for device, info in summary["malicious"].items():
            first = info["first_quarantined_round"]
            assert first is None or 1 <= first <= rounds
            # consistent with the per-round quarantine lists
            ever = [i + 1 for i, q in enumerate(run["quarantined_per_round"]) if device in q]
            assert first == (ever[0] if ever else None)
            assert info["quarantined_at_end"] == (device in run["quarantined_per_round"][-1])
        assert 0.0 <= summary["false_quarantine_rate"] <= 1.0
        assert summary["final_accuracy"] == run["accuracy_per_round"][-1]


def test_assignment_latency_quick(assignment_latency: dict[str, Any]) -> None:
    r = assignment_latency
    _check_machine(r)
    p = r["params"]
    assert set(r["runs"]) == set(r["summary"]) == {"latency", "balanced", "random"}
    assert p["link_spread"] > 0
    for rule, by_seed in r["runs"].items():
        assert sorted(by_seed) == [str(s) for s in p["seeds"]]
        for run in by_seed.values():
            rounds = p["cloud_rounds"]
            assert len(run["comm_s_per_round"]) == len(run["assignment_per_round"]) == rounds
            assert all(c > 0 for c in run["comm_s_per_round"])
            assert all(e > 0 for e in run["planner_bottleneck_s_per_edge_round"])
            for assignment in run["assignment_per_round"]:
                assert len(assignment) == p["devices"]
                loads = [list(assignment.values()).count(e) for e in set(assignment.values())]
                assert max(loads) <= p["edge_capacity"]
            assert 0.0 <= run["final_accuracy"] <= 1.0
        if rule != "latency":
            assert r["summary"][rule]["ratio_over_latency"] > 0
    # every rule trains on the same devices and data: the same cut-tensor bytes per round
    bytes_per_rule = {rule: r["runs"][rule][str(p["seeds"][0])]["cut_bytes_per_round"] for rule in r["runs"]}
    assert len({tuple(b) for b in bytes_per_rule.values()}) == 1


def test_render_readme_fills_control_plane_blocks(
    results_dir: Path,
    cluster_quality: dict[str, Any],
    trust_quarantine: dict[str, Any],
    assignment_latency: dict[str, Any],
    tmp_path: Path,
) -> None:
    text = _render_readme(results_dir, tmp_path)
    for name in ("cluster_quality", "trust_quarantine", "assignment_latency"):
        block = _results_block(text, name)
        assert f"bench/results/{name}.json" in block
        assert "| " in block
    assert f"**{cluster_quality['seeds'][0]['ari']:.3f}**" in text
    assert f"{assignment_latency['summary']['latency']['comm_s_mean']:.2f}" in text
    final = trust_quarantine["settings"]["non_iid"]["malicious"]["summary"]["final_accuracy"]
    assert f"**{final:.3f}**" in text


def test_privacy_attacks_quick(tmp_path: Path) -> None:
    r = _run_quick_one_thread("privacy_attacks.py", tmp_path / "privacy_attacks.json")
    _check_machine(r)
    p = r["params"]
    assert p["quick"] is True
    cuts = [{"head_blocks": c["head_blocks"], "rank": c["rank"]} for c in r["results"]]
    assert cuts == p["cuts"]
    for cut in r["results"]:
        assert cut["private_tokens"] > 0
        assert cut["public_tokens"] > 0
        assert [(row["kappa"], row["attack"]) for row in cut["rows"]] == [
            (k, a) for k in p["kappas"] for a in p["attacks"]
        ]
        for row in cut["rows"]:
            assert 0.0 <= row["top1"] <= row["top5"] <= 1.0
            assert row["n"] == cut["private_tokens"]
        by = {(row["kappa"], row["attack"]): row for row in cut["rows"]}
        # without SS-OP the nearest word embedding names (nearly) every token at the first cut
        assert by[0.0, "nn"]["top1"] >= 0.9
        assert by[max(p["kappas"]), "nn"]["top1"] < 0.5 * by[0.0, "nn"]["top1"]
        summary = r["summary"][f"h{cut['head_blocks']}_r{cut['rank']}"]
        assert summary["per_kappa"]["0.0"]["best_top1"] >= by[0.0, "nn"]["top1"]


def test_sketch_compression_quick(tmp_path: Path) -> None:
    r = _run_quick_one_thread("sketch_compression.py", tmp_path / "sketch_compression.json")
    _check_machine(r)
    assert r["params"]["quick"] is True
    for dataset in r["params"]["datasets"]:
        summary = r["summary"][dataset]
        assert summary["dense"]["byte_ratio_dense_over_variant"] == 1.0
        # the default sketches (8 elements per cell, fp16 tables) cut adapter bytes > 8x
        assert summary["sketch"]["byte_ratio_dense_over_variant"] > 8.0
        assert summary["sketch-16x"]["adapter_bytes_per_round"] < summary["sketch"]["adapter_bytes_per_round"]
        for variant, s in summary.items():
            assert 0.0 <= s["final_accuracy"] <= 1.0, variant
            run = r["runs"][dataset][variant]["0"]
            assert len(run["accuracy_per_round"]) >= 2
            assert all(b > 0 for b in run["adapter_bytes_per_round"][1:])


def test_privacy_utility_quick(tmp_path: Path) -> None:
    r = _run_quick_one_thread("privacy_utility.py", tmp_path / "privacy_utility.json")
    _check_machine(r)
    assert [float(k) for k in r["summary"]] == r["params"]["kappas"]
    for kappa, s in r["summary"].items():
        assert 0.0 <= s["final_accuracy"] <= 1.0, kappa
        for top1 in s["recovery_top1"].values():  # read from the committed attack study
            assert 0.0 <= top1 <= 1.0
    assert r["summary"]["0.0"]["accuracy_points_vs_first"] == 0.0


def test_scale_quick(tmp_path: Path) -> None:
    r = _run_quick("scale.py", tmp_path / "scale.json")
    _check_machine(r)
    assert r["params"]["quick"] is True
    devices, sessions = r["devices"], r["sessions"]
    assert [row["devices"] for row in devices["rows"]] == devices["params"]["devices"] == [4, 8]
    assert devices["reference"]["devices"] == 1
    for row, sample in zip(devices["rows"], devices["samples"], strict=True):
        # measured after every device stepped: one AdamW state per device adapter tensor
        assert sample["adam_param_states_devices"] == row["devices"] * sample["device_keys"]
        assert row["rss_mib"] > 0
        assert row["mib_per_device"] > 0
        assert 1 <= row["rounds_timed"] == len(sample["round_s"]) <= devices["params"]["rounds"]
        assert row["s_per_round"] > 0
        assert row["s_per_device_step"] == pytest.approx(row["s_per_round"] / row["devices"])
    assert [level["clients"] for level in sessions["levels"]] == sessions["params"]["clients"] == [1, 4]
    for level in sessions["levels"]:
        assert level["errors"] == 0, level["client_errors"]
        assert level["client_errors"] == []
        assert set(level["status_counts"]) == {"200"}
        # one session open + forward and backward per warm-up and timed step, per client
        steps = sessions["params"]["warmup_steps"] + sessions["params"]["steps_per_client"]
        assert level["requests"] == level["clients"] * (1 + 2 * steps)
        assert level["steps"] == level["clients"] * sessions["params"]["steps_per_client"]
        assert 0 < level["step_ms"]["p50"] <= level["step_ms"]["p99"]
        assert 0 < level["http_ms"]["p50"] < level["step_ms"]["max"]
        assert level["steps_per_s"] > 0
    report = r["report"]
    assert {t["title"] for t in report["tables"]} == {
        "Devices simulated in one process",
        "Concurrent split sessions on one edge",
    }
    for figure in report["figures"]:
        assert (tmp_path / figure["file"]).stat().st_size > 0  # the PNG was written next to the JSON


# ---------------------------------------------------------------- decoder LLM and GPU studies

DECODER_PHASES = {
    "head_fwd",
    "cut_fwd_codec",
    "body_fwd",
    "tail_fwd",
    "loss_tail_bwd",
    "cut_bwd_codec",
    "body_bwd",
    "body_opt",
    "head_bwd",
    "device_opt",
}
GPU_NO_CUDA = "no CUDA device: bench/gpu.py measures GPU throughput only"


@pytest.fixture(scope="module")
def decoder_llm(results_dir: Path) -> dict[str, Any]:
    return _run_quick_one_thread("decoder_llm.py", results_dir / "decoder_llm.json")


def test_decoder_llm_quick(decoder_llm: dict[str, Any], results_dir: Path) -> None:
    from elsa.runtime.report import parse_study_report

    r = decoder_llm
    _check_machine(r)
    p, s = r["params"], r["summary"]
    assert p["quick"] is True
    assert len(r["steps"]) == p["steps"] >= 4
    losses = [step["loss"] for step in r["steps"]]
    assert all(math.isfinite(x) and x > 0 for x in losses)
    before, after = s["held_out_before"], s["held_out_after"]
    assert before["examples"] == after["examples"] == p["eval_examples"]
    assert math.isfinite(before["loss"]) and math.isfinite(after["loss"])
    # training lowers the answer loss: per step (first vs last quarter) or on the held-out set
    assert s["loss_last_quarter_mean"] < s["loss_first_quarter_mean"] or after["loss"] < before["loss"]
    for kind in ("label", "headline"):
        assert before["per_kind"][kind]["answer_tokens"] > 0
    for step in r["steps"]:
        phases = step["phases_ms"]
        assert set(phases) == DECODER_PHASES
        assert all(math.isfinite(v) for v in phases.values())
        for part in ("head_fwd", "body_fwd", "tail_fwd", "loss_tail_bwd", "body_bwd", "head_bwd"):
            assert phases[part] > 0, part
        assert sum(phases.values()) == pytest.approx(step["step_ms"], rel=1e-6)  # the phases cut the step
        assert 0 < step["answer_tokens"] < step["real_tokens"] <= p["batch_size"] * p["seq_len"]
    assert set(s["phases_median_ms"]) == DECODER_PHASES
    assert s["token_positions_per_s"] > 0
    assert r["wire_bytes_per_step"]["activations"] > 0 and r["wire_bytes_per_step"]["gradients"] > 0
    study = parse_study_report(r["report"])  # the dict `elsa report` renders
    assert [f.file for f in study.figures] == ["decoder_llm_loss.png"]
    assert (results_dir / "decoder_llm_loss.png").stat().st_size > 0


def _run_gpu_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / "gpu.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )


def test_gpu_cpu_smoke_quick(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    done = _run_gpu_script("--device", "cpu", "--quick", "--threads", "1", "--out", str(out))
    assert done.returncode == 0, f"gpu.py failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert "NOT a GPU measurement" in done.stdout
    r: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    _check_machine(r)
    assert r["gpu_measurement"] is False
    assert "NOT a GPU measurement" in r["measurement"]
    assert r["device"]["type"] == "cpu"
    assert list(r["models"]) == ["tiny-llama"]
    m = r["models"]["tiny-llama"]
    mono, split = m["results"]["monolithic"], m["results"]["split_http"]
    assert len(m["samples_ms_per_step"]["split_http"]) == r["params"]["repeats"] == 2
    assert mono["median_ms"] > 0 and split["median_ms"] > 0
    assert m["throughput_ratio_split_over_monolithic"] == pytest.approx(
        mono["median_ms"] / split["median_ms"]
    )
    assert m["target"] is None and m["meets_target"] is None
    assert m["cut_tensor_bytes_bf16"] == 2 * m["batch_size"] * m["seq_len"] * m["hidden_size"]
    phases = m["phases_median_ms"]
    for part in ("head_fwd", "tail_fwd", "loss_tail_bwd", "head_bwd_opt", "body_fwd", "body_bwd_opt"):
        assert phases[part] > 0, part
    assert set(m["transfers_median_ms"]) == {"d2h", "encode", "http", "decode", "h2d"}
    assert all(v > 0 for v in m["transfers_median_ms"].values())
    for side in ("fwd", "bwd"):  # both sides of both exchanges are accounted for
        assert phases[f"{side}.edge_compute"] > 0
        assert phases[f"{side}.http"] > 0
    assert all(math.isfinite(x) for losses in m["losses"].values() for x in losses)


def test_gpu_without_cuda_exits_3(tmp_path: Path) -> None:
    import os

    out = tmp_path / "gpu.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no CUDA device, even on a GPU machine
    done = _run_gpu_script("--out", str(out), env=env)
    assert done.returncode == 3, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == GPU_NO_CUDA
    assert not out.exists()


def test_render_readme_decoder_and_missing_gpu(
    results_dir: Path, decoder_llm: dict[str, Any], tmp_path: Path
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    shutil.copy(results_dir / "decoder_llm.json", results / "decoder_llm.json")  # and no gpu.json
    text = _render_readme(results, tmp_path)
    block = _results_block(text, "decoder_llm")
    assert "bench/results/decoder_llm.json" in block
    assert f"**{decoder_llm['summary']['held_out_after']['loss']:.3f}**" in block
    gpu = _results_block(text, "gpu")
    assert "not measured on this machine" in gpu.lower()


# -- the comparison studies (strategies as configs of one engine) -------------------------------


def _study_quick(script: str, out: Path) -> dict[str, Any]:
    record = _run_quick(script, out)
    _check_machine(record)
    assert out.with_suffix(".partial.jsonl").exists() is False  # dropped once the JSON is written
    for figure in record["report"]["figures"]:
        png = out.parent / figure["file"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    for run in record["runs"]:
        rounds = run["rounds"]
        assert rounds[0]["round"] == 0 and len(rounds) >= 2
        assert all(r["accuracy"] is not None and 0.0 <= r["accuracy"] <= 1.0 for r in rounds)
        assert run["optimizer_steps"] == record["runs"][0]["optimizer_steps"]  # same step budget
    return record


def _runs_by_strategy(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {run["meta"]["strategy"]: run for run in record["runs"]}


def test_accuracy_study_quick(tmp_path: Path) -> None:
    record = _study_quick("accuracy.py", tmp_path / "accuracy.json")
    runs = _runs_by_strategy(record)
    assert sorted(runs) == ["centralized", "elsa"]
    assert runs["centralized"]["meta"]["alpha"] == "pooled"
    rows = record["report"]["tables"][0]["rows"]
    assert [row[2] for row in rows] == ["centralized", "elsa"]


def test_communication_study_quick(tmp_path: Path) -> None:
    record = _study_quick("communication.py", tmp_path / "communication.json")
    runs = _runs_by_strategy(record)
    fedavg, elsa = runs["fedavg"]["rounds"][1:], runs["elsa"]["rounds"][1:]
    # no split: no cut tensors; one tier: no edge-cloud bytes
    assert all(r["bytes"].get("activations", 0) == 0 and r["tiers"]["edge-cloud"] == 0 for r in fedavg)
    assert all(r["bytes"]["activations"] > 0 and r["tiers"]["edge-cloud"] > 0 for r in elsa)
    assert all(r["tiers"]["total"] == sum(v for k, v in r["tiers"].items() if k != "total") for r in elsa)


def test_robustness_study_quick(tmp_path: Path) -> None:
    record = _study_quick("robustness.py", tmp_path / "robustness.json")
    scenarios = {(r["meta"]["strategy"], r["meta"]["scenario"]) for r in record["runs"]}
    assert scenarios == {
        (s, c) for s in ("fedavg", "elsa") for c in ("clean", "label-flip", "noise", "dropout")
    }
    assert record["params"]["hostile"]  # a quarter of the devices
    dropout = [r for r in record["runs"] if r["meta"]["scenario"] == "dropout"]
    assert all(r["rounds"][k]["participants"] >= 1 for r in dropout for k in (1, 2))


def test_ablation_study_quick(tmp_path: Path) -> None:
    record = _study_quick("ablations.py", tmp_path / "ablations.json")
    runs = _runs_by_strategy(record)
    assert sorted(runs) == ["elsa", "elsa-no-sketch"]
    # exact tables cost more adapter bytes than sketches
    assert (
        runs["elsa-no-sketch"]["rounds"][-1]["bytes"]["adapters_device_to_edge"]
        > (runs["elsa"]["rounds"][-1]["bytes"]["adapters_device_to_edge"])
    )
