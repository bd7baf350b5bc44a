"""Benchmark: a 16.8 MB fp32 ForwardRequest as one msgpack document vs as a frame stream.

Measures encode + decode wall time (median of repeats) of ``elsa.wire.encode``/``decode`` (the
tensor packed into msgpack as one bin) against ``encode_frames``/``FrameDecoder`` (small msgpack
header + raw buffer frame), fed as the pieces ``encode_frames`` returns and as 64 KiB chunks
(what chunked HTTP delivers). Prints a table and writes ``bench/results/wire_frames.json``.

Usage: ``python bench/wire_frames.py [--repeats N]``
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from elsa.wire import (
    ForwardRequest,
    FrameDecoder,
    Message,
    decode,
    encode,
    encode_frames,
    frames_nbytes,
    to_payload,
)

RESULTS = Path(__file__).parent / "results" / "wire_frames.json"
CHUNK_BYTES = 64 * 1024
SHAPE = (16, 1024, 256)  # 4.19 M floats = 16.8 MB


def _median_s(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _decode_pieces(pieces: list[bytes | memoryview]) -> list[Message]:
    decoder = FrameDecoder()
    out: list[Message] = []
    for piece in pieces:
        out.extend(decoder.feed(piece))
    return out


def _decode_chunks(chunks: list[bytes]) -> list[Message]:
    decoder = FrameDecoder()
    out: list[Message] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


def run(repeats: int) -> tuple[dict[str, object], dict[str, dict[str, float]]]:
    """Time both paths on one message; returns (metadata, per-path timings)."""
    generator = torch.Generator().manual_seed(0)
    activations = torch.randn(SHAPE, generator=generator)
    msg = ForwardRequest(
        session_id="bench",
        step=0,
        activations=to_payload(activations, "fp32"),
        attention_mask=to_payload(torch.ones(16, 1024, dtype=torch.int64)),
    )
    encoded = encode(msg)
    pieces = encode_frames(msg)
    stream = b"".join(bytes(p) for p in pieces)
    chunks = [stream[start : start + CHUNK_BYTES] for start in range(0, len(stream), CHUNK_BYTES)]
    if decode(encoded) != msg or _decode_pieces(pieces) != [msg] or _decode_chunks(chunks) != [msg]:
        raise RuntimeError("round trip failed")

    rows = {
        "msgpack_bin": (
            _median_s(lambda: encode(msg), repeats),
            _median_s(lambda: decode(encoded), repeats),
        ),
        "frames_pieces": (
            _median_s(lambda: encode_frames(msg), repeats),
            _median_s(lambda: _decode_pieces(pieces), repeats),
        ),
        "frames_64k_chunks": (
            _median_s(lambda: encode_frames(msg), repeats),
            _median_s(lambda: _decode_chunks(chunks), repeats),
        ),
    }
    base = sum(rows["msgpack_bin"])
    meta: dict[str, object] = {
        "tensor_bytes": len(msg.activations.data),
        "msgpack_bytes": len(encoded),
        "frames_bytes": frames_nbytes(pieces),
        "repeats": repeats,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    results = {
        name: {
            "encode_ms": enc * 1e3,
            "decode_ms": dec * 1e3,
            "total_ms": (enc + dec) * 1e3,
            "speedup_vs_msgpack_bin": base / (enc + dec),
        }
        for name, (enc, dec) in rows.items()
    }
    return meta, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    meta, results = run(parser.parse_args().repeats)
    print(f"ForwardRequest with {math.prod(SHAPE) * 4 / 1e6:.1f} MB fp32 activations {SHAPE}")
    print(f"{'path':<20}{'encode ms':>11}{'decode ms':>11}{'total ms':>10}{'speedup':>9}")
    for name, row in results.items():
        print(
            f"{name:<20}{row['encode_ms']:>11.2f}{row['decode_ms']:>11.2f}"
            f"{row['total_ms']:>10.2f}{row['speedup_vs_msgpack_bin']:>8.1f}x"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
