"""Benchmark: split step time vs monolithic LoRA step time, one process, MiniLM (DESIGN §7.1).

Monolithic = the peft-wrapped MiniLM forward + cross-entropy + backward + AdamW step over its
trainable (LoRA + classifier) parameters. Split = ``DeviceStepper.step`` through an
``InMemoryCutLink`` (every cut tensor round-trips through the msgpack wire codec) to an
``EdgeStepper``, for fp32 and fp16 wire dtypes; cut h=1/t=1 as in the default run. All variants
train on the same fixed batch (random token ids, full attention mask) and run interleaved
(A, B, C, A, B, C ... with the order rotated every repeat); each repeat times ``--steps`` steps.
The throughput ratio is monolithic_ms / split_ms (>= 1 means the split step is as fast; the
target is >= 0.95); the process CPU time per step (all threads) is recorded too, as a figure less
sensitive to other load on a shared machine, and so is the ratio of the fastest repeats (min). A per-phase breakdown of the split step is measured in extra interleaved
variants with timing hooks, so the main timings carry no instrumentation.

Usage: ``python bench/split_overhead.py [--quick] [--repeats N] [--steps S] [--threads T]
[--out bench/results/split_overhead.json]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as hf_logging

from benchkit import (
    RESULTS_DIR,
    machine_info,
    median,
    print_table,
    quartiles,
    set_torch_threads,
    write_results,
)
from elsa.model.loading import TaskModel, load_task_model
from elsa.model.packaged import minilm_dir
from elsa.model.split import Segments, SplitModel
from elsa.model.training import Batch, DeviceStepper, EdgeStepper, make_optimizer, task_loss
from elsa.params import LoraParams, SplitParams, TrainParams, TransportParams, WireDType
from elsa.runtime.transport import ByteCounter, InMemoryCutLink
from steptiming import CUT_PHASES, Marks, StampedLink, segment_stamps

NAME = "split_overhead"
NUM_LABELS = 5
TOKEN_LOW, TOKEN_HIGH = 1000, 20000
WIRE_DTYPES: tuple[WireDType, ...] = ("fp32", "fp16")
#: the rest of the split step after CUT_PHASES: phase -> (start stamp, end stamp)
BACKWARD_SPANS = {"body_bwd_opt": ("edge_b0", "edge_b1"), "head_bwd_opt": ("link_b1", "t1")}
PHASES = (*CUT_PHASES, *BACKWARD_SPANS)

StepFn = Callable[[int], float]


def make_batch(batch_size: int, seq_len: int, seed: int) -> Batch:
    """Random ids in [TOKEN_LOW, TOKEN_HIGH), full mask, labels in [0, NUM_LABELS), from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(TOKEN_LOW, TOKEN_HIGH, (batch_size, seq_len), generator=gen)
    labels = torch.randint(0, NUM_LABELS, (batch_size,), generator=gen)
    return Batch(ids, torch.ones_like(ids), labels)


def monolithic_step_fn(task_model: TaskModel, batch: Batch, train: TrainParams) -> StepFn:
    """One stock peft step: forward, CE loss, backward, AdamW over the trainable parameters."""
    model = task_model.peft_model
    params: list[torch.Tensor] = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, train)

    def step(_i: int) -> float:
        optimizer.zero_grad(set_to_none=True)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        loss = task_loss(task_model.task, logits, batch.labels)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        return float(loss.detach())

    return step


def split_step_fn(
    segments: Segments, state: dict[str, torch.Tensor], batch: Batch, train: TrainParams, dtype: WireDType
) -> tuple[StepFn, ByteCounter]:
    """One split step through an in-memory, codec-round-tripping link; returns (step, byte counter)."""
    device = DeviceStepper.create(segments.head, segments.tail, state, train)
    edge = EdgeStepper.create(segments.body, state, train)
    counter = ByteCounter()
    link = InMemoryCutLink("bench", edge, TransportParams(dtype=dtype), counter)

    def step(i: int) -> float:
        return device.step(i, batch, link)

    return step, counter


# ------------------------------------------------------------------------------ phase breakdown


def phased_split_runner(
    segments: Segments, state: dict[str, torch.Tensor], batch: Batch, train: TrainParams, dtype: WireDType
) -> Callable[[int, int], list[dict[str, float]]]:
    """A runner of ``n`` instrumented split steps returning each step's phase times (ms).

    Forward hooks on the shared head/tail segments exist only while the runner runs.
    """
    marks = Marks()
    device = DeviceStepper.create(segments.head, segments.tail, state, train)
    edge = StampedLink(EdgeStepper.create(segments.body, state, train), marks, "edge")
    link = StampedLink(
        InMemoryCutLink("bench", edge, TransportParams(dtype=dtype), ByteCounter()), marks, "link"
    )

    def run(first: int, n: int) -> list[dict[str, float]]:
        out = []
        with segment_stamps(marks, segments.head, segments.tail):
            for i in range(first, first + n):
                marks("t0")
                device.step(i, batch, link)
                marks("t1")
                out.append(marks.phases_ms(BACKWARD_SPANS))
        return out

    return run


# ------------------------------------------------------------------------------------- driver


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load MiniLM, warm every variant up, time interleaved repeats; returns the result record."""
    threads = set_torch_threads(args.threads)
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    train = TrainParams()
    task_model = load_task_model(
        minilm_dir(), "classification", num_labels=NUM_LABELS, lora=LoraParams(), seed=0
    )
    task_model.peft_model.eval()  # no dropout: every variant computes the same function
    split_model = SplitModel(task_model)
    split = SplitParams(1, 1)
    segments = split_model.segments(split)
    state = split_model.initial_state()
    batch = make_batch(args.batch_size, args.seq_len, args.seed)

    timed: dict[str, StepFn] = {"monolithic": monolithic_step_fn(task_model, batch, train)}
    counters: dict[str, ByteCounter] = {}
    for dtype in WIRE_DTYPES:
        timed[f"split_{dtype}"], counters[dtype] = split_step_fn(segments, state, batch, train, dtype)
    phased = {
        f"split_{dtype}": phased_split_runner(segments, state, batch, train, dtype) for dtype in WIRE_DTYPES
    }

    step_index = 0
    for fn in timed.values():
        for _ in range(args.warmup):
            fn(step_index)
            step_index += 1
    for runner in phased.values():
        runner(step_index, args.warmup)
        step_index += args.warmup
    wire_bytes = {dtype: sum(c.snapshot_and_reset().values()) // args.warmup for dtype, c in counters.items()}

    names = [*timed, *(f"{n}_phases" for n in phased)]
    samples: dict[str, list[float]] = {name: [] for name in timed}
    cpu_samples: dict[str, list[float]] = {name: [] for name in timed}
    phase_samples: dict[str, dict[str, list[float]]] = {n: {p: [] for p in PHASES} for n in phased}
    for rep in range(args.repeats):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            if name in timed:
                fn = timed[name]
                start, cpu_start = time.perf_counter(), time.process_time()
                for _ in range(args.steps):
                    fn(step_index)
                    step_index += 1
                samples[name].append((time.perf_counter() - start) * 1e3 / args.steps)
                cpu_samples[name].append((time.process_time() - cpu_start) * 1e3 / args.steps)
            else:
                variant = name.removesuffix("_phases")
                for step_phases in phased[variant](step_index, args.phase_steps):
                    for phase, ms in step_phases.items():
                        phase_samples[variant][phase].append(ms)
                step_index += args.phase_steps
        print(f"repeat {rep + 1}/{args.repeats}: " + ", ".join(f"{n} {samples[n][-1]:.0f} ms" for n in timed))

    mono = samples["monolithic"]
    results: dict[str, dict[str, float]] = {}
    for name, values in samples.items():
        q1, q3 = quartiles(values)
        cpu = cpu_samples[name]
        row = {
            "median_ms": median(values),
            "q1_ms": q1,
            "q3_ms": q3,
            "min_ms": min(values),
            "median_cpu_ms": median(cpu),
        }
        if name != "monolithic":
            row["ratio_mono_over_split"] = median(mono) / median(values)
            row["paired_ratio_median"] = median([m / s for m, s in zip(mono, values, strict=True)])
            row["cpu_ratio_mono_over_split"] = median(cpu_samples["monolithic"]) / median(cpu)
            row["min_ratio_mono_over_split"] = min(mono) / min(values)
        results[name] = row
    phases = {
        variant: {phase: median(vals) for phase, vals in per.items()}
        for variant, per in phase_samples.items()
    }
    return {
        "benchmark": NAME,
        "description": "split step time vs monolithic LoRA step time, one process, MiniLM",
        "machine": machine_info(),
        "params": {
            "model": "all-MiniLM-L6-v2 (packaged), 5-class head",
            "lora": {"rank": LoraParams().rank, "alpha": LoraParams().alpha},
            "split": {"head_blocks": split.head_blocks, "tail_blocks": split.tail_blocks},
            "batch_size": args.batch_size,
            "seq_len": args.seq_len,
            "token_ids": [TOKEN_LOW, TOKEN_HIGH],
            "seed": args.seed,
            "learning_rate": train.learning_rate,
            "warmup_steps": args.warmup,
            "repeats": args.repeats,
            "steps_per_repeat": args.steps,
            "phase_steps_per_repeat": args.phase_steps,
            "threads": threads,
            "quick": args.quick,
        },
        "target": {"ratio_mono_over_split_min": 0.95},
        "results": results,
        "wire_bytes_per_step": wire_bytes,
        "phases_median_ms": phases,
        "samples_ms_per_step": samples,
        "samples_cpu_ms_per_step": cpu_samples,
        "phase_samples_ms": phase_samples,
    }


def print_report(record: dict[str, Any]) -> None:
    """Timing and phase tables on stdout."""
    p = record["params"]
    rows = []
    for name, row in record["results"].items():
        ratio = row.get("ratio_mono_over_split")
        rows.append(
            [
                name,
                f"{row['median_ms']:.1f}",
                f"{row['q1_ms']:.1f}-{row['q3_ms']:.1f}",
                "-" if ratio is None else f"{ratio:.3f}",
                "-" if ratio is None else f"{row['paired_ratio_median']:.3f}",
                f"{row['median_cpu_ms']:.1f}",
                "-" if ratio is None else f"{row['cpu_ratio_mono_over_split']:.3f}",
            ]
        )
    print_table(
        f"MiniLM step, batch {p['batch_size']} x {p['seq_len']} tokens, {p['threads']} thread(s), "
        f"{p['repeats']} repeats x {p['steps_per_repeat']} steps",
        [
            "variant",
            "median ms/step",
            "IQR ms",
            "mono/split",
            "paired ratio",
            "CPU ms/step",
            "CPU mono/split",
        ],
        rows,
    )
    phases = record["phases_median_ms"]
    print_table(
        "split step phases (median ms, instrumented runs)",
        ["phase", *phases],
        [[phase, *(f"{phases[v][phase]:.1f}" for v in phases)] for phase in PHASES]
        + [["sum", *(f"{sum(phases[v].values()):.1f}" for v in phases)]],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: batch 4 x 32, 1 warm-up step, 2 repeats of 1 step"
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--steps", type=int, default=2, help="steps timed per repeat")
    parser.add_argument("--phase-steps", type=int, default=1, help="instrumented steps per repeat")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / f"{NAME}.json")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.steps, args.phase_steps, args.warmup = 2, 1, 1, 1
        args.batch_size, args.seq_len = 4, 32
    record = run(args)
    print_report(record)
    print(f"wrote {write_results(args.out, record)}")


if __name__ == "__main__":
    main()
