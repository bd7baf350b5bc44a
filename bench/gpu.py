"""Benchmark: split-over-HTTP step throughput ÷ monolithic step throughput on one GPU (DESIGN §7.1).

GPU only: without a CUDA device it prints "no CUDA device: bench/gpu.py measures GPU
throughput only" and exits with status 3. Nothing else in ELSA needs a GPU.

For each model, on the same GPU:

* *monolithic* — the peft-wrapped causal LM: forward, causal-LM loss, backward, AdamW over its
  LoRA parameters (the ``bench/split_overhead.py`` step, on the GPU);
* *split over HTTP* — ``DeviceStepper.step`` (head and tail on the GPU) through an HTTP cut link
  to an edge server *process* on 127.0.0.1 (spawned; uvicorn; the same model built from the
  same seed) whose ``EdgeStepper`` runs the body on the same GPU. Requests go through the
  project's ``EdgeClient`` (httpx, keep-alive, TCP_NODELAY) to
  ``/v1/sessions/{id}/forward|backward``; bodies are the project's raw frame format
  (:mod:`elsa.wire.frames`: a small msgpack header, then each cut tensor as one raw buffer
  frame), as the real edge speaks it. A separate process, not a server thread: on the 2-core
  CPU machine a server thread sharing the device's GIL made a 16.8 MB round trip about 1.6×
  slower than a server process.

Both run under bf16 autocast (fp32 master weights and LoRA adapters), interleaved in repeats
(A, B, A, B ... order rotated every repeat), medians over repeats. The ratio reported is
monolithic ms ÷ split ms (split throughput ÷ monolithic throughput); targets from the issue:
≥ 0.90 for SmolLM2-135M (batch 16 × 256) and ≥ 0.80 for a Llama-1B-shaped model (random init:
hidden 2048, 16 layers, 32 heads, 8 KV heads, intermediate 8192, vocab 128256, tied embeddings;
batch 8 × 512). Cut h1/t1, LoRA rank 8, random token ids, full attention mask.

Why the cut path is built the way it is: monolithic steps take about 116 ms (SmolLM2) and 74 ms
(1B shape) on an H200, and moving one cut tensor GPU → host → GPU costs about 1.3 ms (4.7 MB,
SmolLM2) and 2 ms (16.8 MB, 1B) even pinned and with raw framing; a step moves four. So every cut
tensor is cast to bf16 on the GPU (the wire dtype), copied with ``non_blocking=True`` into a
reused pinned host buffer, framed straight from that buffer (no intermediate ``bytes``), and on
arrival decoded while the body streams in (the frame decoder copies the buffer once), copied
into a pinned buffer and sent to the GPU with ``non_blocking=True``. Received cut
tensors are checked for NaN/Inf on the GPU (``torch.isfinite``) instead of with numpy on the
host (``from_payload`` would scan them on the CPU); shapes and sizes are validated by the frame
decoder and the payload model as usual.

The per-phase breakdown comes from separate instrumented split steps (CUDA synchronised at each
boundary), interleaved with the timed ones: head / tail / body compute, and per transfer the
device→host copy, encode, HTTP (round trip minus the edge's own work, which the edge reports
in a response header), decode and host→device copy, summed over both sides of both exchanges.

What to expect from HTTP: on the busy 2-core CPU machine this was written on (no GPU), the HTTP
part alone (uvicorn with h11, httpx; loopback, separate processes) cost about 16 ms per step
for the four 4.7 MB messages of SmolLM2 and about 56 ms for the four 16.8 MB messages of the 1B
shape, against 1-2 ms each for encode and decode. The pure-Python HTTP/1.1 stacks, not the
copies, are what most threaten the targets; uvicorn uses httptools instead of h11 when it is
installed (``uvicorn[standard]``), which this script then picks up.

``--device cpu --quick`` runs the same code on the CPU with a tiny random Llama (2 steps per
variant) for the smoke test only; its output is labelled as not a GPU measurement and goes to
``bench/results/gpu_cpu_smoke.json`` unless ``--out`` says otherwise.

Usage: ``python bench/gpu.py [--quick] [--repeats R] [--steps S] [--models smollm2 llama-1b]
[--out bench/results/gpu.json]``
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import multiprocessing
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Generic, TypeVar

import httpx
import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from transformers import LlamaConfig, LlamaForCausalLM

from benchkit import (
    RESULTS_DIR,
    machine_info,
    median,
    print_table,
    quartiles,
    quiet_transformers,
    run_study,
    set_torch_threads,
    study_parser,
)
from elsa.errors import DecodeError, NotFoundError, PayloadTooLargeError, TensorError, error_from_code
from elsa.infra.http import EdgeClient
from elsa.infra.web import FRAMES, install_error_handlers
from elsa.model.loading import TaskModel, load_task_model, wrap_with_lora
from elsa.model.packaged import smollm2_dir
from elsa.model.split import SplitModel
from elsa.model.training import Batch, DeviceStepper, EdgeStepper, make_optimizer, task_loss
from elsa.params import LoraParams, SplitParams, TrainParams
from elsa.wire import (
    BackwardRequest,
    BackwardResponse,
    ForwardRequest,
    ForwardResponse,
    FrameDecoder,
    Message,
    TensorPayload,
    encode_frames,
)
from steptiming import Marks, segment_stamps

M = TypeVar("M", bound=Message)

NAME = "gpu"
NO_CUDA_MESSAGE = "no CUDA device: bench/gpu.py measures GPU throughput only"
NO_CUDA_EXIT = 3
CPU_SMOKE_LABEL = "CPU smoke run (--device cpu --quick): NOT a GPU measurement"
TIMING_HEADER = "x-elsa-edge-ms"
MAX_BODY_BYTES = 512 * 2**20
TRANSFERS = ("d2h", "encode", "http", "decode", "h2d")
SPLIT = SplitParams(1, 1)
EDGE_START_S = 600


@dataclass(frozen=True)
class Shape:
    """One model of the study: how to build it, its batch and the throughput target."""

    name: str
    description: str
    batch: int
    seq: int
    target: float | None


SHAPES = {
    "smollm2": Shape("smollm2", "SmolLM2-135M-Instruct (packaged, fp32 weights)", 16, 256, 0.90),
    "llama-1b": Shape("llama-1b", "Llama-1B shape, random init (LlamaConfig)", 8, 512, 0.80),
    "tiny-llama": Shape("tiny-llama", "tiny random Llama (CPU smoke only)", 2, 16, None),
}
LLAMA_1B = {
    "hidden_size": 2048,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 8192,
    "vocab_size": 128256,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
    "rope_theta": 500000.0,
}
TINY_LLAMA = {
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 512,
    "max_position_embeddings": 64,
    "tie_word_embeddings": True,
}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on a GPU; plain fp32 on the CPU (smoke run)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ------------------------------------------------------------------------------ cut transfers


@dataclass
class HostStaging:
    """Reusable host buffers for cut tensors, pinned when the device is a GPU, one per name.

    A buffer is rewritten once per step; every step ends with a synchronising ``float(loss)``,
    so an asynchronous copy out of a buffer has finished before the buffer is written again.
    """

    device: torch.device
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """The buffer ``name`` with this shape and dtype (allocated on first use or change)."""
        buf = self.buffers.get(name)
        if buf is None or tuple(buf.shape) != shape or buf.dtype != dtype:
            buf = torch.empty(shape, dtype=dtype, pin_memory=self.device.type == "cuda")
            self.buffers[name] = buf
        return buf

    def to_host(self, name: str, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``t`` cast on its device to ``dtype`` and copied (non-blocking) into the buffer; waits."""
        buf = self.get(name, tuple(t.shape), dtype)
        buf.copy_(t.detach().to(dtype), non_blocking=True)
        sync(self.device)
        return buf

    def to_device(self, name: str, payload: TensorPayload) -> torch.Tensor:
        """A received bf16/uint8 payload copied once into the buffer, then to the device (async)."""
        if payload.dtype not in WIRE_TYPES:
            raise TensorError(f"cut tensors travel as bfloat16 here, got {payload.dtype}")
        dtype, bits, np_dtype = WIRE_TYPES[payload.dtype]
        buf = self.get(name, tuple(payload.shape), dtype)
        np.copyto(buf.view(bits).numpy(), np.frombuffer(payload.data, dtype=np_dtype).reshape(payload.shape))
        return buf.to(self.device, non_blocking=True)


#: wire dtype name -> (torch dtype, torch dtype of its raw bits, little-endian numpy dtype)
WIRE_TYPES = {
    "bfloat16": (torch.bfloat16, torch.int16, "<i2"),
    "uint8": (torch.uint8, torch.uint8, "|u1"),
}


def host_payload(host: torch.Tensor) -> TensorPayload:
    """A payload over a host buffer's bytes, without copying them.

    ``to_payload`` would copy the buffer into fresh ``bytes``; this payload views the buffer
    instead (built with ``model_construct``: it is our own, consistent tensor; the receiver
    validates what arrives as usual). The buffer must not change until the message is sent.
    Assumes a little-endian host, as the wire format does.
    """
    name = next(n for n, (dtype, _, _) in WIRE_TYPES.items() if dtype == host.dtype)
    bits = host.view(WIRE_TYPES[name][1]).contiguous()
    data = bits.numpy().data.cast("B")
    shape = tuple(int(d) for d in host.shape)
    return TensorPayload.model_construct(dtype=name, shape=shape, data=data)  # type: ignore[arg-type]


def check_finite(t: torch.Tensor, what: str) -> None:
    """TensorError unless every value of ``t`` is finite (checked where ``t`` lives)."""
    if not bool(torch.isfinite(t).all()):
        raise TensorError(f"{what} contains NaN or Inf values")


def frames_body(message: Message) -> bytes:
    """``message`` in the raw frame format as one body (one copy of each tensor buffer)."""
    return b"".join(encode_frames(message))


class FrameReader(Generic[M]):
    """Decodes one frame-format message from body chunks as they arrive; times its own work.

    The project's :class:`~elsa.wire.FrameDecoder` keeps the chunks and copies each tensor buffer
    once when its frame is complete, so nothing joins the whole body first.
    """

    def __init__(self, expected: type[M]) -> None:
        self.expected = expected
        self.decoder = FrameDecoder(
            expected=expected, max_frame_bytes=MAX_BODY_BYTES, max_message_bytes=MAX_BODY_BYTES
        )
        self.messages: list[Message] = []
        self.seconds = 0.0

    def feed(self, chunk: bytes) -> None:
        """Consume the next chunk of the body."""
        started = time.perf_counter()
        self.messages += self.decoder.feed(chunk)
        self.seconds += time.perf_counter() - started

    def message(self) -> M:
        """The body's single message (DecodeError if the body held anything else)."""
        started = time.perf_counter()
        self.decoder.finish()
        self.seconds += time.perf_counter() - started
        got = self.messages
        if len(got) != 1 or not isinstance(got[0], self.expected):
            raise DecodeError(f"expected one {self.expected.kind} message, got {len(got)}")
        return got[0]


# ------------------------------------------------------------------------------------ the edge


@dataclass
class GpuEdgeSession:
    """The edge side of one split session: the body's forward/backward on the device.

    Each call returns the reply body (frames) and the edge's own time per part in ms.
    """

    stepper: EdgeStepper
    device: torch.device
    session_id: str = "bench"
    staging: HostStaging = field(init=False)

    def __post_init__(self) -> None:
        self.staging = HostStaging(self.device)

    def forward(self, request: ForwardRequest) -> tuple[bytes, dict[str, float]]:
        """Lower-cut activations -> upper-cut activations (graph kept for the backward)."""
        started = time.perf_counter()
        lower = self.staging.to_device("fwd_in", request.activations)
        mask = self.staging.to_device("mask_in", request.attention_mask).long()
        check_finite(lower, "activations")

        def reply(upper: TensorPayload) -> Message:
            return ForwardResponse(session_id=self.session_id, step=request.step, activations=upper)

        return self._answer(
            started, lambda: self.stepper.forward(request.step, lower, mask), "fwd_out", reply
        )

    def backward(self, request: BackwardRequest) -> tuple[bytes, dict[str, float]]:
        """Upper-cut gradient -> lower-cut gradient; steps the body's optimizer."""
        started = time.perf_counter()
        grad = self.staging.to_device("bwd_in", request.grad)
        check_finite(grad, "gradient")

        def reply(lower_grad: TensorPayload) -> Message:
            return BackwardResponse(session_id=self.session_id, step=request.step, grad=lower_grad)

        return self._answer(started, lambda: self.stepper.backward(request.step, grad), "bwd_out", reply)

    def _answer(
        self,
        started: float,
        compute: Callable[[], torch.Tensor],
        out_buffer: str,
        reply: Callable[[TensorPayload], Message],
    ) -> tuple[bytes, dict[str, float]]:
        """Run ``compute`` (autocast, synchronised), copy its result to the host as bf16 and frame
        ``reply`` to it; the body and the ms of each part since ``started`` (the input's arrival)."""
        marks = [started, time.perf_counter()]
        with autocast(self.device):
            out = compute()
        sync(self.device)
        marks.append(time.perf_counter())
        host = self.staging.to_host(out_buffer, out, torch.bfloat16)
        marks.append(time.perf_counter())
        body = frames_body(reply(host_payload(host)))
        marks.append(time.perf_counter())
        return body, _spans(marks, ("h2d", "compute", "d2h", "encode"))


def _spans(marks: list[float], names: tuple[str, ...]) -> dict[str, float]:
    return {name: (b - a) * 1e3 for name, a, b in zip(names, marks[:-1], marks[1:], strict=True)}


def edge_app(session: GpuEdgeSession) -> FastAPI:
    """A FastAPI app serving the session's frame endpoints (the real edge's paths and format).

    The request body is decoded while it streams in; the edge's own time per part (decode,
    host→device, compute, device→host, encode) goes back in the ``x-elsa-edge-ms`` header.
    """
    app = FastAPI(title="bench GPU edge")
    install_error_handlers(app)

    @app.get("/v1/ping")
    def ping() -> dict[str, bool]:
        return {"ok": True}

    async def read(request: Request, reader: FrameReader[M]) -> M:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise PayloadTooLargeError(f"body of {declared} bytes exceeds the limit of {MAX_BODY_BYTES}")
        async for chunk in request.stream():
            reader.feed(chunk)
        return reader.message()

    def check(session_id: str) -> None:
        if session_id != session.session_id:
            raise NotFoundError(f"no session {session_id}")

    def reply(out: bytes, spans: dict[str, float], reader: FrameReader[Any]) -> Response:
        spans = {"decode": reader.seconds * 1e3, **spans}
        return Response(content=out, media_type=FRAMES, headers={TIMING_HEADER: json.dumps(spans)})

    def route(kind: str, message: type[M], handle: Callable[[M], tuple[bytes, dict[str, float]]]) -> None:
        @app.post(f"/v1/sessions/{{session_id}}/{kind}", name=kind)
        async def exchange(session_id: str, request: Request) -> Response:
            check(session_id)
            reader = FrameReader(message)
            out, spans = handle(await read(request, reader))
            return reply(out, spans, reader)

    route("forward", ForwardRequest, session.forward)
    route("backward", BackwardRequest, session.backward)
    return app


def edge_main(shape_name: str, device_name: str, seed: int, threads: int, port_to: Connection) -> None:
    """The edge process: build the same model, serve its body on 127.0.0.1 until terminated.

    Sends the port it listens on through ``port_to``. The model is built from the same seed as
    the device's, so the body's frozen weights and initial adapter are the device's.
    """
    torch.set_num_threads(threads)
    quiet_transformers()
    device = torch.device(device_name)
    split_model = SplitModel(build_task_model(SHAPES[shape_name], device, seed))
    body = split_model.segments(SPLIT).body
    session = GpuEdgeSession(EdgeStepper.create(body, split_model.initial_state(), TrainParams()), device)
    # proto IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says so, and without it every request stalls ~40 ms (Nagle + delayed ACK)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port_to.send(sock.getsockname()[1])
    port_to.close()
    # uvicorn picks httptools for HTTP/1.1 when it is installed (uvicorn[standard]), else h11
    config = uvicorn.Config(edge_app(session), log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


@contextlib.contextmanager
def edge_process(shape: Shape, device: torch.device, seed: int, threads: int) -> Iterator[str]:
    """A spawned edge server process for ``shape`` on ``device``; yields its base URL once it
    answers, and stops it afterwards."""
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    receive, send = context.Pipe(duplex=False)
    process = context.Process(
        target=edge_main, args=(shape.name, str(device), seed, threads, send), daemon=True
    )
    process.start()
    send.close()
    try:
        if not receive.poll(EDGE_START_S):
            raise SystemExit(f"the edge process did not start within {EDGE_START_S} s")
        url = f"http://127.0.0.1:{receive.recv()}"
        deadline = time.monotonic() + EDGE_START_S
        while True:
            try:
                httpx.get(f"{url}/v1/ping", timeout=5).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or not process.is_alive():
                    raise SystemExit("the edge process does not answer") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.join(30)
        if process.is_alive():
            process.kill()
            process.join()


# ---------------------------------------------------------------------------------- the device


@dataclass
class DeviceMarks(Marks):
    """Stamps of an instrumented split step, taken after synchronising the device."""

    device: torch.device

    def __call__(self, name: str) -> None:
        sync(self.device)
        super().__call__(name)


@dataclass
class GpuHttpCutLink:
    """The device's CutLink to the loopback edge: bf16 raw frames over the project's EdgeClient
    (its pooled httpx client, keep-alive, TCP_NODELAY; the answer is decoded as it streams in).

    It keeps each exchange's time per part in ``last`` (ms; the edge's parts prefixed ``edge_``).
    With ``instrument`` set, it also stamps (synchronised) its entry and the end of the
    host→device copy as ``fwd0``/``fwd1`` and ``bwd0``/``bwd1``.
    """

    edge: EdgeClient
    device: torch.device
    session_id: str = "bench"
    instrument: DeviceMarks | None = None
    last: dict[str, dict[str, float]] = field(default_factory=dict)
    staging: HostStaging = field(init=False)

    def __post_init__(self) -> None:
        self.staging = HostStaging(self.device)

    def _exchange(
        self,
        kind: str,
        path: str,
        copies: Callable[[], tuple[torch.Tensor, ...]],
        build: Callable[[tuple[TensorPayload, ...]], Message],
        reader: FrameReader[M],
        tensor_of: Callable[[M], TensorPayload],
    ) -> torch.Tensor:
        """Copy to host, encode, POST, decode while the answer streams in, copy to the device."""
        if self.instrument is not None:
            self.instrument(f"{kind}0")
        marks = [time.perf_counter()]
        hosts = copies()
        marks.append(time.perf_counter())
        body = frames_body(build(tuple(host_payload(h) for h in hosts)))
        marks.append(time.perf_counter())
        headers = self.edge.headers({"content-type": FRAMES})
        with self.edge.client.stream("POST", path, content=body, headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                answer = response.json()
                raise error_from_code(
                    answer.get("error", "http_error"), answer.get("detail", ""), response.status_code
                )
            for chunk in response.iter_raw():
                reader.feed(chunk)
            edge = {f"edge_{k}": v for k, v in json.loads(response.headers.get(TIMING_HEADER, "{}")).items()}
        message = reader.message()
        marks.append(time.perf_counter())
        out = self.staging.to_device(f"{kind}_in", tensor_of(message))
        check_finite(out, f"the edge's {kind} answer")
        if self.instrument is not None:
            self.instrument(f"{kind}1")
        marks.append(time.perf_counter())
        spans = _spans(marks, ("d2h", "encode", "round_trip", "h2d"))
        decode = reader.seconds * 1e3
        spans["http"] = spans.pop("round_trip") - decode - sum(edge.values())
        self.last[kind] = {**spans, "decode": decode, **edge}
        return out

    def forward(self, step: int, activations: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Lower-cut activations out, upper-cut activations back (bf16 both ways)."""

        def copies() -> tuple[torch.Tensor, ...]:
            return (
                self.staging.to_host("fwd_out", activations, torch.bfloat16),
                self.staging.to_host("mask_out", attention_mask, torch.uint8),
            )

        def build(payloads: tuple[TensorPayload, ...]) -> Message:
            return ForwardRequest(
                session_id=self.session_id,
                step=max(step, 0),
                activations=payloads[0],
                attention_mask=payloads[1],
            )

        def tensor_of(message: ForwardResponse) -> TensorPayload:
            return message.activations

        path = f"/v1/sessions/{self.session_id}/forward"
        return self._exchange("fwd", path, copies, build, FrameReader(ForwardResponse), tensor_of)

    def backward(self, step: int, grad: torch.Tensor) -> torch.Tensor:
        """Upper-cut gradient out, lower-cut gradient back (bf16 both ways)."""

        def copies() -> tuple[torch.Tensor, ...]:
            return (self.staging.to_host("bwd_out", grad, torch.bfloat16),)

        def build(payloads: tuple[TensorPayload, ...]) -> Message:
            return BackwardRequest(session_id=self.session_id, step=step, grad=payloads[0])

        def tensor_of(message: BackwardResponse) -> TensorPayload:
            return message.grad

        path = f"/v1/sessions/{self.session_id}/backward"
        return self._exchange("bwd", path, copies, build, FrameReader(BackwardResponse), tensor_of)


# ------------------------------------------------------------------------------------- models


def build_task_model(shape: Shape, device: torch.device, seed: int) -> TaskModel:
    """The LoRA-wrapped causal LM of ``shape`` on ``device`` (fp32 weights)."""
    if shape.name == "smollm2":
        task_model = load_task_model(smollm2_dir(), "causal_lm", lora=LoraParams(), seed=seed)
        task_model.peft_model.to(device)
        return task_model
    config = LlamaConfig(pad_token_id=0, **(LLAMA_1B if shape.name == "llama-1b" else TINY_LLAMA))
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), device:  # transformers' init draws from the global RNG
        torch.manual_seed(seed)
        hf_model = LlamaForCausalLM(config).eval()  # type: ignore[no-untyped-call]
    return wrap_with_lora(hf_model, None, "causal_lm", LoraParams(), seed)


def make_batch(shape: Shape, vocab: int, device: torch.device, seed: int) -> Batch:
    """Random token ids (seeded ``torch.Generator``), full mask, next-token labels = the ids."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(100, vocab // 2), vocab, (shape.batch, shape.seq), generator=gen).to(device)
    return Batch(ids, torch.ones_like(ids), ids.clone())


def measure_model(shape: Shape, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Time monolithic and split-over-HTTP steps of one model, interleaved; the model's record."""
    gc.collect()  # the previous model's tensors
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    task_model = build_task_model(shape, device, args.seed)
    split_model = SplitModel(task_model)
    segments = split_model.segments(SPLIT)
    state = split_model.initial_state()
    train = TrainParams()
    batch = make_batch(shape, int(task_model.hf_model.config.vocab_size), device, args.seed)

    peft = task_model.peft_model
    mono_opt = make_optimizer([p for p in peft.parameters() if p.requires_grad], train)

    def mono_step(_i: int) -> float:
        mono_opt.zero_grad(set_to_none=True)
        with autocast(device):
            logits = peft(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            loss = task_loss("causal_lm", logits, batch.labels)
        loss.backward()  # type: ignore[no-untyped-call]
        mono_opt.step()
        return float(loss.detach())

    stepper = DeviceStepper.create(segments.head, segments.tail, state, train)
    with edge_process(shape, device, args.seed, torch.get_num_threads()) as url:
        edge = EdgeClient(url, timeout_s=300)
        link = GpuHttpCutLink(edge, device)

        def split_step(i: int) -> float:
            with autocast(device):
                return stepper.step(i, batch, link)

        marks = DeviceMarks(device)

        def instrumented(i: int) -> dict[str, float]:
            link.instrument = marks
            try:
                with segment_stamps(marks, segments.head, segments.tail):
                    marks("t0")
                    split_step(i)
                    marks("t1")
            finally:
                link.instrument = None
            return split_phases(marks.t, link.last)

        timed: dict[str, Callable[[int], float]] = {"monolithic": mono_step, "split_http": split_step}
        step_no = {"monolithic": 0, "split_http": 0}
        losses: dict[str, list[float]] = {name: [] for name in timed}
        for name, fn in timed.items():
            for _ in range(args.warmup):
                losses[name].append(fn(step_no[name]))
                step_no[name] += 1
        samples: dict[str, list[float]] = {name: [] for name in timed}
        phase_samples: list[dict[str, float]] = []
        names = [*timed, "phases"]
        for rep in range(args.repeats):
            for name in names[rep % 3 :] + names[: rep % 3]:
                if name == "phases":
                    phase_samples.append(instrumented(step_no["split_http"]))
                    step_no["split_http"] += 1
                    continue
                sync(device)
                start = time.perf_counter()
                for _ in range(args.steps):
                    losses[name].append(timed[name](step_no[name]))
                    step_no[name] += 1
                sync(device)
                samples[name].append((time.perf_counter() - start) * 1e3 / args.steps)
            print(
                f"{shape.name} repeat {rep + 1}/{args.repeats}: "
                + ", ".join(f"{n} {samples[n][-1]:.1f} ms" for n in timed),
                flush=True,
            )
        edge.close()

    results: dict[str, dict[str, Any]] = {}
    for name, values in samples.items():
        q1, q3 = quartiles(values)
        results[name] = {"median_ms": median(values), "q1_ms": q1, "q3_ms": q3, "min_ms": min(values)}
    ratio = results["monolithic"]["median_ms"] / results["split_http"]["median_ms"]
    phases = {k: median([p[k] for p in phase_samples]) for k in phase_samples[0]}
    cut_shape = [shape.batch, shape.seq, task_model.hidden_size]
    record: dict[str, Any] = {
        "model": shape.description,
        "batch_size": shape.batch,
        "seq_len": shape.seq,
        "hidden_size": task_model.hidden_size,
        "num_blocks": split_model.num_blocks,
        "parameters": sum(p.numel() for p in peft.parameters()),
        "cut_tensor_shape": cut_shape,
        "cut_tensor_bytes_bf16": 2 * cut_shape[0] * cut_shape[1] * cut_shape[2],
        "results": results,
        "throughput_ratio_split_over_monolithic": ratio,
        "paired_ratio_median": median(
            [m / s for m, s in zip(samples["monolithic"], samples["split_http"], strict=True)]
        ),
        "target": shape.target,
        "meets_target": None if shape.target is None else ratio >= shape.target,
        "phases_median_ms": phases,
        "transfers_median_ms": {t: phases[t] for t in TRANSFERS},
        "samples_ms_per_step": samples,
        "phase_samples_ms": phase_samples,
        "losses": losses,
    }
    if device.type == "cuda":
        record["peak_memory_gib_device_process"] = torch.cuda.max_memory_allocated(device) / 2**30
    return record


def split_phases(t: dict[str, float], exchanges: dict[str, dict[str, float]]) -> dict[str, float]:
    """One instrumented split step in ms: device compute, body compute and transfer totals.

    ``t`` holds the synchronised stamps t0, head1, fwd0, fwd1, tail1, bwd0, bwd1, t1; the
    transfers sum both sides of both exchanges; ``other`` is what no part covers (small gaps).
    """
    fwd, bwd = exchanges["fwd"], exchanges["bwd"]
    out = {
        "step": t["t1"] - t["t0"],
        "head_fwd": t["head1"] - t["t0"],
        "tail_fwd": t["tail1"] - t["fwd1"],
        "loss_tail_bwd": t["bwd0"] - t["tail1"],
        "head_bwd_opt": t["t1"] - t["bwd1"],
    }
    out = {k: v * 1e3 for k, v in out.items()}
    out["body_fwd"] = fwd["edge_compute"]
    out["body_bwd_opt"] = bwd["edge_compute"]
    for part in TRANSFERS:
        out[part] = sum(x.get(part, 0.0) + x.get(f"edge_{part}", 0.0) for x in (fwd, bwd))
    out["other"] = out["step"] - sum(v for k, v in out.items() if k != "step")
    for kind, x in exchanges.items():
        out.update({f"{kind}.{k}": v for k, v in x.items()})
    return out


# ------------------------------------------------------------------------------------- driver


def device_info(device: torch.device) -> dict[str, Any]:
    """The accelerator a result was measured on (or the CPU smoke label)."""
    if device.type != "cuda":
        return {"type": "cpu", "note": CPU_SMOKE_LABEL}
    props = torch.cuda.get_device_properties(device)
    return {
        "type": "cuda",
        "name": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}",
        "multiprocessors": props.multi_processor_count,
        "cuda": torch.version.cuda,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every model on the device; returns the result record."""
    device = torch.device(args.device)
    threads = set_torch_threads(args.threads)
    if args.quick:
        args.warmup, args.repeats, args.steps = 1, 2, 1
    names = ["tiny-llama"] if device.type == "cpu" else list(dict.fromkeys(args.models))
    models = {name: measure_model(SHAPES[name], device, args) for name in names}
    gpu = device.type == "cuda"
    return {
        "benchmark": NAME,
        "description": "split-over-HTTP step throughput / monolithic step throughput, one GPU",
        "gpu_measurement": gpu,
        "measurement": "GPU" if gpu else CPU_SMOKE_LABEL,
        "device": device_info(device),
        "machine": machine_info(),
        "params": {
            "split": {"head_blocks": 1, "tail_blocks": 1},
            "lora_rank": 8,
            "precision": "bf16 autocast, fp32 weights and adapters" if gpu else "fp32 (CPU smoke)",
            "wire_dtype": "bf16",
            "transport": "HTTP/1.1 on 127.0.0.1 (uvicorn h11 in-process thread, httpx EdgeClient), raw frames",
            "warmup_steps": args.warmup,
            "repeats": args.repeats,
            "steps_per_repeat": args.steps,
            "phase_steps_per_repeat": 1,
            "seed": args.seed,
            "threads": threads,
            "quick": args.quick,
        },
        "reference_h200": {
            "monolithic_ms": {"smollm2": 116, "llama-1b": 74},
            "pinned_gpu_host_gpu_move_ms": {"4.7 MB": 1.3, "16.8 MB": 2.0},
        },
        "models": models,
    }


def print_report(record: dict[str, Any]) -> None:
    """Throughput and breakdown tables on stdout."""
    if not record["gpu_measurement"]:
        print(f"*** {CPU_SMOKE_LABEL} ***")
    rows = []
    for name, m in record["models"].items():
        for variant, r in m["results"].items():
            split = variant == "split_http"
            rows.append(
                [
                    f"{name} {variant}",
                    f"{m['batch_size']} x {m['seq_len']}",
                    f"{r['median_ms']:.2f}",
                    f"{r['q1_ms']:.2f}-{r['q3_ms']:.2f}",
                    f"{m['throughput_ratio_split_over_monolithic']:.3f}" if split else "-",
                    "-" if m["target"] is None or not split else f">= {m['target']:.2f}",
                ]
            )
    title = f"split over HTTP vs monolithic on {record['device'].get('name', 'the CPU (smoke run)')}"
    print_table(
        title, ["model / variant", "batch", "ms/step", "IQR ms", "split/mono throughput", "target"], rows
    )
    models = record["models"]
    keys = [k for k in next(iter(models.values()))["phases_median_ms"] if "." not in k]
    print_table(
        "split step breakdown (median ms, instrumented steps; transfers = both sides, both exchanges)",
        ["part", *models],
        [[k, *(f"{m['phases_median_ms'][k]:.2f}" for m in models.values())] for k in keys],
    )


def main() -> None:
    parser = study_parser(__doc__, NAME, "smoke size: 1 warm-up step, 2 repeats of 1 step per variant")
    parser.add_argument(
        "--device",
        choices=["cuda", "cpu"],
        default="cuda",
        help="cpu: smoke test of the code path only (needs --quick; tiny random Llama; not a GPU measurement)",
    )
    parser.add_argument(
        "--models", nargs="+", choices=["smollm2", "llama-1b"], default=["smollm2", "llama-1b"]
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5, help="steps timed per repeat")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.device == "cpu":
        if not args.quick:
            parser.error("--device cpu is a smoke test of the code path: use it with --quick")
        if args.out == RESULTS_DIR / f"{NAME}.json":
            parser.set_defaults(out=RESULTS_DIR / f"{NAME}_cpu_smoke.json")
    elif not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE, file=sys.stderr)
        sys.exit(NO_CUDA_EXIT)
    run_study(parser, run, print_report)


if __name__ == "__main__":
    main()
