"""Benchmark: split LoRA fine-tuning of the decoder LLM SmolLM2-135M with a causal-LM loss (DESIGN §4, §7).

The packaged SmolLM2-135M-Instruct (LLaMA, 30 blocks, d = 576, dequantised from its GGUF once)
is fine-tuned with LoRA through the project's split-training machinery: ``SplitModel`` cuts it
into device head / edge body / device tail, a ``DeviceStepper`` drives each step through an
``InMemoryCutLink`` (every cut tensor encoded and decoded with the msgpack wire codec, both ways)
to an ``EdgeStepper`` that owns the body adapter, each side with its own AdamW. No monolithic
training loop is involved.

Data: instruction-style examples built from BBC News by :mod:`elsa.data.instructions` —
"Give the topic of this article." (answer: the label name) and "Write a headline for this
article." (answer: the article's title, input: the article without it) — on a stratified
train/held-out split of the articles. The loss is the causal-LM cross-entropy on the answer
tokens and the end-of-sequence token only (prompt and padding are masked out). Every batch is
padded to the same ``--seq-len``, so every step does the same work.

Reported: the training loss of every step; the loss (and teacher-forced answer-token accuracy)
on held-out examples before and after training, per instruction kind; the time of every step
cut into phases by timing hooks (head forward, cut codec, body forward, tail forward, loss +
tail backward, body backward, body optimizer, head backward, device optimizer; they sum to the
step), with medians over the steps after ``--warmup``; tokens per second; the bytes on the wire.
The held-out evaluation runs through the same split path (``DeviceStepper.predict``).

Usage: ``python bench/decoder_llm.py [--quick] [--steps N] [--batch-size B] [--seq-len S]
[--threads T] [--out bench/results/decoder_llm.json]``; the loss curve is written next to the
JSON as ``<stem>_loss.png``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.nn import functional as F

from benchkit import machine_info, median, print_table, quartiles, run_study, set_torch_threads, study_parser
from elsa.data import load_bbc_news, train_test_split
from elsa.data.instructions import (
    IGNORE_INDEX,
    InstructionExample,
    encode_instructions,
    headline_instructions,
    label_instructions,
)
from elsa.model.loading import load_task_model
from elsa.model.packaged import smollm2_dir
from elsa.model.split import SplitModel
from elsa.model.training import Batch, CutLink, DeviceStepper, EdgeStepper
from elsa.params import LoraParams, SplitParams, TrainParams, TransportParams, WireDType
from elsa.runtime.transport import ByteCounter, InMemoryCutLink
from steptiming import CUT_PHASES, Marks, StampedLink, segment_stamps

NAME = "decoder_llm"
MODEL = "SmolLM2-135M-Instruct (packaged GGUF, dequantised to fp32)"
#: the rest of the split step after CUT_PHASES, cut at the optimizer steps: phase -> (start, end stamp)
BACKWARD_SPANS = {
    "body_bwd": ("edge_b0", "edge_opt0"),
    "body_opt": ("edge_opt0", "edge_b1"),
    "head_bwd": ("link_b1", "dev_opt0"),
    "device_opt": ("dev_opt0", "t1"),
}
PHASES = (*CUT_PHASES, *BACKWARD_SPANS)
#: per-segment view of the phases: which phases make up each part of a step
SEGMENTS: dict[str, tuple[str, ...]] = {
    "head fwd + bwd (device)": ("head_fwd", "head_bwd"),
    "body fwd + bwd (edge)": ("body_fwd", "body_bwd"),
    "tail + loss fwd + bwd (device)": ("tail_fwd", "loss_tail_bwd"),
    "codec (4 messages)": ("cut_fwd_codec", "cut_bwd_codec"),
    "optimizer (device + edge)": ("device_opt", "body_opt"),
}
KINDS = ("label", "headline")


# ------------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class Encoded:
    """Tokenised instruction examples (N x S int64 each) and each row's instruction kind."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    kinds: tuple[str, ...]

    def batch(self, rows: slice) -> Batch:
        """Rows ``rows`` as a training batch (views, not copies)."""
        return Batch(self.input_ids[rows], self.attention_mask[rows], self.labels[rows])


def instruction_sets(
    train_count: int, eval_count: int, input_words: int, seed: int
) -> tuple[list[InstructionExample], list[InstructionExample]]:
    """(training examples in step order, held-out examples), from disjoint BBC News articles.

    Both kinds are pooled and shuffled with ``numpy.random.default_rng(seed)``; the held-out set
    holds ``eval_count // 2`` examples of each kind, from the test articles.
    """
    train_ds, test_ds = train_test_split(load_bbc_news(), 0.2, seed)
    rng = np.random.default_rng(seed)
    pool = [*label_instructions(train_ds, input_words=input_words)]
    pool += headline_instructions(train_ds, input_words=input_words)
    order = rng.permutation(len(pool))
    train = [pool[int(i)] for i in order[: min(train_count, len(pool))]]
    held_out: list[InstructionExample] = []
    for examples in (
        label_instructions(test_ds, input_words=input_words),
        headline_instructions(test_ds, input_words=input_words),
    ):
        chosen = np.sort(rng.choice(len(examples), size=eval_count // 2, replace=False))
        held_out += [examples[int(i)] for i in chosen]
    return train, held_out


def encode(tokenizer: Any, examples: Sequence[InstructionExample], seq_len: int) -> Encoded:
    """Tokenise ``examples`` (answer-only labels, right padding to ``seq_len``)."""
    ids, mask, labels = encode_instructions(tokenizer, examples, seq_len)
    return Encoded(ids, mask, labels, tuple(e.kind for e in examples))


# ------------------------------------------------------------------------------- evaluation


def held_out_metrics(device: DeviceStepper, link: CutLink, data: Encoded, batch_size: int) -> dict[str, Any]:
    """Answer-token loss and teacher-forced accuracy on ``data`` through the split model.

    Token-weighted means over every answer token, overall and per instruction kind.
    """
    nll = {k: 0.0 for k in KINDS}
    correct = {k: 0 for k in KINDS}
    tokens = {k: 0 for k in KINDS}
    for start in range(0, len(data.kinds), batch_size):
        rows = slice(start, start + batch_size)
        batch = data.batch(rows)
        logits = device.predict(batch, link, stream=None)[:, :-1, :].float()
        target = batch.labels[:, 1:]
        losses = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="none")
        scored = target != IGNORE_INDEX
        hits = (logits.argmax(dim=-1) == target) & scored
        for i, kind in enumerate(data.kinds[rows]):
            nll[kind] += float(losses[i][scored[i]].sum())
            correct[kind] += int(hits[i].sum())
            tokens[kind] += int(scored[i].sum())
    total = sum(tokens.values())
    return {
        "loss": sum(nll.values()) / total,
        "token_accuracy": sum(correct.values()) / total,
        "answer_tokens": total,
        "examples": len(data.kinds),
        "per_kind": {
            k: {
                "loss": nll[k] / tokens[k] if tokens[k] else None,
                "token_accuracy": correct[k] / tokens[k] if tokens[k] else None,
                "answer_tokens": tokens[k],
                "examples": data.kinds.count(k),
            }
            for k in KINDS
        },
    }


# ------------------------------------------------------------------------------------ driver


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load SmolLM2, train ``args.steps`` split steps, evaluate before/after; the result record."""
    if args.quick:
        args.steps, args.batch_size, args.seq_len, args.eval_examples, args.warmup = 6, 2, 64, 8, 1
    threads = set_torch_threads(args.threads)
    wire: WireDType = args.wire_dtype
    started = time.perf_counter()
    task_model = load_task_model(smollm2_dir(), "causal_lm", lora=LoraParams(), seed=args.seed)
    if task_model.tokenizer is None:
        raise SystemExit("the packaged SmolLM2 directory has no tokenizer")
    load_s = time.perf_counter() - started
    split_model = SplitModel(task_model)
    split = SplitParams(args.head_blocks, args.tail_blocks)
    segments = split_model.segments(split)
    state = split_model.initial_state()
    train_params = TrainParams(
        learning_rate=args.learning_rate, batch_size=args.batch_size, max_length=args.seq_len
    )

    train_examples, eval_examples = instruction_sets(
        args.steps * args.batch_size, args.eval_examples, args.input_words, args.seed
    )
    train = encode(task_model.tokenizer, train_examples, args.seq_len)
    held_out = encode(task_model.tokenizer, eval_examples, args.seq_len)
    steps = len(train.kinds) // args.batch_size

    marks = Marks()
    device = DeviceStepper.create(segments.head, segments.tail, state, train_params)
    edge_stepper = EdgeStepper.create(segments.body, state, train_params)
    counter = ByteCounter()
    edge = StampedLink(edge_stepper, marks, "edge")
    link = StampedLink(InMemoryCutLink("bench", edge, TransportParams(dtype=wire), counter), marks, "link")
    device.optimizer.register_step_pre_hook(marks.hook("dev_opt0"))
    edge_stepper.optimizer.register_step_pre_hook(marks.hook("edge_opt0"))

    eval_started = time.perf_counter()
    before = held_out_metrics(device, link, held_out, args.batch_size)
    eval_s = time.perf_counter() - eval_started
    counter.snapshot_and_reset()
    print(f"held-out loss before training: {before['loss']:.3f} ({eval_s:.1f} s)", flush=True)

    step_records: list[dict[str, Any]] = []
    wire_bytes: list[dict[str, int]] = []
    with segment_stamps(marks, segments.head, segments.tail):
        for i in range(steps):
            batch = train.batch(slice(i * args.batch_size, (i + 1) * args.batch_size))
            cpu0 = time.process_time()
            marks("t0")
            loss = device.step(i, batch, link)
            marks("t1")
            cpu_ms = (time.process_time() - cpu0) * 1e3
            phases = marks.phases_ms(BACKWARD_SPANS)
            wire_bytes.append(counter.snapshot_and_reset())
            record = {
                "step": i + 1,
                "loss": loss,
                "step_ms": (marks.t["t1"] - marks.t["t0"]) * 1e3,
                "cpu_ms": cpu_ms,
                "real_tokens": int(batch.attention_mask.sum()),
                "answer_tokens": int((batch.labels[:, 1:] != IGNORE_INDEX).sum()),
                "phases_ms": phases,
            }
            step_records.append(record)
            print(f"step {i + 1}/{steps}: loss {loss:.3f}, {record['step_ms']:.0f} ms", flush=True)
        after = held_out_metrics(device, link, held_out, args.batch_size)
    print(f"held-out loss after training: {after['loss']:.3f}", flush=True)

    timed = step_records[args.warmup :] or step_records
    step_ms = [r["step_ms"] for r in timed]
    q1, q3 = quartiles(step_ms)
    phase_median = {p: median([r["phases_ms"][p] for r in timed]) for p in PHASES}
    positions = args.batch_size * args.seq_len
    losses = [r["loss"] for r in step_records]
    quarter = max(len(losses) // 4, 1)
    total_s = sum(step_ms) / 1e3
    return {
        "benchmark": NAME,
        "description": "SmolLM2-135M split LoRA fine-tuning, causal-LM loss on BBC News instructions",
        "machine": machine_info(),
        "params": {
            "model": MODEL,
            "task": "causal_lm (loss on answer tokens + EOS only)",
            "dataset": "bbc_news instructions (topic label, headline), 80/20 article split",
            "lora": {"rank": task_model.lora.rank, "alpha": task_model.lora.alpha},
            "split": {"head_blocks": split.head_blocks, "tail_blocks": split.tail_blocks},
            "num_blocks": split_model.num_blocks,
            "wire_dtype": wire,
            "optimizer": "AdamW per side (device head+tail, edge body)",
            "learning_rate": args.learning_rate,
            "batch_size": args.batch_size,
            "seq_len": args.seq_len,
            "steps": steps,
            "warmup_steps_excluded_from_timing": args.warmup,
            "input_words": args.input_words,
            "eval_examples": len(held_out.kinds),
            "train_examples_by_kind": {k: train.kinds.count(k) for k in KINDS},
            "seed": args.seed,
            "threads": threads,
            "quick": args.quick,
        },
        "model_load_s": load_s,
        "eval_s": eval_s,
        "steps": step_records,
        "wire_bytes_per_step": wire_bytes[-1] if wire_bytes else {},
        "summary": {
            "loss_first": losses[0],
            "loss_last": losses[-1],
            "loss_first_quarter_mean": float(np.mean(losses[:quarter])),
            "loss_last_quarter_mean": float(np.mean(losses[-quarter:])),
            "held_out_before": before,
            "held_out_after": after,
            "held_out_loss_drop": before["loss"] - after["loss"],
            "step_ms_median": median(step_ms),
            "step_ms_q1": q1,
            "step_ms_q3": q3,
            "cpu_ms_median": median([r["cpu_ms"] for r in timed]),
            "phases_median_ms": phase_median,
            "segments_median_ms": {s: sum(phase_median[p] for p in ps) for s, ps in SEGMENTS.items()},
            "token_positions_per_s": positions / (median(step_ms) / 1e3),
            "real_tokens_per_s": sum(r["real_tokens"] for r in timed) / total_s,
            "real_token_fraction": sum(r["real_tokens"] for r in timed) / (positions * len(timed)),
            "train_wall_s": sum(r["step_ms"] for r in step_records) / 1e3,
        },
        "report": {},  # filled by finish() once the figure is written
    }


# --------------------------------------------------------------------------------- reporting


def plot_loss(record: dict[str, Any], path: Path) -> Path:
    """PNG of the training loss per step and the held-out loss before/after (matplotlib Agg)."""
    s = record["summary"]
    steps = [r["step"] for r in record["steps"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(
        steps, [r["loss"] for r in record["steps"]], marker="o", markersize=3, label="training batch loss"
    )
    ax.plot(
        [0, steps[-1]],
        [s["held_out_before"]["loss"], s["held_out_after"]["loss"]],
        "s",
        markersize=8,
        label=f"held-out loss before / after ({s['held_out_before']['examples']} examples)",
    )
    p = record["params"]
    ax.set_title(f"SmolLM2-135M split LoRA, batch {p['batch_size']} x {p['seq_len']}: answer-token loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats / answer token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def study_report(record: dict[str, Any], figure_file: str) -> dict[str, Any]:
    """The ``"report"`` dict that ``elsa report`` renders (tables + the loss figure)."""
    p, s = record["params"], record["summary"]
    before, after = s["held_out_before"], s["held_out_after"]
    phases = s["phases_median_ms"]
    step = s["step_ms_median"]
    summary_rows: list[list[Any]] = [
        ["held-out loss (all answers)", before["loss"], after["loss"]],
        ["held-out answer-token accuracy", before["token_accuracy"], after["token_accuracy"]],
    ]
    for kind in KINDS:
        b, a = before["per_kind"][kind], after["per_kind"][kind]
        summary_rows.append([f"held-out loss ({kind})", b["loss"], a["loss"]])
        summary_rows.append([f"held-out token accuracy ({kind})", b["token_accuracy"], a["token_accuracy"]])
    summary_rows.append(
        [
            "training loss (mean of first / last quarter of steps)",
            s["loss_first_quarter_mean"],
            s["loss_last_quarter_mean"],
        ]
    )
    timing_rows: list[list[Any]] = [[name, phases[name], 100 * phases[name] / step] for name in PHASES]
    timing_rows.append(["sum of phase medians", sum(phases.values()), 100 * sum(phases.values()) / step])
    timing_rows += [[f"= {name}", ms, 100 * ms / step] for name, ms in s["segments_median_ms"].items()]
    timing_rows += [
        ["step (median)", step, 100.0],
        ["token positions / s", s["token_positions_per_s"], None],
        ["real (non-pad) tokens / s", s["real_tokens_per_s"], None],
    ]
    return {
        "title": "Decoder LLM: SmolLM2-135M split LoRA fine-tuning (causal LM)",
        "text": (
            f"{p['model']}, cut h{p['split']['head_blocks']}/t{p['split']['tail_blocks']} of "
            f"{p['num_blocks']} blocks, LoRA rank {p['lora']['rank']}, {p['wire_dtype']} cut tensors through "
            f"the wire codec; {p['steps']} steps of batch {p['batch_size']} x {p['seq_len']} tokens, "
            f"AdamW lr {p['learning_rate']}, {p['threads']} torch thread(s). Loss = causal-LM "
            f"cross-entropy on answer tokens only; held-out = {before['examples']} examples from "
            "unseen articles. Timing: medians over steps after the first "
            f"{p['warmup_steps_excluded_from_timing']}."
        ),
        "tables": [
            {
                "title": "loss before / after training",
                "columns": ["measure", "before", "after"],
                "rows": summary_rows,
            },
            {
                "title": "split step time by phase (median ms)",
                "columns": ["phase", "ms", "% of step"],
                "rows": timing_rows,
            },
        ],
        "figures": [
            {
                "file": figure_file,
                "title": "answer-token loss per step",
                "xlabel": "optimizer step",
                "ylabel": "cross-entropy (nats / answer token)",
                "kind": "line",
                "series": {
                    "training batch loss": {
                        "x": [r["step"] for r in record["steps"]],
                        "y": [r["loss"] for r in record["steps"]],
                        "err": None,
                    },
                    "held-out loss": {
                        "x": [0, record["steps"][-1]["step"]],
                        "y": [before["loss"], after["loss"]],
                        "err": None,
                    },
                },
            }
        ],
    }


def print_report(record: dict[str, Any]) -> None:
    """Loss and timing tables on stdout."""
    report = record["report"]
    for table in report["tables"]:
        rows = [[_cell(v) for v in row] for row in table["rows"]]
        print_table(table["title"], table["columns"], rows)
    losses = " ".join(f"{r['loss']:.2f}" for r in record["steps"])
    print(f"training loss per step: {losses}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3f}"
    return str(value)


def main() -> None:
    parser = study_parser(__doc__, NAME, "smoke run: 6 steps of batch 2 x 64 tokens, 8 held-out examples")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--eval-examples", type=int, default=32, help="held-out examples (half of each kind)")
    parser.add_argument("--input-words", type=int, default=64, help="article words in each prompt")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--wire-dtype", choices=["fp32", "fp16", "bf16"], default="fp16")
    parser.add_argument("--head-blocks", type=int, default=1)
    parser.add_argument("--tail-blocks", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing medians")
    parser.add_argument("--seed", type=int, default=0)

    def run_and_plot(args: argparse.Namespace) -> dict[str, Any]:
        record = run(args)
        figure = Path(args.out).with_name(f"{Path(args.out).stem}_loss.png")
        print(f"wrote {plot_loss(record, figure)}")
        record["report"] = study_report(record, figure.name)
        if not all(math.isfinite(r["loss"]) for r in record["steps"]):
            print("warning: a training loss is not finite")
        return record

    run_study(parser, run_and_plot, print_report)


if __name__ == "__main__":
    main()
