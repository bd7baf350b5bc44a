"""Resource profiles for split planning and assignment (DESIGN §2.2, §2.6).

A device measures the seconds of one block's training step (forward + backward) at the run's
batch shape on its own hardware, and derives from the model the bytes of one cut tensor and the
memory a block needs; the cloud plans with these numbers (:class:`elsa.runtime.control
.ControlPlane`). The simulation runtime measures once on this machine and emulates slower or
faster devices and uneven links from the topology section of the run configuration.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from elsa.model.split import BodySegment, SplitModel
from elsa.runtime.config import RunConfig
from elsa.runtime.control import DeviceProfile, LinkEstimate, ModelProfile

#: activation memory of one block during training, in hidden-state tensors (B x S x d, fp32):
#: attention scores, MLP intermediates and saved inputs of a BERT/LLaMA-style block.
ACTIVATION_TENSORS_PER_BLOCK = 16
WIRE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


def measure_block_step_s(model: SplitModel, config: RunConfig, repeats: int = 3) -> float:
    """Median seconds of one block's forward + backward at (batch_size x max_length)."""
    task_model = model.task_model
    block = BodySegment(task_model, 0, 1)
    state = {k: v.clone().requires_grad_(True) for k, v in model.initial_state().items()}
    shape = (config.train.batch_size, config.train.max_length, task_model.hidden_size)
    gen = torch.Generator().manual_seed(config.seed)
    hidden = torch.randn(shape, generator=gen)
    mask = torch.ones(shape[:2], dtype=torch.long)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        out = block.run(state, hidden.clone().requires_grad_(True), mask)
        out.float().pow(2).mean().backward()  # type: ignore[no-untyped-call]
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def model_profile(model: SplitModel, config: RunConfig) -> ModelProfile:
    """Cut-tensor bytes and per-block / fixed memory of the run's model on a device."""
    task_model = model.task_model
    t = config.train
    hidden_bytes = t.batch_size * t.max_length * task_model.hidden_size * 4
    blocks = task_model.family.blocks(task_model.hf_model)
    block_params = sum(p.numel() for p in blocks[0].parameters())
    total = sum(p.numel() for p in task_model.hf_model.parameters())
    fixed_params = total - block_params * len(blocks)
    return ModelProfile(
        num_blocks=task_model.num_blocks,
        cut_bytes=float(hidden_bytes // 4 * WIRE_BYTES[config.transport.dtype]),
        block_memory_bytes=int(block_params * 4 + ACTIVATION_TENSORS_PER_BLOCK * hidden_bytes),
        base_memory_bytes=int(fixed_params * 4 + 4 * hidden_bytes),
    )


def emulated_profiles(
    config: RunConfig, devices: list[str], edges: list[str], block_step_s: float
) -> dict[str, DeviceProfile]:
    """Simulated devices' profiles from the topology section (module docstring).

    Device i computes ``device_speed[i % len]`` times as fast as this machine and has
    ``device_memory_mb[i % len]``; its link to edge e has the configured RTT and throughput
    scaled by independent seeded log-normal factors of sigma ``link_spread``.
    """
    topo = config.topology
    rng = np.random.default_rng([config.seed, 7919])
    out: dict[str, DeviceProfile] = {}
    for i, device in enumerate(devices):
        speed = topo.device_speed[i % len(topo.device_speed)]
        memory = None
        if topo.device_memory_mb is not None:
            memory = int(topo.device_memory_mb[i % len(topo.device_memory_mb)] * 2**20)
        links = {}
        for edge in edges:
            z_rtt, z_thr = rng.standard_normal(2)
            links[edge] = LinkEstimate(
                rtt_s=topo.link_rtt_ms / 1000.0 * math.exp(topo.link_spread * z_rtt),
                throughput_bytes_per_s=topo.link_mbps * 1e6 / 8.0 * math.exp(-topo.link_spread * z_thr),
            )
        out[device] = DeviceProfile(block_step_s=block_step_s / speed, memory_bytes=memory, links=links)
    return out
