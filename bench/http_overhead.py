"""Benchmark: split-over-HTTP step throughput vs in-process monolithic LoRA (DESIGN §7.1).

A real cloud and a real edge run as separate processes on loopback (embedded Redis). This
process joins as a device, receives its train task, opens a split session on the edge and times
``DeviceStepper.step`` through ``HttpCutLink`` (frames over HTTP, fp32 or fp16 cut tensors), next
to the monolithic peft-wrapped MiniLM step in this process, interleaved (A, B, A, B ...).
Same batch (16 x 64 random tokens, full mask), same threads on both sides. Also reports the
bytes per step by kind measured from what crossed the wire.

Usage: ``python bench/http_overhead.py [--quick] [--repeats N] [--steps S] [--threads T]``
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as hf_logging

from benchkit import RESULTS_DIR, machine_info, median, print_table, set_torch_threads, write_results
from elsa.infra.http import CloudClient, EdgeClient, HttpCutLink
from elsa.model.loading import load_task_model
from elsa.model.packaged import minilm_dir
from elsa.model.split import SplitModel
from elsa.model.training import Batch, DeviceStepper, make_optimizer, task_loss
from elsa.runtime.config import RunConfig, parse_config
from elsa.runtime.launcher import Operator, plan_demo, running_cluster, start_services, wait_healthy
from elsa.wire.control import JoinRequest, Task

NAME = "http_overhead"


def _config(dtype: str, steps: int) -> RunConfig:
    return parse_config(
        {
            "name": f"bench-{dtype}",
            "topology": {"edges": 1, "devices_per_edge": 1},
            "train": {
                "cloud_rounds": 1,
                "edge_rounds": 1,
                "local_steps": steps,
                "batch_size": 16,
                "max_length": 64,
            },
            "transport": {"dtype": dtype},
        }
    )


def _train_task(cloud: CloudClient, after: int, run_id: str) -> tuple[int, Task]:
    while True:
        after, task = cloud.next_task(after, 20.0)
        if task.kind == "train" and task.run_id == run_id:
            return after, task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / f"{NAME}.json")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.steps = 1, 1
    hf_logging.set_verbosity_error()
    threads = set_torch_threads(args.threads)

    model = SplitModel(load_task_model(minilm_dir(), "classification", num_labels=5, seed=0))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (16, 64), generator=g)
    batch = Batch(ids, torch.ones_like(ids), torch.randint(0, 5, (16,), generator=g))

    peft = model.task_model.peft_model
    mono_opt = make_optimizer(
        [p for p in peft.parameters() if p.requires_grad], _config("fp32", 1).train_params()
    )

    def mono_step() -> None:
        mono_opt.zero_grad(set_to_none=True)
        loss = task_loss(
            "classification",
            peft(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits,
            batch.labels,
        )
        loss.backward()
        mono_opt.step()

    samples: dict[str, list[float]] = {"monolithic": [], "http_fp32": [], "http_fp16": []}
    bytes_per_step: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        base = _config("fp32", 1)
        plan = plan_demo(base, run_dir, None, None)
        overrides = {"edge": {"ELSA_EDGE_TORCH_THREADS": str(threads)}}
        with running_cluster(run_dir) as cluster:
            start_services(cluster, plan, run_dir, overrides, with_devices=False)
            wait_healthy([c.url for c in cluster.children if c.url], 180)
            cloud = CloudClient(plan.cloud_url, timeout_s=120)
            cloud.join(JoinRequest(join_secret=plan.join_secret, role="device", name="device-000"))
            beat = threading.Event()
            threading.Thread(target=cloud.heartbeat_until, args=(beat, 2.0), daemon=True).start()
            operator = Operator(plan.cloud_url, plan.admin_token)
            seq = 0
            links: dict[str, tuple[DeviceStepper, HttpCutLink, EdgeClient]] = {}
            for dtype in ("fp32", "fp16"):
                cfg = _config(dtype, 10_000)
                run_id = operator.create_run(cfg)["run_id"]
                seq, task = _train_task(cloud, seq, run_id)
                assert task.edge_url and task.session_token and task.round
                edge = EdgeClient(task.edge_url, timeout_s=300)
                for _ in range(100):
                    try:
                        sid = edge.open_session(run_id, task.round, "device-000", task.session_token)
                        break
                    except Exception:  # the edge may still be loading the model
                        time.sleep(1.0)
                segs = model.segments(cfg.split_params())
                stepper = DeviceStepper.create(
                    segs.head, segs.tail, model.initial_state(), cfg.train_params()
                )
                links[dtype] = (stepper, HttpCutLink(edge, sid, cfg.transport_params()), edge)
            step_no = {"fp32": 0, "fp16": 0}

            def http_step(dtype: str) -> None:
                stepper, link, _ = links[dtype]
                stepper.step(step_no[dtype], batch, link)
                step_no[dtype] += 1

            for _ in range(2):  # warm-up
                mono_step()
                http_step("fp32")
                http_step("fp16")
            for dtype in ("fp32", "fp16"):
                links[dtype][2].counts.clear()
            for rep in range(args.repeats):
                order = ["monolithic", "http_fp32", "http_fp16"]
                order = order[rep % 3 :] + order[: rep % 3]
                for name in order:
                    t0 = time.perf_counter()
                    for _ in range(args.steps):
                        mono_step() if name == "monolithic" else http_step(name.split("_")[1])
                    samples[name].append((time.perf_counter() - t0) / args.steps * 1000)
            for dtype in ("fp32", "fp16"):
                counts = links[dtype][2].counts
                total_steps = args.repeats * args.steps
                bytes_per_step[dtype] = {k: v / total_steps for k, v in counts.items()}
            beat.set()

    mono = median(samples["monolithic"])
    rows, results = [], {}
    for name in ("monolithic", "http_fp32", "http_fp16"):
        ms = median(samples[name])
        ratio = mono / ms
        results[name] = {
            "median_ms": ms,
            "throughput_ratio_vs_monolithic": ratio,
            "samples_ms": samples[name],
        }
        rows.append([name, f"{ms:.1f}", f"{ratio:.3f}"])
    print_table(
        "split over HTTP vs monolithic (MiniLM, 16 x 64)", ["variant", "ms/step", "throughput ratio"], rows
    )
    byte_rows = [
        [d, *(f"{bytes_per_step[d].get(k, 0) / 1e6:.2f}" for k in ("activations", "gradients"))]
        for d in bytes_per_step
    ]
    print_table(
        "MB per step crossing the wire",
        ["dtype", "activations (fwd req+resp)", "gradients (bwd req+resp)"],
        byte_rows,
    )
    payload: dict[str, Any] = {
        "name": NAME,
        "machine": machine_info(),
        "params": {
            "batch": 16,
            "seq": 64,
            "repeats": args.repeats,
            "steps": args.steps,
            "threads": threads,
            "quick": args.quick,
        },
        "results": results,
        "bytes_per_step": bytes_per_step,
    }
    write_results(args.out, payload)


if __name__ == "__main__":
    main()
